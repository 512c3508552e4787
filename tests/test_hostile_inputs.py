"""What a file, a batch or a server sends cannot hurt the host: each class of attack, closed by construction.

Tensors are checked beyond ``weights_only``; every reader has size and nesting caps checked before it
reads; sandbox batches cannot loop or hold a slot past their deadline; run directories are never
written through a symbolic link; an LLM call has one deadline over its retries and redirects.
"""

import json
import os
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from embodied.checkpoint import load_checkpoint, save_checkpoint
from embodied.cli import main as cli_main
from embodied.config import RunOptions
from embodied.errors import EmbodiedError
from embodied.runs import Run
from embodied.safe_io import json_depth, load_json


def one_error_line(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


# --- tensors from disk ---------------------------------------------------------------------------


def _crafted(kind: str):
    if kind == "sparse":  # indices far outside the shape: its first use segfaulted the process
        return torch.sparse_coo_tensor(
            torch.tensor([[0, 10**9]]), torch.tensor([1.0, 2.0]), (3,), check_invariants=False
        )
    if kind == "expanded":  # one float of storage for a million-element shape
        return torch.zeros(1).expand(10**6)
    if kind == "offset-view":
        return torch.arange(10.0)[2:5]
    if kind == "complex":
        return torch.zeros(3, dtype=torch.complex64)
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("sparse", "layout torch.sparse_coo"),
        ("expanded", "a view"),
        ("offset-view", "a view"),
        ("complex", "dtype torch.complex64"),
    ],
)
def test_tensors_that_weights_only_accepts_but_are_unsafe_are_refused(tmp_path, kind, message):
    path = tmp_path / "last.pt"
    torch.save({"sac": {"actor": {"w": _crafted(kind)}}}, path)
    with pytest.raises(EmbodiedError, match=f"entry /sac/actor/w is {message}"):
        load_checkpoint(path)


def test_entries_may_not_share_storage(tmp_path):
    shared = torch.zeros(4)
    torch.save({"a": shared, "b": shared}, tmp_path / "x.pt")
    with pytest.raises(EmbodiedError, match="entry /b is storage shared"):
        load_checkpoint(tmp_path / "x.pt")


def test_an_expanded_tensor_in_a_policy_file_is_one_error_line_before_it_is_used(tmp_path, capsys):
    """A 3 KB policy file passed the shape check and then asked for gigabytes when copied into the module."""
    from agents.parl.sac import TanhGaussianActor
    from embodied.policies import save_policy

    kwargs = dict(obs_dim=39, act_dim=4, hidden=8)
    path = tmp_path / "policy.pt"
    save_policy(path, TanhGaussianActor(**kwargs), kwargs)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["net.0.weight"] = torch.zeros(1).expand(8, 39)  # right shape, 4 bytes of storage
    torch.save(payload, path)
    assert os.path.getsize(path) < 20_000
    line = one_error_line(capsys, ["eval", "--policy", str(path), "--episodes", "1"])
    assert "state_dict/net.0.weight" in line and "view" in line


def test_a_checkpoint_of_deflated_zeros_is_refused_before_it_unpacks(tmp_path, capsys):
    """PyTorch inflates a compressed member into its declared size: a file 1/1000 of what it unpacks to (a few MB
    would be gigabytes). torch.save never compresses, so a compressed member is refused from the zip directory."""
    import zipfile

    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(1 << 22)}}, plain)  # 16 MB stored
    bomb = tmp_path / "policy.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(bomb) * 500 < os.path.getsize(plain)
    assert torch.load(bomb, weights_only=True)["state_dict"]["w"].numel() == 1 << 22  # torch alone would unpack it
    with pytest.raises(EmbodiedError, match="is compressed"):
        load_checkpoint(bomb)
    line = one_error_line(capsys, ["eval", "--policy", str(bomb), "--episodes", "1"])
    assert "compressed" in line
    legacy = tmp_path / "legacy.pt"  # the pre-1.6 format: not written here, and its own reader is not exposed
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(EmbodiedError, match="not a zip archive"):
        load_checkpoint(legacy)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_policy_file_with_nonfinite_weights_is_one_error_line_naming_the_entry(tmp_path, capsys, value):
    """NaN weights loaded unchecked gave NaN actions and a traceback from the environment's step."""
    from agents.parl.sac import TanhGaussianActor
    from embodied.policies import save_policy

    kwargs = dict(obs_dim=39, act_dim=4, hidden=8)
    actor = TanhGaussianActor(**kwargs)
    with torch.no_grad():
        next(actor.parameters())[0, 0] = value
    path = save_policy(tmp_path / "policy.pt", actor, kwargs)
    line = one_error_line(capsys, ["eval", "--policy", str(path), "--episodes", "1"])
    assert "/state_dict/net.0.weight" in line and "NaN or infinite" in line


def test_a_zip_directory_naming_an_unknown_zip_version_is_one_error(tmp_path):
    """A bit flip in the version a member needs (found by bench/fuzz.py --cases 30000 --seed 31) made Python's
    zipfile raise NotImplementedError from the checks that run before torch.load and np.load."""
    from embodied.checkpoint import load_arrays

    for path, save in (
        (tmp_path / "last.pt", lambda p: save_checkpoint(p, {"w": torch.zeros(3)})),
        (tmp_path / "labels.npz", lambda p: np.savez(p, first=np.zeros(3))),
    ):
        save(path)
        data = bytearray(path.read_bytes())
        at = data.find(b"PK\x01\x02")  # the first central-directory entry: "version needed" is at +6
        data[at + 6 : at + 8] = (128).to_bytes(2, "little")
        path.write_bytes(bytes(data))
        with pytest.raises(EmbodiedError, match="zip file version 12.8"):
            load_checkpoint(path) if path.suffix == ".pt" else load_arrays(path)


def test_real_checkpoints_still_load(tmp_path):
    state = {
        "net": torch.nn.Linear(3, 2).state_dict(),
        "opt": torch.optim.Adam(torch.nn.Linear(3, 2).parameters()).state_dict(),
        "arr": np.arange(6.0).reshape(2, 3),
        "empty": [torch.zeros(0), torch.zeros(0)],
        "rng": torch.get_rng_state(),
    }
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert np.array_equal(back["arr"], state["arr"]) and torch.equal(back["rng"], state["rng"])


def _trained_adam(capturable: bool = False):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=capturable)
    net(torch.ones(2, 3)).sum().backward()
    if not capturable:
        opt.step()
    return net, opt


def _set(state: dict, path: tuple, value) -> dict:
    inner = state
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return state


@pytest.mark.parametrize(
    "path, value, message",
    [  # each passed torch's load_state_dict and failed at the first update, with a traceback
        (("param_groups", 0, "weight_decay"), None, "setting 'weight_decay' is None"),
        (("param_groups", 0, "lr"), "x", "setting 'lr' is 'x'"),
        (("param_groups", 0, "lr"), float("nan"), "setting 'lr' is nan"),
        (("param_groups", 0, "betas"), (0.9,), "setting 'betas'"),
        (("param_groups", 0, "sneaky"), 1, "unknown setting 'sneaky'"),
        (("param_groups", 0, "params"), [0, 1], "does not hold this run's parameters"),
        (("state", 0, "exp_avg"), 2**62, "0/exp_avg is not a floating tensor"),
        (("state", 0, "exp_avg_sq"), torch.zeros(0, 3), "not a finite tensor of its parameter's shape"),
        (("state", 1, "exp_avg"), torch.full((4,), float("nan")), "not a finite tensor"),
        (("state", 0, "step"), torch.tensor(-1.0), "0/step is negative"),  # a division by zero at the update
        (("state", 7), {}, "names no parameter"),
        (("state",), [], "per-parameter state is not a dict"),
    ],
)
def test_an_optimizer_state_that_torch_would_load_but_not_use_is_refused(path, value, message):
    from embodied.checkpoint import load_optimizer_state

    _, opt = _trained_adam()
    state = _set(opt.state_dict(), path, value)
    _, fresh = _trained_adam()
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=message):
        load_optimizer_state(fresh, state)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], before["state"][0]["exp_avg"])  # untouched


def test_an_optimizer_state_loads_with_this_runs_execution_flags():
    """A state written with CUDA graphs (capturable) loads into a CPU run, which could not step with it."""
    from embodied.checkpoint import load_optimizer_state

    net, opt = _trained_adam()
    state = opt.state_dict()
    state["param_groups"][0]["capturable"] = True
    _, fresh = _trained_adam()
    load_optimizer_state(fresh, state)
    assert fresh.param_groups[0]["capturable"] is False
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    fresh.step()  # torch asserts on a capturable CPU step


@pytest.mark.parametrize("payload", [{}, [], 1.5, "x"])
def test_an_array_marker_that_holds_no_tensor_is_one_error(tmp_path, payload):
    torch.save({"recent": [{"__ndarray__": payload}]}, tmp_path / "c.pt")
    with pytest.raises(EmbodiedError, match="is malformed: an array entry holds"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_crafted_optimizer_state_in_a_checkpoint_is_one_error_line_on_resume(tmp_path, capsys):
    args = ["train", "parl", "--task", "reach-v3", "--total-steps", "150", "--max-episode-steps", "50"]
    args += ["--seed-steps", "100", "--unsup-steps", "0", "--sac.batch-size", "16", "--sac.hidden", "16"]
    args += ["--eval-every", "150", "--eval-episodes", "1", "--no-video", "--run-dir", str(tmp_path), "--run-name", "r"]
    assert cli_main(args) == 0
    capsys.readouterr()
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["sac"]["critic_opt"]["state"][0]["exp_avg_sq"] = "x"  # failed at SAC's first update
    torch.save(state, path)
    line = one_error_line(capsys, [*args[:4], "--total-steps", "200", *args[6:], "--resume"])
    assert "does not fit this run (optimizer state 0/exp_avg_sq is not a floating tensor)" in line, line


# --- readers with caps -----------------------------------------------------------------------------


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": "[[[[{{{", "b": [[1]]}') == 3
    assert json_depth('"\\"[["') == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("[" * 100_000 + "]" * 100_000, "nests JSON deeper"),  # escaped as RecursionError before
        ('{"a": ' * 70 + "1" + "}" * 70, "nests JSON deeper"),
    ],
)
def test_deeply_nested_config_is_one_error_on_resume(tmp_path, content, message):
    Run(tmp_path, "r", tensorboard=False).close()
    (tmp_path / "r" / "config.json").write_text(content)
    with pytest.raises(EmbodiedError, match=message):
        Run(tmp_path, "r", config=RunOptions(), resume=True, tensorboard=False)


def test_oversized_json_is_refused_by_its_size_before_reading(tmp_path, monkeypatch):
    import embodied.safe_io as safe_io

    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"x": "a" * 5000}))
    with pytest.raises(EmbodiedError, match="over the limit of 1000"):
        load_json(path, limit=1000)
    opened = []
    monkeypatch.setattr(safe_io, "open", lambda *a, **k: opened.append(a), raising=False)
    with pytest.raises(EmbodiedError):
        load_json(path, limit=1000)
    assert not opened, "the size is checked before the file is opened"


def test_a_huge_metrics_line_is_one_error(tmp_path, capsys):
    run = Run(tmp_path / "sweep", "s0", tensorboard=False)
    run.logger.log(1, {"eval/success_rate": 0.5})
    run.write_summary({})
    run.close()
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "x": ' + "1" * 200_000 + "}\n")
    line = one_error_line(capsys, ["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "r.md")])
    assert "is not a metric record" in line and "metrics.jsonl" in line


def test_nested_records_in_metrics_are_not_taken_for_cut_off_lines(tmp_path):
    run = Run(tmp_path, "s0", tensorboard=False)
    run.logger.log(1, {"a": 1.0})
    run.close()
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write("[" * 50_000 + "\n")
    with pytest.raises(EmbodiedError, match="not a metric record"):
        Run(tmp_path, "s0", resume=True, tensorboard=False)


def test_a_deep_observed_json_in_a_world_model_is_one_error(tmp_path, capsys):
    from agents.walle.transition_model import TransitionModel

    (tmp_path / "wm").mkdir()
    (tmp_path / "wm" / "observed.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EmbodiedError, match="nests JSON deeper"):
        TransitionModel.load(tmp_path / "wm")


def _tiny_file_declaring_gigabytes(path, arrays: int, rows: int):
    """A valid single-file dataset whose one episode is then replaced by chunked arrays never written."""
    from embodied.data import Episode, write_dataset
    from embodied.make import make_env

    env = make_env("embodied/reach-v3")
    obs = np.zeros((3, 39), np.float32)
    ep = Episode(
        observations=obs,
        actions=np.zeros((2, 4), np.float32),
        rewards=np.zeros(2, np.float32),
        terminations=np.zeros(2, bool),
        truncations=np.zeros(2, bool),
        infos={},
    )
    write_dataset(path, [ep], "embodied/reach-v3", env.observation_space, env.action_space)
    with h5py.File(path, "r+") as f:
        f.attrs["total_steps"] = rows
        g = f["episode_0"]
        g.attrs["total_steps"] = rows - 1
        del g["observations"], g["actions"], g["rewards"], g["terminations"], g["truncations"]
        g.create_dataset("observations", shape=(rows, 39), dtype=np.float32, chunks=(1, 39))
        g.create_dataset("actions", shape=(rows - 1, 4), dtype=np.float32, chunks=(1, 4))
        for k in ("rewards", "terminations", "truncations"):
            g.create_dataset(k, shape=(rows - 1,), dtype=np.float32, chunks=(1,))
        for i in range(arrays):
            g["infos"].create_dataset(f"x{i}", shape=(rows - 1, 256), dtype=np.float64, chunks=(1, 256))


def test_arrays_declaring_more_than_they_store_are_refused_before_reading(tmp_path):
    """Each array is under the per-array cap (together ~8 GB) in a file of a few KB: HDF5 fills chunks never
    written with zeros, so every array must store at least what compression could unpack to its size."""
    from embodied.data import Dataset

    path = tmp_path / "bomb.hdf5"
    _tiny_file_declaring_gigabytes(path, arrays=4, rows=1_000_000)
    assert os.path.getsize(path) < 1_000_000
    with Dataset(path) as ds, pytest.raises(EmbodiedError, match="'observations' declares .* but stores 0"):
        ds[0]


def test_an_episode_whose_arrays_together_are_too_large_is_refused_before_reading(tmp_path, monkeypatch):
    """Written, compressed arrays (zeros deflate ~1000:1) each under the per-array cap, their sum over the
    episode's: refused before any is read (the caps scaled down so that the file stays small)."""
    import embodied.data.dataset as dataset
    from embodied.data import Dataset

    path = tmp_path / "bomb.hdf5"
    _tiny_file_declaring_gigabytes(path, arrays=0, rows=10)
    with h5py.File(path, "r+") as f:
        for i in range(4):
            f["episode_0/infos"].create_dataset(f"x{i}", data=np.zeros((9, 1 << 15)), compression="gzip")
    monkeypatch.setattr(dataset, "MAX_ARRAY_BYTES", 1 << 22)
    monkeypatch.setattr(dataset, "MAX_EPISODE_BYTES", 1 << 22)  # 4 MB; each array 2.4 MB, 9.4 MB together
    with Dataset(path) as ds, pytest.raises(EmbodiedError, match="would need .* bytes together"):
        ds[0]


# --- run directories ---------------------------------------------------------------------------------


def test_a_run_directory_that_is_a_symlink_is_refused_before_anything_is_written(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / ".lock").write_text("12345")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").symlink_to(target)
    with pytest.raises(EmbodiedError, match="symbolic link"):
        Run(tmp_path / "runs", "r", resume=True, tensorboard=False)
    assert (target / ".lock").read_text() == "12345" and sorted(os.listdir(target)) == [".lock"]


def test_a_run_dir_that_is_a_symlink_is_refused_and_the_empty_target_gets_nothing(tmp_path, capsys):
    target = tmp_path / "empty"
    target.mkdir()
    (tmp_path / "runs").symlink_to(target)
    line = one_error_line(
        capsys,
        [
            "train",
            "parl",
            "--task",
            "reach-v3",
            "--total-steps",
            "10",
            "--run-dir",
            str(tmp_path / "runs"),
            "--run-name",
            "r",
        ],
    )
    assert "symbolic link" in line and os.listdir(target) == []


def test_a_lock_file_that_is_a_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").symlink_to(victim)
    with pytest.raises(EmbodiedError, match="cannot lock"):
        Run(tmp_path, "r", resume=True, tensorboard=False)
    assert victim.read_text() == "keep me"


# --- the sandbox's host side -----------------------------------------------------------------------


def test_a_batch_larger_than_one_request_is_split_not_retried_forever():
    from embodied.sandbox import SandboxedFunction, WorkerPool, run_batch
    import embodied.sandbox.pool as pool_module

    pool = WorkerPool(size=1)
    rule = SandboxedFunction("def rule(s, a, g):\n    return len(s.get('x'))", pool=pool)
    arg = {"x": "a" * 200_000}
    old = pool_module.MAX_REQUEST
    pool_module.MAX_REQUEST = 500_000  # two calls a request
    try:
        start = time.monotonic()
        outcomes = run_batch([(rule, (arg, {}, {}))] * 7)
        assert [o.value for o in outcomes] == [200_000] * 7 and pool.restarts == 0
        assert time.monotonic() - start < 10
        huge = run_batch([(rule, ({"x": "a" * 800_000}, {}, {}))])[0]  # cannot fit any request: fails at once
        assert huge.error == "rejected" and "request limit" in huge.message and pool.restarts == 0
    finally:
        pool_module.MAX_REQUEST = old
        pool.close()


SLOW = "def rule(s, a, g):\n    n = 0\n    for i in s:\n        for j in s:\n            n = n + 1\n    return n"


def test_a_batch_of_hostile_calls_costs_its_deadline_not_n_times_the_limit():
    from embodied.sandbox import SandboxedFunction, WorkerPool, run_batch

    pool = WorkerPool(size=1)
    slow = SandboxedFunction(SLOW, max_ops=10**12, seconds=0.5, pool=pool)
    start = time.monotonic()
    outcomes = run_batch([(slow, (list(range(10_000)), {}, {}))] * 20, batch_seconds=2.0)
    took = time.monotonic() - start
    assert all(o.error == "timeout" for o in outcomes) and took < 4.0, took  # 20 x 0.5 s before
    pool.close()


def test_a_caller_waiting_for_a_busy_slot_gives_up_at_its_deadline():
    from embodied.sandbox import SandboxedFunction, WorkerPool, run_batch

    pool = WorkerPool(size=1)
    slow = SandboxedFunction(SLOW, max_ops=10**12, seconds=3.0, pool=pool)
    quick = SandboxedFunction("def rule(s, a, g):\n    return 1", pool=pool)
    hog = threading.Thread(target=run_batch, args=([(slow, (list(range(10_000)), {}, {}))],))
    hog.start()
    time.sleep(0.5)
    start = time.monotonic()
    outcome = run_batch([(quick, ({}, {}, {}))], batch_seconds=0.5)[0]
    assert outcome.error == "timeout" and "no sandbox worker was free" in outcome.message
    assert time.monotonic() - start < 1.5
    hog.join()
    pool.close()


def test_an_answer_over_the_size_cap_is_a_bad_result_not_a_timeout():
    from embodied.sandbox import SandboxBadResult, SandboxedFunction, WorkerPool

    pool = WorkerPool(size=1, memory_mb=512)
    source = "def rule(s, a, g):\n    x = 1\n    for i in s:\n        x = x + x\n    return [x for i in a]"
    big = SandboxedFunction(source, max_ops=10**8, seconds=5.0, pool=pool)
    with pytest.raises(SandboxBadResult, match="over"):  # 99,000 integers of 99 digits: ~10 MB of JSON
        big(list(range(328)), list(range(99_000)), {})
    pool.close()


@pytest.mark.parametrize(
    "source",
    [
        "def rule(s, a, g):\n    len = rule\n    return len(s)",
        "def rule(s, a, g):\n    for len in [rule]:\n        return len(s)",
        "def rule(min, a, g):\n    return min(a)",
        "def rule(s, a, g):\n    x = [len(s) for max in [rule]]\n    return x",
        "def rule(s, a, g):\n    rule = len\n    return rule(s)",
    ],
)
def test_rebinding_a_builtin_name_is_refused(source):
    from embodied.sandbox import UnsafeCodeError, check_source

    with pytest.raises(UnsafeCodeError, match="cannot be rebound"):
        check_source(source)


# --- the LLM client ----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["redirect", "retry"])
def test_one_deadline_covers_retries_and_redirects(loopback, answer):
    from embodied.llm import LLMUnavailable
    from embodied.llm.http import OpenAICompatibleLLM
    from loopback import QuietHandler

    class Slow(QuietHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.6)
            if answer == "redirect":  # same origin: followed, up to 3 hops
                self.send_response(307)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_body(b"", 503)  # retried

    llm = OpenAICompatibleLLM(loopback.start(Slow), timeout=1.0, retries=3, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="deadline"):
        llm.generate([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 1.8  # each hop and each try got a fresh 1 s before: 2.4 s and more


def test_score_has_one_deadline_for_all_its_candidates(loopback):
    from embodied.llm import LLMUnavailable
    from embodied.llm.http import OpenAICompatibleLLM
    from loopback import QuietHandler

    class Slow(QuietHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.4)
            text = "assistant: x"
            body = {
                "choices": [
                    {
                        "logprobs": {
                            "text_offset": list(range(len(text))),
                            "token_logprobs": [None] + [-1.0] * (len(text) - 1),
                        }
                    }
                ]
            }
            self.send_body(json.dumps(body).encode(), content_type="application/json")

    llm = OpenAICompatibleLLM(loopback.start(Slow), timeout=1.0, retries=0)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="deadline"):
        llm.score([{"role": "user", "content": "hi"}], [f"c{i}" for i in range(10)])
    assert time.monotonic() - start < 1.8  # 10 x 0.4 s before


def test_an_npz_whose_header_declares_gigabytes_is_refused_before_numpy_allocates_them(tmp_path):
    import io
    import zipfile

    from embodied.checkpoint import load_arrays

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    with zipfile.ZipFile(tmp_path / "labels.npz", "w") as z:
        z.writestr("label.npy", header.getvalue() + b"\0" * 64)  # 8 GB declared, 64 bytes held
    with pytest.raises(EmbodiedError, match=r"declares shape \(1000000000,\)"):
        load_arrays(tmp_path / "labels.npz")


def test_a_damaged_string_heap_that_made_libhdf5_loop_forever_is_one_error():
    """Found by the fuzz suite: a dataset whose HDF5 global heap (where variable-length string attributes live)
    was zeroed made libhdf5 loop forever on reading an attribute. Such strings are now read in a child process
    with a deadline, and our writer keeps strings fixed-length in the object header."""
    import subprocess
    import sys

    path = os.path.join(os.path.dirname(__file__), "data", "damaged_string_heap.hdf5")
    script = (
        "import embodied.data.dataset as d; d.ATTRIBUTE_SECONDS = 2.0\n"
        f"from embodied.data import load_episodes\nload_episodes({path!r})"
    )
    start = time.monotonic()
    try:  # in a child, so that a loader which loops forever fails this test instead of hanging the suite
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(__file__)),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading the damaged file hung")
    assert "EmbodiedError" in done.stderr and "did not finish within 2 s" in done.stderr, done.stderr[-2000:]
    assert time.monotonic() - start < 30
