import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import pytest
import torch

from embodied.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from embodied.config import check_resume, config_from_dict, config_to_dict, parse_config
from embodied.device import resolve_device
from embodied.errors import EmbodiedError
from embodied.runs import Run, Stages, read_metrics


@dataclass
class Cfg:
    lr: float = 3e-4
    steps: int = 10
    name: str = "x"
    use_thing: bool = True
    levels: tuple[float, ...] = (0.0, 0.5)
    limit: int | None = None
    out: Path = Path("o")


@dataclass
class PresetCfg:
    steps: int = 10
    lr: float = 3e-4
    PRESETS: ClassVar[dict] = {"small": {"steps": 2, "lr": 1e-2}}


def test_a_preset_sets_defaults_that_flags_override(capsys):
    assert parse_config(PresetCfg, ["--preset", "small"]) == PresetCfg(steps=2, lr=1e-2)
    assert parse_config(PresetCfg, ["--steps", "5", "--preset", "small"]) == PresetCfg(steps=5, lr=1e-2)
    assert parse_config(PresetCfg, []) == PresetCfg()
    with pytest.raises(EmbodiedError, match="choose one of small"):
        parse_config(PresetCfg, ["--preset", "huge"])
    with pytest.raises(SystemExit):
        parse_config(PresetCfg, ["--help"])
    assert "small: --steps 2 --lr 0.01" in capsys.readouterr().out


def test_repo_cpu_scale_is_a_preset():
    from agents.repo.train import RePoConfig

    cfg = parse_config(RePoConfig, ["--preset", "cpu-small", "--total-steps", "600"])
    assert (cfg.batch_size, cfg.seq_len, cfg.wm.beta_lr, cfg.total_steps) == (16, 32, 1e-2, 600)
    assert "preset" not in config_to_dict(cfg)  # config.json holds the values it set


def test_config_parses_types_and_roundtrips():
    cfg = parse_config(Cfg, ["--lr", "0.1", "--no-use-thing", "--levels", "1,2.5", "--limit", "7", "--out", "a/b"])
    assert cfg == Cfg(lr=0.1, use_thing=False, levels=(1.0, 2.5), limit=7, out=Path("a/b"))
    assert parse_config(Cfg, ["--limit", "none"]).limit is None
    assert config_from_dict(Cfg, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


@dataclass
class Inner:
    """A component's own settings."""

    lr: float = 1e-3  # learning rate
    shape: tuple[int, ...] = (2, 3)  # layer sizes
    copied: str = field(default="a", metadata={"option": False})  # set by the owner

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"inner.lr must be positive, got {self.lr}")


@dataclass
class Outer:
    steps: int = 10  # steps
    mode: str = "a"  # copied into the section
    inner: Inner = field(default_factory=lambda: Inner(lr=5e-3))  # the owner's default for the section
    RENAMED: ClassVar[dict] = {"lr": "inner.lr"}

    def __post_init__(self):
        self.inner = dataclasses.replace(self.inner, copied=self.mode)


def test_a_section_is_dotted_options_nested_in_config_json_and_checked_on_resume(tmp_path, capsys):
    cfg = parse_config(Outer, ["--inner.lr", "0.1", "--inner.shape", "4", "--mode", "b"])
    assert cfg == Outer(mode="b", inner=Inner(lr=0.1, shape=(4,), copied="b"))
    assert parse_config(Outer, []).inner.lr == 5e-3  # the owner's default for its section
    saved = json.loads(json.dumps(config_to_dict(cfg)))
    assert saved["inner"] == {"lr": 0.1, "shape": [4], "copied": "b"}
    assert config_from_dict(Outer, saved) == cfg
    old = {"steps": 10, "mode": "b", "lr": 0.1}  # written before lr moved into the section
    assert config_from_dict(Outer, old).inner.lr == 0.1
    check_resume(cfg, old)
    with pytest.raises(EmbodiedError, match=r"--inner.lr 0\.005 \(the run has 0\.1\)"):
        check_resume(parse_config(Outer, []), old)
    with pytest.raises(EmbodiedError, match="--lr is now --inner.lr"):
        parse_config(Outer, ["--lr", "0.1"])
    with pytest.raises(EmbodiedError, match="inner.lr must be positive"):
        parse_config(Outer, ["--inner.lr", "0"])
    with pytest.raises(EmbodiedError, match="--inner.copied"):
        parse_config(Outer, ["--inner.copied", "x"])  # set by the owner, not an option
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "inner.* options" in out and "A component's own settings" in out
    assert "--inner.lr LR learning rate (default: 0.005)" in out and "(default: 2,3)" in out


def test_unknown_option_is_a_clear_error():
    with pytest.raises(EmbodiedError, match="--bogus"):
        parse_config(Cfg, ["--bogus", "1"])


def test_checkpoint_is_atomic_and_corruption_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(3)})
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    with pytest.raises(TypeError, match="_Unpicklable"):
        save_checkpoint(tmp_path / "c.pt", {"bad": _Unpicklable()})
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3)), "a failed save leaves the old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(EmbodiedError, match="unreadable"):
        load_checkpoint(tmp_path / "broken.pt")


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_rng_state_restores_the_same_draws():
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_run_dir_logs_metrics_and_refuses_to_clobber(tmp_path):
    run = Run(tmp_path, "r1", config=Cfg())
    run.logger.log(1, {"loss": 2.0})
    run.logger.log(2, {"loss": 1.0, "acc": 0.5})
    run.save({"step": 2})
    run.close()
    assert json.loads((run.dir / "config.json").read_text())["lr"] == 3e-4
    assert [r["loss"] for r in read_metrics(run.dir / "metrics.jsonl")] == [2.0, 1.0]
    assert any((run.dir / "tb").iterdir())
    with pytest.raises(EmbodiedError, match="--resume"):
        Run(tmp_path, "r1", config=Cfg())
    resumed = Run(tmp_path, "r1", config=Cfg(), resume=True)
    assert resumed.load() == {"step": 2}
    resumed.close()


def test_a_run_records_the_versions_it_started_with_and_says_when_a_resume_runs_on_others(tmp_path, capsys):
    import mujoco
    import numpy

    run = Run(tmp_path, "r1", config=Cfg())
    run.close()
    system = json.loads((run.dir / "system.json").read_text())
    assert system["versions"]["torch"] == torch.__version__ and system["versions"]["mujoco"] == mujoco.__version__
    assert system["versions"]["numpy"] == numpy.__version__ and system["machine"]["cpus"] >= 1
    system["versions"]["torch"] = "1.0.0"  # the run started on another torch
    (run.dir / "system.json").write_text(json.dumps(system))
    capsys.readouterr()
    Run(tmp_path, "r1", config=Cfg(), resume=True).close()
    assert f"resumes with other versions: torch 1.0.0 -> {torch.__version__}" in capsys.readouterr().err
    assert json.loads((run.dir / "system.json").read_text())["versions"]["torch"] == "1.0.0"  # what it started with
    Run(tmp_path, "r2", config=Cfg()).close()
    Run(tmp_path, "r2", config=Cfg(), resume=True).close()
    assert capsys.readouterr().err == ""


def strict_json(text: str):
    """JSON as the standard has it (jq, JavaScript, Go): no NaN or Infinity."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_what_a_run_writes_is_json_with_null_for_a_metric_with_nothing_to_measure(tmp_path, capsys):
    """PEARL's label accuracy is NaN where no label was transferred: summary.json and the run's last line said
    NaN, which only Python's parser reads."""
    run = Run(tmp_path, "r", config=Cfg())
    run.logger.log(1, {"acc": float("nan"), "loss": 1.0})
    run.finish({"acc": float("nan"), "loss": float("inf"), "curve": [[1, float("nan")], [2, 0.5]], "name": "x"})
    summary = strict_json((run.dir / "summary.json").read_text())
    assert summary == {"acc": None, "loss": None, "curve": [[1, None], [2, 0.5]], "name": "x"}
    assert strict_json(capsys.readouterr().out.strip().splitlines()[-1])["acc"] is None
    assert strict_json((run.dir / "metrics.jsonl").read_text())["acc"] is None


def test_a_run_that_cannot_start_on_a_full_disk_leaves_no_directory(tmp_path, monkeypatch):
    """On a full disk (a 3 MB tmpfs) the lock's pid write failed with a traceback naming no file, and the new run
    directory stayed behind holding only .lock: now the OSError names the file and what the run made is gone;
    a directory that existed before is left as it was."""
    import errno

    import embodied.runs

    def save_on_a_full_disk(config, path):  # the first content a new run writes, after its lock
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(embodied.runs, "save_config", save_on_a_full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        Run(tmp_path / "runs", "r", config=Cfg())
    assert list(tmp_path.iterdir()) == []  # neither the run nor --run-dir, which it made
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="No space left on device"):
        Run(tmp_path / "kept", "r", config=Cfg())
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"]


def test_a_tensorboard_writer_on_a_full_disk_is_one_line_naming_its_directory(tmp_path, monkeypatch, capsys):
    """On a full disk TensorBoard's writer failed in its own thread and in the run's: one error line naming no
    file, then the thread's traceback. Now one line names the tb directory, and the new run directory is gone."""
    import errno
    import threading

    import torch.utils.tensorboard

    from embodied.cli import main as cli_main

    class FullDiskWriter:  # as tensorboard's: its writer thread fails, then the constructor's flush
        def __init__(self, logdir):
            def flush():
                raise OSError(errno.ENOSPC, "No space left on device")

            thread = threading.Thread(target=flush)
            thread.start()
            thread.join()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", FullDiskWriter)
    argv = ["train", "parl", "--task", "reach-v3", "--method", "sac", "--run-dir", str(tmp_path / "runs")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    tb = tmp_path / "runs" / "parl-reach-v3-sac-s0" / "tb"
    assert err == [f"error: could not write {tb}: No space left on device"], err
    assert not (tmp_path / "runs").exists()
    from embodied.cli import quiet_write_failures_in_threads

    printed = []  # what the default hook was given: any other exception in a thread is still printed
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_type))
    quiet_write_failures_in_threads()

    def fail(error):
        raise error

    for error in (OSError(errno.ENOSPC, "No space left on device"), ZeroDivisionError(), OSError(errno.ENOENT, "")):
        thread = threading.Thread(target=fail, args=(error,))
        thread.start()
        thread.join()
    assert printed == [ZeroDivisionError, FileNotFoundError]


def test_a_close_that_fails_on_a_full_disk_still_releases_the_run(tmp_path, monkeypatch):
    """The CLI closes the runs an error left open; a close failing again (a full disk) kept the lock and raised
    over the error being reported."""
    import errno

    from embodied.runs import close_open_runs

    run = Run(tmp_path, "r", config=Cfg())

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run.logger, "close", full_disk)
    close_open_runs()  # raises nothing
    Run(tmp_path, "r", config=Cfg(), resume=True).close()  # the directory is free again


def test_resume_removes_the_temp_files_a_killed_write_left(tmp_path):
    """A run killed while it saved a checkpoint left its temp file (a RePo checkpoint's holds gigabytes of replay)
    beside the last complete one, and every later kill added another."""
    run = Run(tmp_path, "r", config=Cfg())
    run.save({"step": 1})
    run.close()
    stale = [run.dir / "checkpoints" / ".last.pt.k3x9q_2a.tmp.pt", run.dir / ".config.json.0a1b2c3d.tmp.json"]
    kept = [run.dir / "notes.tmp", run.dir / "videos" / "eval.mp4"]
    for path in stale + kept:
        path.write_bytes(b"x")
    resumed = Run(tmp_path, "r", config=Cfg(), resume=True)
    assert resumed.load() == {"step": 1}
    resumed.close()
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def test_finish_writes_the_summary_releases_the_run_and_prints_one_line(tmp_path, capsys):
    run = Run(tmp_path, "r", config=Cfg())
    run.finish({"final": 0.5, "curve": [[1, 0.2], [2, 0.5]], "success": {"stow": 1.0}})
    assert json.loads((run.dir / "summary.json").read_text())["curve"] == [[1, 0.2], [2, 0.5]]
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == {"run": str(run.dir), "final": 0.5, "success": {"stow": 1.0}}
    Run(tmp_path, "r", config=Cfg(), resume=True).close()  # the lock was released: the run opens again


def test_device_auto_and_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(EmbodiedError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(EmbodiedError, match="unknown device"):
        resolve_device("tpu9")
    for name in ("mps", "meta", "xpu"):  # devices torch names that nothing here runs or sizes for
        with pytest.raises(EmbodiedError, match=f"unsupported device '{name}'"):
            resolve_device(name)


def test_keep_freed_memory_applies_on_glibc_and_is_idempotent():
    import platform

    from embodied.allocator import keep_freed_memory

    applied = keep_freed_memory()
    if platform.libc_ver()[0] == "glibc":
        assert applied and keep_freed_memory()
    else:
        assert applied is False


def test_resume_refuses_settings_that_shape_the_result_and_names_them(tmp_path):
    """A resumed run keeps its own settings: a changed option that shapes the result is an error naming it
    (and the run's value); where it runs, how long and how often it reports may change."""
    from agents.pearl.train import PearlConfig
    from agents.repo.train import RePoConfig
    from agents.repo.world_model import WorldModelConfig

    Run(tmp_path, "r", config=RePoConfig(total_steps=100, wm=WorldModelConfig(beta_lr=1e-2))).close()
    with pytest.raises(EmbodiedError, match=r"--wm.beta-lr 0\.0001 \(the run has 0\.01\)"):
        Run(tmp_path, "r", config=RePoConfig(total_steps=100), resume=True)
    with pytest.raises(EmbodiedError, match="--seed 1"):
        Run(tmp_path, "r", config=RePoConfig(total_steps=100, wm=WorldModelConfig(beta_lr=1e-2), seed=1), resume=True)
    Run(
        tmp_path,
        "r",
        config=RePoConfig(
            total_steps=500, wm=WorldModelConfig(beta_lr=1e-2), device="cpu", threads=1, eval_every=50, video=False
        ),
        resume=True,
    ).close()  # more steps, elsewhere: fine
    assert json.loads((tmp_path / "r" / "config.json").read_text())["total_steps"] == 500
    # a run from before --iql-episode-credit existed learned with the per-step reward (ORIGINAL_IQL):
    Run(tmp_path, "p", config=PearlConfig()).close()
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    del saved["iql_episode_credit"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EmbodiedError, match=r"--iql-episode-credit 1\.0 \(the run has 0\.0\)"):
        Run(tmp_path, "p", config=PearlConfig(), resume=True)
    Run(tmp_path, "p", config=PearlConfig(iql_episode_credit=0.0, iql_steps=99), resume=True).close()
    (tmp_path / "p" / "config.json").write_text("{not json")
    with pytest.raises(EmbodiedError, match=r"cannot read .*config.json to resume: it is not valid JSON"):
        Run(tmp_path, "p", config=PearlConfig(iql_episode_credit=0.0), resume=True)


def test_stages_reuse_a_finished_output_redo_an_unfinished_one_and_log_once(tmp_path):
    made = []

    def pipeline(finish_second: bool):
        run = Run(tmp_path, "r", config=Cfg(), resume=(tmp_path / "r").exists())
        stages = Stages(run, run.load() or {})
        outputs = []
        for name in ("a", "b"):
            make = lambda name=name: (made.append(name), [len(made)])[1]  # noqa: E731
            value = stages.output(name, run.path(f"{name}.json"), make, write_json, read_json)
            outputs.append(value)
            if name == "a" or finish_second:
                stages.finish(name, {f"{name}/metric": 1.0})
        run.close()
        return outputs

    assert pipeline(finish_second=False) == [[1], [2]]
    assert pipeline(finish_second=True) == [[1], [3]]  # a reused from its file; b was cut off: redone
    assert pipeline(finish_second=True) == [[1], [3]] and made == ["a", "b", "b"]
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert [k for r in rows for k in r if k.endswith("/metric")] == ["a/metric", "b/metric"]  # each logged once
    (tmp_path / "r" / "a.json").write_text("{not json")
    with pytest.raises(EmbodiedError, match="a.json"):
        pipeline(finish_second=True)


def test_a_run_resumed_at_a_stage_boundary_draws_after_it_as_the_uninterrupted_run(tmp_path):
    """What a resumed pipeline redoes before the boundary (a model built, a check) draws random numbers; the draws
    after the boundary, and after a stage's own checkpoint, must be the uninterrupted run's."""

    def pipeline(name: str, stop: str | None = None) -> list[float]:
        run = Run(tmp_path, name, config=Cfg(), resume=(tmp_path / name).exists())
        resumed = run.load() or {}
        stages = Stages(run, resumed)
        if not resumed:
            torch.manual_seed(0)
        stages.output("a", run.path("a.json"), lambda: torch.rand(2).tolist(), write_json, read_json)
        torch.rand(3)  # redone on resume, as PEARL's held-out check is
        stages.finish("a")
        if stop == "a":
            return run.close() or []
        torch.rand(5)  # a network built before its state is loaded
        draws, step = [], int(resumed.get("step", 0))
        if step:
            run.restore_rngs()
        while step < 4:
            draws.append(torch.rand(()).item())
            step += 1
            if step == 2:
                run.save({"stages": stages.finished, "step": step})
                if stop == "b":
                    return run.close() or []
        run.close()
        return draws

    full = pipeline("full")
    for stop, continues_at in (("a", 0), ("b", 2)):
        pipeline(stop, stop)
        assert pipeline(stop) == full[continues_at:]


def write_json(path, value):
    path.write_text(json.dumps(value))


def read_json(path):
    return json.loads(path.read_text())
