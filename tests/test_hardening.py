"""Untrusted files and careless use: forged checkpoints, hostile datasets, two writers, Ctrl-C."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from embodied.checkpoint import load_arrays, load_checkpoint, save_arrays, save_checkpoint
from embodied.cli import main as cli_main
from embodied.config import RunOptions
from embodied.data import Dataset, Episode, write_dataset
from embodied.errors import EmbodiedError, TrainingDiverged
from embodied.report import read_records
from embodied.runs import Run, read_metrics
from embodied.make import make_env
from embodied.nets import check_finite


class _Payload:
    """A pickle that would create a file when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_forged_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    forged = tmp_path / "run" / "checkpoints" / "last.pt"
    forged.parent.mkdir(parents=True)
    torch.save({"step": 1, "x": _Payload(str(marker))}, forged)
    with pytest.raises(EmbodiedError, match="refusing to load"):
        load_checkpoint(forged)
    assert not marker.exists()


def test_forged_policy_and_reward_files_are_refused_by_the_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"format": "x", "state_dict": _Payload(str(marker))}, tmp_path / "policy.pt")
    assert cli_main(["eval", "--policy", str(tmp_path / "policy.pt"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert not marker.exists()


def _policy_file(path, **change):
    """A real PARL policy file for reach-v3 (39-d observations, 4-d actions), with ``change`` written over it."""
    from agents.parl.sac import TanhGaussianActor
    from embodied.policies import save_policy

    kwargs = dict(obs_dim=39, act_dim=4, hidden=8)
    save_policy(path, TanhGaussianActor(**kwargs), kwargs)
    payload = load_checkpoint(path)
    torch.save({**payload, **change}, path)
    return str(path)


def _one_error_line(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize(
    "target, kwargs",
    [
        ("embodied.policies:os.system", {"command": "touch {marker}"}),  # a module the allowed package imports
        ("embodied.checkpoint:save_checkpoint", {"path": "{marker}", "state": {}}),  # a project function that writes
    ],
)
def test_policy_files_cannot_choose_what_gets_called(tmp_path, capsys, target, kwargs):
    """A weights-only file still names the class to build: only the agents' policy classes may be built from it."""
    marker = tmp_path / "pwned"
    kwargs = {k: v.format(marker=marker) if isinstance(v, str) else v for k, v in kwargs.items()}
    policy = _policy_file(tmp_path / "policy.pt", target=target, kwargs=kwargs)
    for command in (["eval", "--episodes", "1"], ["video", "--episodes", "1", "--out", str(tmp_path / "v.mp4")]):
        assert "not a policy class" in _one_error_line(capsys, [*command, "--policy", policy])
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kwargs": {"obs_dim": 39, "act_dim": 4, "hidden": 10**9}}, "do not fit"),  # would allocate 10^9 x 39 floats
        ({"kwargs": {"obs_dim": 39, "act_dim": 4, "hidden": "8"}}, "plain numbers"),
        ({"kwargs": {"obs_dim": 39, "act_dim": 4, "hidden": 8, "extra": 1}}, "cannot build"),
        ({"state_dict": {}}, "'net.0.bias' is missing in the file"),
        ({"kwargs": {"obs_dim": 5, "act_dim": 4, "hidden": 8}}, "cannot build|do not fit"),
    ],
)
def test_policy_files_that_do_not_fit_are_one_clear_error(tmp_path, capsys, change, message):
    policy = _policy_file(tmp_path / "policy.pt", **change)
    assert re.search(message, _one_error_line(capsys, ["eval", "--policy", policy, "--episodes", "1"]))


def test_a_policy_for_another_task_is_refused_by_its_sizes(tmp_path, capsys):
    from agents.parl.sac import TanhGaussianActor
    from embodied.policies import save_policy

    kwargs = dict(obs_dim=5, act_dim=4, hidden=8)
    policy = str(save_policy(tmp_path / "p.pt", TanhGaussianActor(**kwargs), kwargs))
    line = _one_error_line(capsys, ["eval", "--policy", policy, "--episodes", "1"])
    assert "observations of size 5" in line and "(39,)" in line
    assert (
        cli_main(["eval", "--policy", _policy_file(tmp_path / "ok.pt"), "--episodes", "1"]) == 0
    )  # a fitting one runs


def test_a_run_directory_stands_for_the_policy_it_saved(tmp_path, capsys):
    """What a user has after training is the run directory; it was 'checkpoint ... is not a regular file'."""
    _policy_file(tmp_path / "run" / "policy.pt")
    assert cli_main(["eval", "--policy", str(tmp_path / "run"), "--episodes", "1"]) == 0
    (tmp_path / "empty").mkdir()
    line = _one_error_line(capsys, ["eval", "--policy", str(tmp_path / "empty"), "--episodes", "1"])
    assert "is a directory without a policy.pt" in line


@pytest.mark.parametrize(
    "path, content, message",
    [
        (
            "rules/iter_0/r.py",
            "import os\ndef rule(s, a, g):\n    return os.system('touch {marker}')\n",
            "exactly one function",
        ),
        ("rules/iter_0/r.py", b"# binary\n\xff\xfe", "not UTF-8 text"),
        ("rules/iter_0/r.py", "#" * 200_000, "over the limit"),
        ("model/iter_0/effects_grasp.py", "def rule(s, a, g):\n    return 1\n", "does not name its skill"),
        (
            "model/iter_0/observed.json",
            '{"state": {"grasp(block)": {"next": "many"}}}',
            "not a JSON object of observed",
        ),
    ],
)
def test_a_hostile_world_model_directory_is_one_clear_error(tmp_path, capsys, path, content, message):
    """``embodied train walle --world-model DIR`` reads rule files and facts another run (or anyone) wrote."""
    marker = tmp_path / "pwned"
    file = tmp_path / "learned" / path
    file.parent.mkdir(parents=True)
    file.write_bytes(content) if isinstance(content, bytes) else file.write_text(
        content.replace("{marker}", str(marker))
    )
    line = _one_error_line(
        capsys,
        [
            "train",
            "walle",
            "--world-model",
            str(tmp_path / "learned"),
            "--tasks",
            "retrieve",
            "--iterations",
            "0",
            "--run-dir",
            str(tmp_path),
            "--run-name",
            "w",
        ],
    )
    assert line.startswith(f"error: --world-model {tmp_path / 'learned'}") and message in line, line
    assert not marker.exists() and not (tmp_path / "w").exists()  # refused before a run directory or the LLM


def test_checkpoints_keep_numpy_paths_and_allowlisted_dataclasses(tmp_path):
    from embodied.teacher import Preferences

    state = {
        "buf": np.arange(6, dtype=np.float32).reshape(2, 3),
        "rng": np.random.default_rng(1).bit_generator.state,
        "prefs": Preferences(np.arange(3), np.arange(3), np.ones(3)),
        "dir": tmp_path,
        "t": (1, "a"),
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.pt", state))
    np.testing.assert_array_equal(back["buf"], state["buf"])
    assert back["rng"] == state["rng"] and back["t"] == (1, "a") and back["dir"] == str(tmp_path)
    np.testing.assert_array_equal(back["prefs"].label, np.ones(3))


def test_npz_stage_outputs_are_atomic_and_never_unpickled(tmp_path):
    save_arrays(tmp_path / "labels.npz", {"label": np.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npz"]
    np.save(tmp_path / "evil.npy", np.array([_Payload(str(tmp_path / "pwned"))], dtype=object), allow_pickle=True)
    os.rename(tmp_path / "evil.npy", tmp_path / "evil.npz")
    with pytest.raises(EmbodiedError):
        load_arrays(tmp_path / "evil.npz")
    with pytest.raises(EmbodiedError, match="lacks"):
        load_arrays(tmp_path / "labels.npz", ("label", "first"))
    assert not (tmp_path / "pwned").exists()


# --- datasets ---------------------------------------------------------------------------------


def _good(tmp_path):
    env = make_env("embodied/reach-v3")
    r = np.random.default_rng(0)
    ep = Episode(
        r.normal(size=(11, 39)).astype(np.float32),
        r.uniform(-1, 1, (10, 4)).astype(np.float32),
        np.zeros(10, np.float32),
        np.zeros(10, bool),
        np.eye(1, 10, 9, dtype=bool)[0],
        {"success": np.zeros(10, bool)},
    )
    return write_dataset(tmp_path / "d.hdf5", [ep], "embodied/reach-v3", env.observation_space, env.action_space)


@pytest.mark.parametrize(
    "attack, message",
    [
        (lambda f, d: f.attrs.__setitem__("total_episodes", 10**15), "declares"),
        (lambda f, d: f.attrs.__delitem__("env_id"), "malformed header"),
        (lambda f, d: f.attrs.__setitem__("observation_space", "[1, 2]"), "malformed header"),
        (lambda f, d: f.attrs.__setitem__("total_steps", 10**15), "declares"),
        (lambda f, d: f.attrs.__setitem__("total_steps", float("inf")), "malformed header"),
        (lambda f, d: f.attrs.__setitem__("total_episodes", float("nan")), "malformed header"),
    ],
)
def test_hostile_headers_give_one_clear_error_before_allocating(tmp_path, attack, message):
    path = _good(tmp_path)
    with h5py.File(path, "r+") as f:
        attack(f, tmp_path)
    with pytest.raises(EmbodiedError, match=message):
        Dataset(path)


def _replace(group, name, data=None, **kwargs):
    del group[name]
    return group.create_dataset(name, data=data, **kwargs)


@pytest.mark.parametrize(
    "attack",
    [
        "external",
        "external-link",
        "virtual",
        "named-datatype",
        "group-for-array",
        "array-for-episode",
        "shape",
        "dtype",
        "steps",
        "steps-inf",
        "action-range",
    ],
)
def test_hostile_episodes_are_refused(tmp_path, attack):
    path = _good(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(40, dtype=np.float32).tobytes())
    with h5py.File(path, "r+") as f:
        ep = f["episode_0"]
        if attack == "external":
            _replace(ep, "rewards", shape=(10,), dtype=np.float32, external=[(str(secret), 0, 40)])
        elif attack == "external-link":
            del ep["rewards"]
            ep["rewards"] = h5py.ExternalLink(str(tmp_path / "other.hdf5"), "/x")
        elif attack == "virtual":
            layout = h5py.VirtualLayout(shape=(10,), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.hdf5"), "x", shape=(10,))
            del ep["rewards"]
            ep.create_virtual_dataset("rewards", layout)
        elif attack == "named-datatype":  # an object that is neither group nor array where an array belongs (fuzzing)
            del ep["rewards"]
            ep["rewards"] = np.dtype("float32")
        elif attack == "group-for-array":  # a bit flip that turned an array's header into a group's (fuzzing)
            del ep["actions"]
            ep.create_group("actions")
        elif attack == "array-for-episode":
            steps = ep.attrs["total_steps"]
            del f["episode_0"]
            f.create_dataset("episode_0", data=np.zeros(3)).attrs["total_steps"] = steps
        elif attack == "shape":
            _replace(ep, "actions", np.zeros((10, 4000), np.float32))
        elif attack == "dtype":
            _replace(ep, "rewards", np.array([b"x"] * 10))
        elif attack == "steps":
            ep.attrs["total_steps"] = 10**12
        elif attack == "steps-inf":
            ep.attrs["total_steps"] = float("inf")
        elif attack == "action-range":  # finite, right shape, but no policy acting in [-1, 1] recorded it
            _replace(ep, "actions", np.full((10, 4), 1e30, np.float32))
    with Dataset(path) as ds, pytest.raises(EmbodiedError, match="corrupt or unsafe"):
        ds[0]


# --- runs ---------------------------------------------------------------------------------------


def test_one_writer_per_run_directory(tmp_path):
    first = Run(tmp_path, "r")
    for resume in (False, True):
        with pytest.raises(EmbodiedError, match="in use by another process"):
            Run(tmp_path, "r", resume=resume)
    first.close()
    Run(tmp_path, "r", resume=True).close()


def test_the_lock_holds_across_processes(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from embodied.runs import Run; import time; "
            f"r = Run({str(tmp_path)!r}, 'r', tensorboard=False); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "ok"
    try:
        with pytest.raises(EmbodiedError, match=f"pid {holder.pid}"):
            Run(tmp_path, "r", resume=True, tensorboard=False)
    finally:
        holder.kill()
        holder.wait()
    Run(tmp_path, "r", resume=True, tensorboard=False).close()  # a dead holder releases it


def test_resume_drops_metric_rows_logged_after_the_checkpoint(tmp_path):
    run = Run(tmp_path, "r", tensorboard=False)
    for step in range(3):
        run.logger.log(step, {"x": step})
    run.save({"step": 2})
    for step in range(3, 6):
        run.logger.log(step, {"x": step})
    run.logger._jsonl.write('{"step": 6, "x"')  # a row cut off by a kill
    run.logger._jsonl.flush()
    os.close(run._lock)  # the process "dies" without closing anything else
    run._lock = None
    resumed = Run(tmp_path, "r", resume=True, tensorboard=False)
    assert resumed.load() == {"step": 2}
    resumed.logger.log(3, {"x": 3})
    resumed.close()
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda f: f.write_text(f.read_text() + "[1, 2]\n"), "record 3: '\\[1, 2\\]' is not a metric record"),
        (lambda f: f.write_text(f.read_text() + '{"step": "3", "eval/success_rate": 1}\n'), "is not a metric record"),
        (
            lambda f: f.write_text(f.read_text() + '{"step": 3, "eval/success_rate": "high"}\n'),
            "is not a metric record",
        ),
        (lambda f: f.write_text(f.read_text() + '{"step": 1e400, "eval/success_rate": 1}\n'), "is not a metric record"),
        (
            lambda f: f.write_text(f.read_text() + f'{{"step": {10**30}, "eval/success_rate": 1}}\n'),
            "not a metric record",
        ),
        (lambda f: f.write_bytes(b"\xff\xfe"), "cannot read .*utf-8"),
        (lambda f: (f.unlink(), f.mkdir()), "cannot read .*Is a directory|is not a regular file"),
    ],
)
def test_metric_files_written_by_something_else_are_one_clear_error(tmp_path, capsys, tamper, message):
    """``embodied report`` and ``--resume`` read metrics.jsonl; a line cut off by a kill ends the records (tested
    above), anything else that is not a record names the file instead of crashing the reader."""
    for seed in range(2):
        run = Run(tmp_path / "sweep", f"s{seed}", tensorboard=False)
        (run.dir / "config.json").write_text(json.dumps({"seed": seed}))
        for step in (1, 2):
            run.logger.log(step, {"eval/success_rate": 0.5})
        run.write_summary({})
        run.close()
    metrics = tmp_path / "sweep" / "s0" / "metrics.jsonl"
    tamper(metrics)
    line = _one_error_line(capsys, ["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "report.md")])
    assert str(metrics) in line and re.search(message, line), line
    with pytest.raises(EmbodiedError, match=message):
        Run(tmp_path / "sweep", "s0", resume=True, tensorboard=False)
    assert lock_is_free(tmp_path / "sweep" / "s0")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "1e308", "-" + "9" * 400])
def test_a_non_finite_number_in_a_metric_record_reads_as_the_null_the_logger_writes(tmp_path, capsys, token):
    """Python's json reads these tokens as NaN or infinite floats, or as numbers beyond float32 (an integer of 400
    digits: float() overflowed with a traceback); the report's bootstrap then gave NaN intervals (and an infinite
    mean) for the whole group. Read as null, the run's last finite value counts, as for a run whose logger wrote
    null."""
    for seed in range(3):
        run = Run(tmp_path / "sweep", f"s{seed}", tensorboard=False)
        (run.dir / "config.json").write_text(json.dumps({"seed": seed}))
        for step in (1, 2):
            run.logger.log(step, {"eval/success_rate": 0.5 + 0.1 * seed})
        run.write_summary({})
        run.close()
    metrics = tmp_path / "sweep" / "s0" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + f'{{"step": 3, "eval/success_rate": {token}}}\n')
    assert read_metrics(metrics)[-1] == {"step": 3, "eval/success_rate": None}
    assert cli_main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "report.md")]) == 0
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| all"))
    assert "nan" not in row and "inf" not in row and "0.600 [0.500, 0.700]" in row, row
    assert "Warning" not in capsys.readouterr().err
    records = tmp_path / "records.jsonl"  # a study's records are read the same way
    records.write_text(f'{{"name": "s0", "config": {{}}, "rows": [{{"step": 3, "eval/success_rate": {token}}}]}}\n')
    assert read_records(records)[0].rows == [{"step": 3, "eval/success_rate": None}]


@pytest.mark.parametrize("saved", ["[1]", '"x"', "null"])
def test_a_config_json_that_is_not_an_object_cannot_skip_the_resume_check(tmp_path, saved):
    """The check compares option by option; with no keys to compare it used to pass and overwrite the file."""
    Run(tmp_path, "r", tensorboard=False).close()
    (tmp_path / "r" / "config.json").write_text(saved)
    with pytest.raises(EmbodiedError, match="not the run's settings"):
        Run(tmp_path, "r", config=RunOptions(), resume=True, tensorboard=False)
    assert (tmp_path / "r" / "config.json").read_text() == saved and lock_is_free(tmp_path / "r")


def lock_is_free(directory) -> bool:
    """A refused resume must not keep the run directory locked (the next try would say 'in use')."""
    import fcntl

    fd = os.open(directory / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    args = [
        "parl",
        "--task",
        "reach-v3",
        "--method",
        "pebble",
        "--total-steps",
        "100000",
        "--max-episode-steps",
        "100",
        "--seed-steps",
        "100",
        "--sac.batch-size",
        "32",
        "--sac.hidden",
        "32",
        "--no-video",
        "--eval-every",
        "100000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embodied.cli",
            "train",
            *args,
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path),
            "--run-name",
            "r",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or not metrics.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:") or "interrupted at step" in line]
    assert len(lines) == 1 and "resume with --resume" in lines[0], err[-1000:]
    step = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"]
    assert f"interrupted at step {step}" in lines[0]


@pytest.fixture(scope="module")
def repo_run(tmp_path_factory):
    """A finished tiny RePo run on pixels (a checkpoint with the agent, its replay, the counters)."""
    root = tmp_path_factory.mktemp("repo")
    assert cli_main(["train", "repo", *TINY_REPO, "--run-dir", str(root), "--run-name", "r"]) == 0
    return root / "r"


TINY_REPO = [
    "--total-steps",
    "80",
    "--max-episode-steps",
    "40",
    "--prefill",
    "80",
    "--train-every",
    "80",
    "--train-steps",
    "1",
    "--batch-size",
    "2",
    "--seq-len",
    "8",
    "--eval-every",
    "1000",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "40",
    "--no-video",
    "--threads",
    "1",
    "--device",
    "cpu",
]


def _shrink_first_matrix(state):
    weights = state["agent"]["model"]
    key = next(k for k, v in weights.items() if v.ndim == 2)
    weights[key] = weights[key][:1].clone()  # a slice alone keeps the whole storage: refused before this check


def _crop_stored_frames(state):
    episode = state["replay"]["episodes"][0]
    episode["obs"] = episode["obs"][:, :32]


@pytest.mark.parametrize(
    "forge, message",
    [
        (lambda s: s.pop("agent"), "no entry 'agent'"),  # e.g. another agent's checkpoint
        (_shrink_first_matrix, "size mismatch"),
        (lambda s: s.update(step="80; rm -rf ~"), "invalid literal for int"),
        (lambda s: s.update(episode=float("inf")), "cannot convert float infinity"),
        (_crop_stored_frames, r"observations of shape \(32, 64, 3\), this environment \(64, 64, 3\)"),
        (lambda s: s["_run"].update(rng={"python": 3}), "cannot unpack"),
        (lambda s: s["_run"].update(metrics_rows=-3), "-3 metric rows"),
    ],
)
def test_resume_refuses_a_checkpoint_that_does_not_fit_with_one_clear_error(tmp_path, capsys, repo_run, forge, message):
    """Weights-only files can still be another agent's, another configuration's or edited: one error, no traceback,
    and the run directory as it was."""
    run = tmp_path / "r"
    shutil.copytree(repo_run, run, ignore=shutil.ignore_patterns(".lock", "summary.json"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    forge(state)
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    before = (run / "metrics.jsonl").read_text()
    line = _one_error_line(
        capsys,
        [
            "train",
            "repo",
            *TINY_REPO,
            "--total-steps",
            "120",
            "--run-dir",
            str(tmp_path),
            "--run-name",
            "r",
            "--resume",
        ],
    )
    assert "does not fit this run" in line and re.search(message, line), line
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: d.update(first=d["first"] + 10**6), r"segment indices outside \[0, 60\)"),  # was an IndexError
        (lambda d: d.update(label=d["label"] * 7), r"labels outside \[0, 1\]"),  # was trained on silently
        (lambda d: d.update(label=d["label"][:3]), "not three arrays of one length"),  # was trained on silently
        (lambda d: d.update(second=d["second"] + 0.5), "not integers"),
    ],
)
def test_pearl_refuses_a_labels_stage_file_that_does_not_fit(tmp_path, capsys, tamper, message):
    """A finished stage's output is trusted on --resume; labels.npz is checked against the run's target segments."""
    from test_pearl import TOY  # tests/, beside this file

    args = ["train", "pearl", *TOY, "--iql-steps", "0", "--run-dir", str(tmp_path), "--run-name", "p"]
    assert cli_main(args) == 0
    capsys.readouterr()  # the first run's progress bars
    run = tmp_path / "p"
    (run / "summary.json").unlink()
    labels = dict(np.load(run / "labels.npz"))
    tamper(labels)
    np.savez(run / "labels.npz", **labels)
    line = _one_error_line(capsys, [*args, "--resume"])
    assert f"checkpoint {run / 'labels.npz'} does not fit this run" in line and re.search(message, line), line


def _ctrl_c_then(function):
    """``function``, but first the Ctrl-C a user presses while it runs."""

    def pressed(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return function(*args, **kwargs)

    return pressed


def test_ctrl_c_during_the_last_step_lets_the_run_finish(tmp_path, monkeypatch):
    """A stop requested when no step is left is not an interruption: the run writes its summary and exits 0
    (it used to save, stop "interrupted" and leave no summary.json, so scripts that wait for one trained again)."""
    import agents.repo.train as repo_train
    from agents.walle.train import WalleConfig, run_walle
    from agents.walle.world_model import NeuroSymbolicWorldModel
    from test_walle_agent import DistractedLLM  # tests/, beside this file

    # RePo: the only evaluation is the final one, after the last episode
    monkeypatch.setattr(repo_train, "evaluate_agent", _ctrl_c_then(repo_train.evaluate_agent))
    assert (
        cli_main(
            [
                "train",
                "repo",
                "--total-steps",
                "80",
                "--max-episode-steps",
                "40",
                "--prefill",
                "80",
                "--train-every",
                "80",
                "--train-steps",
                "1",
                "--batch-size",
                "2",
                "--seq-len",
                "8",
                "--eval-every",
                "1000",
                "--eval-episodes",
                "1",
                "--checkpoint-every",
                "1000",
                "--no-video",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--run-dir",
                str(tmp_path),
                "--run-name",
                "repo",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "repo" / "summary.json").read_text())["steps"] == 80
    # WALL-E: the rules are saved in every iteration, the last one included
    monkeypatch.setattr(NeuroSymbolicWorldModel, "save", _ctrl_c_then(NeuroSymbolicWorldModel.save))
    cfg = WalleConfig(
        tasks=("retrieve",),
        planner="rules",
        iterations=0,
        episodes_per_task=1,
        max_decisions=8,
        video=False,
        run_dir=tmp_path,
        run_name="walle",
    )
    run_walle(cfg, llm=DistractedLLM())
    assert json.loads((tmp_path / "walle" / "summary.json").read_text())["iterations"] == 0


def test_outputs_get_the_normal_file_mode(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1)})
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_check_finite_names_the_first_nan_infinite_or_overflowing_tensor():
    good = [("a", torch.ones(3)), ("b", torch.zeros(2, 2))]
    check_finite("net", "hint", good)  # finite: nothing
    for bad, message in [
        (torch.tensor([1.0, float("nan")]), "b is NaN or infinite"),
        (torch.tensor([float("-inf")]), "b is NaN or infinite"),
        (torch.tensor([3e38, 3e38]), r"b holds 3.0e\+38 after an update \(its norm overflows\)"),
    ]:
        with pytest.raises(TrainingDiverged, match=f"net diverged: {message}.*; hint"):
            check_finite("net", "hint", [good[0], ("b", bad), good[1]])
    with pytest.raises(TrainingDiverged, match="b is NaN"):  # the first of several
        check_finite("net", "hint", [("b", torch.tensor([float("nan")])), ("c", torch.tensor([float("nan")]))])


REPO_TINY = "--total-steps 200 --prefill 100 --train-every 100 --train-steps 2 --batch-size 2 --seq-len 8"
REPO_TINY += " --max-episode-steps 50"
PEARL_TINY = "--episodes 6 --max-steps 40 --segments 30 --segment-length 10 --source-queries 30 --reward-epochs 2"


@pytest.mark.parametrize(
    "agent, options, what",
    [
        (
            "parl",
            "--method sac --total-steps 300 --seed-steps 100 --max-episode-steps 50 --sac.critic-lr 1e6 "
            "--sac.actor-lr 1e6",
            "SAC diverged: .*--sac.actor-lr",
        ),
        (
            "parl",
            "--method pebble --total-steps 300 --seed-steps 100 --unsup-steps 50 --query-every 100 "
            "--queries-per-session 5 --max-episode-steps 50 --reward-lr 1e9",
            "the learned reward diverged: .*--reward-lr",  # was blamed on SAC, which trained on its NaN
        ),
        (
            "pearl",
            f"--source-task reach-v3 --target-task reach-v3 {PEARL_TINY} --iql-steps 50 --iql.lr 1e8",
            "IQL diverged: .* --iql.lr",
        ),
        (
            "repo",
            f"{REPO_TINY} --wm.model-lr 1e8 --behavior.actor-lr 1e8 --behavior.critic-lr 1e8",
            "RePo diverged: .*--wm.model-lr",
        ),
    ],
)
def test_training_that_diverges_stops_with_one_error_line(tmp_path, capsys, agent, options, what):
    """A learning rate far too large: a traceback from a distribution's argument check (SAC, IQL) or from the
    env refusing a NaN action (RePo), after the cause."""
    args = ["train", agent, *options.split(), "--eval-every", "1000", "--no-video", "--run-dir", str(tmp_path)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.split("\n") if "error:" in line]  # on a line of its own, not after a bar's
    assert len(errors) == 1 and re.match(f"error: {what}", errors[0]) and "Traceback" not in err, err
