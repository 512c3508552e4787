import re
import subprocess
import sys

import imageio.v3 as iio

from embodied.cli import main
from embodied.data import load_episodes


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "embodied", *args], capture_output=True, text=True, timeout=300)


def test_envs_lists_ids_with_spaces(capsys):
    assert main(["envs", "door-open"]) == 0
    out = capsys.readouterr().out
    assert "embodied/door-open-v3 " in out and "uint8[64, 64, 3]" in out and "float32[39]" in out
    assert main(["envs", "point-hold-v0"]) == 0  # it has a scripted expert and one named view
    line = capsys.readouterr().out.splitlines()[1]
    assert "scripted (expert), random" in line and line.endswith(" top")


def test_collect_then_video_then_eval(tmp_path, capsys):
    data = tmp_path / "d.hdf5"
    assert (
        main(
            [
                "collect",
                "--env",
                "embodied/reach-v3",
                "--episodes",
                "3",
                "--noise",
                "0,0.5",
                "--max-steps",
                "40",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    assert len(load_episodes(data)) == 3
    video = tmp_path / "v.mp4"
    assert (
        main(
            [
                "video",
                "--env",
                "embodied/reach-v3",
                "--episodes",
                "2",
                "--max-steps",
                "10",
                "--size",
                "64",
                "--out",
                str(video),
            ]
        )
        == 0
    )
    assert iio.imread(video).shape == (11, 64, 128, 3)
    one_after_another = ["video", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "10", "--no-grid"]
    assert main([*one_after_another, "--size", "64", "--out", str(video)]) == 0  # streamed, episode by episode
    assert iio.imread(video).shape == (22, 64, 64, 3)
    assert main(["eval", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "150"]) == 0
    assert '"success_rate": 1.0' in capsys.readouterr().out


def test_bad_input_gives_one_error_line_and_no_file(tmp_path):
    cases = [
        ("collect", "--env", "embodied/reach-v9", "--out", str(tmp_path / "a.hdf5")),
        ("video", "--size", "0", "--out", str(tmp_path / "b.mp4")),
        ("video", "--camera", "nowhere", "--max-steps", "2", "--out", str(tmp_path / "c.mp4")),
        ("video", "--episodes", "100", "--out", str(tmp_path / "g.mp4")),  # a 9.6 GiB grid: was held in memory
        ("collect", "--env", "embodied/reach-pixels-v3", "--episodes", "10000000", "--out", str(tmp_path / "p")),
        ("eval", "--policy", str(tmp_path / "missing.pt")),
        ("collect", "--episodes", "1", "--out", "/proc/forbidden/x.hdf5"),
        ("train", "nonexistent-agent"),
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert list(tmp_path.iterdir()) == []


# --- what a new user meets ----------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from agents.repo.adapt import AdaptConfig  # noqa: E402
from embodied.cli import AGENTS, CollectConfig, EvalConfig, VideoConfig  # noqa: E402
from embodied.config import build_parser, flag, option_types  # noqa: E402
from embodied.sweep import config_class  # noqa: E402


@pytest.mark.parametrize(
    "cls",
    [CollectConfig, VideoConfig, EvalConfig, AdaptConfig] + [config_class(a) for a in AGENTS],
    ids=lambda c: c.__name__,
)
def test_every_option_explains_itself_and_shows_its_default(cls):
    parser = build_parser(cls)
    formatter = parser._get_formatter()
    for name in option_types(cls):  # a section's options (--wm.target-kl) too
        action = next(a for a in parser._actions if a.dest == name)
        assert action.help and action.help.strip(), f"--{name} has no description"
        shown = formatter._get_help_string(action)  # what --help prints for this option
        assert "(default: %(default)s)" in shown or "default:" in action.help or "None:" in action.help, name


@pytest.mark.parametrize(
    "argv",
    [[command, "--help"] for command in ("envs", "collect", "video", "eval", "sweep", "report", "study", "adapt")]
    + [["train", agent, "--help"] for agent in AGENTS],
    ids=" ".join,
)
def test_every_help_page_prints_every_option(capsys, argv):
    """argparse %-formats help strings: a stray '%' in an option's description made
    `embodied train pearl --help` crash."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own --help exits (0) after printing
        code = stop.code
    out = capsys.readouterr().out
    assert code == 0, out
    if argv[0] == "train":
        assert all(flag(name) in out for name in option_types(config_class(argv[1])))
    assert "Traceback" not in out and "usage:" in out
    options = [" ".join(o.split()) for o in re.split(r"\n  (?=-)", out)[1:]]  # one entry per option
    twice = [o.split()[0] for o in options if len(re.findall(r"\(default[: ]", o)) > 1]
    assert not twice, f"options whose help gives a default twice: {twice}"


def test_train_help_lists_the_agents(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in AGENTS)
    out = main(["--help"]) == 0 and capsys.readouterr().out
    assert "sweep" in out and "adapt" in out
    from embodied import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out == f"embodied {__version__}\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--episodes", "-3"], "--episodes must be positive"),
        (["eval", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["collect", "--seed", "-1", "--episodes", "1"], "--seed must be in [0, 4294967295], got -1"),
        (["train", "parl", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["train", "pearl", "--seed", str(2**32)], "got 4294967296"),  # NumPy's global seeding raised a traceback
        (["train", "parl", "--device", "mps"], "unsupported device 'mps'"),  # torch's own error, with a traceback
        (["collect", "--max-steps", "0", "--episodes", "1"], "--max-steps must be positive"),
        (["video", "--max-steps", "-1"], "--max-steps must be positive"),
        (["video", "--size", "100000"], "at most 4096"),  # used to fail inside the EGL driver with a traceback
        (["video", "--out", "rollout.txt"], "ending in .mp4"),  # ffmpeg refused the suffix with a traceback
        (["eval", "--episodes", "x"], "argument --episodes: invalid int value"),  # argparse printed its usage first
        (["report"], "the following arguments are required: dir"),
        (["envs", "reach", "wall"], "embodied envs takes one PATTERN"),  # listed 'reach' and ignored 'wall'
        (["envs", "--pixels"], "embodied envs takes one PATTERN"),  # an unknown option read as a pattern
        (["sweep", "--agent", "parl"], "the following arguments are required: --out"),
        (["study", "x.toml", "--cpus-per-trial", "one"], "argument --cpus-per-trial: invalid int value"),
    ],
)
def test_bad_numbers_and_paths_give_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "repo", "--wm.target-kl", "-1"],
            "wm.target_kl must be positive",
        ),  # the dual variable would grow forever
        (["train", "parl", "--sac.batch-size", "0"], "sac.batch_size must be positive"),
        (["train", "parl", "--teacher-flip-prob", "1.5"], "teacher_flip_prob must be in"),
        (["train", "parl", "--ensemble-size", "1"], "disagreement needs --ensemble-size of at least 2"),  # NaN scores
        (["train", "walle", "--llm", "gpt"], "llm must be 'embedded' or the http"),
        (["train", "walle", "--llm", "http://127.0.0.1:99999"], "is not a URL: Port out of range"),
        (
            ["train", "pearl", "--gw.method", "sinkhorn"],
            "gw.method must be one of",
        ),  # a traceback after collecting data
        (["train", "pearl", "--gw.epsilon", "0"], "gw.epsilon must be positive"),  # the entropic plan diverged
        (["train", "pearl", "--teacher-gamma", "-1"], "teacher_gamma must be in (0, 1]"),
        (["train", "pearl", "--noise", "-1"], "gaussian noise std must be >= 0"),  # a traceback when collecting
        (["train", "pearl", "--epsilon", ""], "noise levels must not be empty"),
        (["train", "parl", "--run-name", "/abs"], "one directory name under --run-dir"),
        (["train", "repo", "--run-name", "../elsewhere"], "one directory name under --run-dir"),
        (["train", "parl", "--sac.critic-lr", "nan"], "--sac.critic-lr: expected a finite number"),  # a traceback
        (["train", "parl", "--implicit-ratio", "inf"], "--implicit-ratio: expected a finite number"),  # passed >= 0
        (["train", "parl", "--sac.tau", "2"], "sac.tau must be in (0, 1]"),
        (["train", "parl", "--hypergrad-damping", "-1"], "hypergrad_damping must be in [0, inf)"),
        (["train", "pearl", "--iql.tau", "0"], "iql.tau must be in (0, 1]"),
        (["train", "pearl", "--iql.gamma", "1"], "iql.gamma must be in [0, 1)"),
        (["train", "repo", "--behavior.gamma", "-1"], "behavior.gamma must be in [0, 1)"),
        (["train", "repo", "--behavior.lam", "2"], "behavior.lam must be in [0, 1]"),
        (["train", "repo", "--wm.kl-balance", "1.5"], "wm.kl_balance must be in [0, 1]"),
        (["train", "repo", "--wm.grad-clip", "0"], "wm.grad_clip must be in (0, inf)"),
        (["train", "repo", "--prefill", "-1"], "prefill must be in [0, inf)"),
        (["train", "walle", "--replan-limit", "-1"], "replan_limit must be in [0, inf)"),
        (["train", "walle", "--threads", "-1"], "--threads must be >= 0"),
        (["train", "parl", "--threads", "1000000000"], "more than this machine's"),  # torch started them all
        (["train", "parl", "--seed", "abc"], "argument --seed: invalid int value: 'abc'"),  # argparse's usage first
        (["train", "repo", "--preset"], "--preset: expected one argument"),
        (["train", "pearl", "--source-task", "drawer-block-stow-v0"], "has none"),  # a traceback after the run dir
        (["train", "repo", "--task", "point-hold-v0"], "RePo learns from pixels, and there is no"),  # an unknown id
        (["train", "pearl", "--source-task", "point-hold-clean-v0"], "use --gw.alpha 1"),  # a traceback after data
    ],
)
def test_settings_that_cannot_work_are_refused_before_anything_runs(tmp_path, capsys, args, message):
    """Each of these used to start training (or, for --llm, crash with a traceback after creating the run)."""
    assert main([*args, "--run-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


def test_an_llm_server_that_is_down_is_an_error_line_not_a_traceback(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert (
        main(
            [
                "train",
                "walle",
                "--llm",
                f"http://127.0.0.1:{port}",
                "--tasks",
                "retrieve",
                "--iterations",
                "0",
                "--episodes-per-task",
                "1",
                "--max-decisions",
                "2",
                "--no-video",
                "--run-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: LLM server http://127.0.0.1:{port}/v1 unreachable" in err


def test_a_missing_dataset_leaves_no_run_directory(tmp_path, capsys):
    assert (
        main(["train", "pearl", "--source-data", str(tmp_path / "nope.hdf5"), "--run-dir", str(tmp_path / "runs")]) == 2
    )
    assert "no such dataset" in capsys.readouterr().err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task", ["stow", "tidy"])
def test_drawer_block_envs_work_with_video_and_eval(tmp_path, capsys, task):
    env = f"embodied/drawer-block-{task}-v0"
    assert main(["eval", "--env", env, "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert '"success_rate": 1.0' in out  # the scripted skill plan solves it
    assert '"success_final": 1.0' in out  # and holds it: it ran the whole plan again from the solved state
    assert (
        main(
            [
                "video",
                "--env",
                env,
                "--episodes",
                "1",
                "--max-steps",
                "20",
                "--size",
                "100",
                "--out",
                str(tmp_path / "v.mp4"),
            ]
        )
        == 0
    )
    assert iio.imread(tmp_path / "v.mp4").shape[1:] == (112, 112, 3)  # rounded up to a multiple of 16


@pytest.mark.parametrize("out", ["d.hdf5", "minari"])
def test_collect_does_not_replace_a_dataset_unless_asked(tmp_path, capsys, out):
    args = ["collect", "--episodes", "1", "--max-steps", "5", "--out", str(tmp_path / out)]
    assert main(args) == 0
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert main([*args, "--seed", "7"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    assert main([*args, "--seed", "7", "--overwrite"]) == 0


def test_collect_writes_a_dataset_that_minari_opens(tmp_path):
    import minari

    out = tmp_path / "reach"
    assert (
        main(["collect", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "20", "--out", str(out)]) == 0
    )
    ds = minari.MinariDataset(out / "data")
    assert ds.total_episodes == 2 and ds.total_steps == 40
    episode = next(iter(ds.iterate_episodes()))
    ours = load_episodes(out, env_id="embodied/reach-v3")
    np.testing.assert_array_equal(ours[0].actions, episode.actions)
    np.testing.assert_array_equal(ours[0].observations, episode.observations)
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        assert minari.load_dataset("reach").total_episodes == 2
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    assert (out.stat().st_mode & 0o077) != 0, "shared with the usual mode, not 0700"


def test_minari_datasets_get_the_same_safety_checks(tmp_path):
    import h5py

    from embodied.data import Dataset
    from embodied.errors import EmbodiedError

    out = tmp_path / "reach"
    assert (
        main(["collect", "--env", "embodied/reach-v3", "--episodes", "1", "--max-steps", "10", "--out", str(out)]) == 0
    )
    meta = json.loads((out / "data" / "metadata.json").read_text())
    meta["total_episodes"] = 10**15
    (out / "data" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(EmbodiedError, match="declares"):
        Dataset(out)
    meta["total_episodes"] = 1
    (out / "data" / "metadata.json").write_text(json.dumps(meta))
    with h5py.File(out / "data" / "main_data.hdf5", "r+") as f:
        del f["episode_0/rewards"]
        f["episode_0/rewards"] = h5py.ExternalLink("/etc/passwd", "/x")
    with Dataset(out) as ds, pytest.raises(EmbodiedError, match="link"):
        ds[0]
    for bad in (
        "[1]",
        json.dumps({**meta, "env_spec": [1]}),
        json.dumps(meta).replace('"total_steps": 10', '"total_steps": 1e400'),
    ):
        (out / "data" / "metadata.json").write_text(bad)  # not objects, infinity: once AttributeError, OverflowError
        with pytest.raises(EmbodiedError, match="not a readable Minari dataset"):
            Dataset(out)


def test_captions_fit_and_odd_sizes_are_padded(tmp_path):
    from embodied.video import caption, write_mp4

    frame = caption(np.zeros((128, 128, 3), np.uint8), "t=500 r=10.00 R=1005 success")
    band = frame[:12]
    assert band.max() > 0 and band[:, -2:].max() < 128, "text stops before the right edge"
    write_mp4(tmp_path / "w.mp4", [np.zeros((120, 160, 3), np.uint8)] * 3, fps=10)
    assert iio.imread(tmp_path / "w.mp4").shape == (3, 128, 160, 3)


def test_a_task_typo_is_one_error_before_any_run_directory_and_the_printed_id_is_accepted(tmp_path, capsys):
    assert main(["train", "parl", "--task", "reach-v4", "--run-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--task 'reach-v4': no such task; did you mean reach-v3" in err and not (tmp_path / "runs").exists()
    assert main(["train", "pearl", "--source-task", "windw-open-v3", "--run-dir", str(tmp_path / "runs")]) == 2
    assert "did you mean window-open-v3" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    from agents.parl.train import ParlConfig
    from embodied.config import parse_config

    assert parse_config(ParlConfig, ["--task", "embodied/drawer-close-v3"]).task == "drawer-close-v3"


def test_frictions_of_a_new_user_are_one_clear_line(tmp_path, capsys):
    assert main(["eval", "--env", "reach-v3", "--episodes", "1"]) == 2
    assert "did you mean embodied/reach-v3?" in capsys.readouterr().err  # not Gymnasium's Reacher
    assert main(["envs", "reahc"]) == 2
    assert "did you mean reach-v3" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    assert main(["train", "parl", "--total-step", "10", "--run-dir", str(tmp_path)]) == 2  # no abbreviations
    assert "unknown option(s) for embodied train parl: --total-step 10 (--total-step: did you mean --total-steps" in (
        capsys.readouterr().err
    )
    assert main(["train", "pearl", "--source", "window-open-v3", "--run-dir", str(tmp_path)]) == 2
    assert "(--source: did you mean --source-task, --source-data, --source-queries?)" in capsys.readouterr().err
    for argv in (["video", "--out", "/proc/embodied-v.mp4"], ["collect", "--out", "/proc/embodied-ds"]):
        assert main([*argv, "--env", "embodied/reach-v3", "--episodes", "1"]) == 2  # before any rendering or collecting
        err = capsys.readouterr().err.strip().splitlines()  # os.access says yes to root there; a probe does not
        assert len(err) == 1 and "not writable" in err[0], err


def test_an_error_that_echoes_a_huge_value_stays_a_readable_line(tmp_path, capsys):
    """The message named the whole 60 KB value the user passed."""
    goal = "&".join(["block_in_drawer"] * 4000) + "&bogus"
    assert main(["train", "walle", "--tasks", f"block-on-table-drawer-closed:{goal}", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < 2100 and "characters left out" in err[0], len(err[0])
    assert err[0].startswith("error: invalid configuration: goal term") and err[0].endswith("block_on_goal")


@pytest.mark.parametrize(
    "argv",
    [
        ["video", "--env", "embodied/nope-v3", "--out", "{new}/rollout.mp4"],
        ["video", "--env", "embodied/reach-v3", "--policy", "missing.pt", "--out", "{new}/rollout.mp4"],
        ["collect", "--env", "embodied/reach-v3", "--policy", "missing.pt", "--out", "{new}/data.hdf5"],
        ["collect", "--env", "embodied/reach-v3", "--difficulty", "0.5", "--out", "{new}/data.hdf5"],
        ["report", "{runs}", "--metric", "nope", "--out", "{new}/report.md"],
    ],
)
def test_a_refused_command_leaves_no_output_directory(tmp_path, capsys, argv):
    """The output's directory was made by the writability check, before the checks that then refused the command."""
    runs = tmp_path / "runs" / "r"
    runs.mkdir(parents=True)
    (runs / "config.json").write_text('{"seed": 0}')
    (runs / "metrics.jsonl").write_text('{"step": 1, "eval/success_rate": 1.0}\n')
    (runs / "summary.json").write_text("{}")
    new = tmp_path / "new" / "deeper"
    assert main([a.format(new=new, runs=runs) for a in argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_full_disk_is_one_error_line_and_leaves_no_partial_checkpoint(tmp_path, capsys, monkeypatch):
    """torch's writer reports a full disk as RuntimeError("unexpected pos"), the OSError only as its context: a
    traceback at the first checkpoint (seen on a 3 MB tmpfs); now the OSError, named, as one line."""
    import errno

    import torch

    def save_on_a_full_disk(obj, f):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    argv = ["train", "parl", "--task", "reach-v3", "--method", "sac", "--total-steps", "200", "--seed-steps", "100"]
    argv += ["--max-episode-steps", "50", "--checkpoint-every", "100", "--eval-every", "200", "--eval-episodes", "1"]
    assert main([*argv, "--sac.batch-size", "16", "--no-video", "--run-dir", str(tmp_path), "--run-name", "r"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"error: could not write {tmp_path / 'r/checkpoints/last.pt'}: No space left on device"
    )
    assert list((tmp_path / "r" / "checkpoints").iterdir()) == []  # the temp file removed


def test_an_allocation_too_large_for_the_machine_is_one_error_line(tmp_path, capsys, monkeypatch):
    """An allocation torch cannot make, where no check before the run bounds it, was a RuntimeError traceback; one
    line now. (``--wm.deter 1000000``, an 11 TiB layer, stands for such a size with RePo's own check switched off.)"""
    import agents.repo.train
    from embodied.cli import out_of_memory

    monkeypatch.setattr(agents.repo.train, "check_sizes_fit", lambda cfg: None)
    argv = ["train", "repo", "--wm.deter", "1000000", "--total-steps", "50"]
    assert main([*argv, "--no-video", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: out of memory: an allocation of 11175.9 GiB failed"), err
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None  # others propagate
