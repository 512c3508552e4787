"""Mutation fuzzing of every kind of file the project reads back.

    python bench/fuzz.py                       # 2,000 cases, prints cases tried and failures by kind
    python bench/fuzz.py --cases 60 --seed 0   # the short deterministic run CI makes (tests/test_fuzz.py)

For each kind (checkpoint, policy, reward model, HDF5 dataset, Minari dataset, config.json,
metrics.jsonl, labels.npz, WALL-E world-model directory) a valid file is made, then mutated:
truncation, bit flips, inserted bytes, huge declared sizes and counts, deep nesting, links to
devices and elsewhere, other dtypes and tensor layouts. Each case is loaded by the project's own
reader in a worker process under an address-space cap (RLIMIT_AS, 1 GiB) and a timeout. A case
passes when the reader succeeds or raises one ``EmbodiedError`` (a clear error line); a crash,
a hang, any other exception (a traceback) or a ``MemoryError`` (the cap was hit: something was
allocated from a declared size before it was checked) is a failure. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP = 1 << 30
KINDS = ("checkpoint", "policy", "reward_model", "hdf5", "minari", "config", "metrics", "labels", "world_model")


# --- valid files ---------------------------------------------------------------------------------------


def make_valid(kind: str, where: Path) -> Path:
    """A valid file (or directory) of ``kind`` under ``where``; the path the reader takes."""
    import numpy as np
    import torch

    where.mkdir(parents=True, exist_ok=True)
    if kind == "checkpoint":
        from embodied.checkpoint import rng_state, save_checkpoint

        net = torch.nn.Linear(6, 3)
        return save_checkpoint(
            where / "last.pt",
            {
                "net": net.state_dict(),
                "opt": torch.optim.Adam(net.parameters()).state_dict(),
                "buffer": np.arange(12.0).reshape(3, 4),
                "step": 7,
                "_run": {"rng": rng_state(), "metrics_rows": 2},
            },
        )
    if kind == "policy":
        from agents.parl.sac import TanhGaussianActor
        from embodied.policies import save_policy

        kw = dict(obs_dim=39, act_dim=4, hidden=8)
        return save_policy(where / "policy.pt", TanhGaussianActor(**kw), kw)
    if kind == "reward_model":
        from embodied.checkpoint import save_checkpoint
        from embodied.reward_models import GaussianRewardModel

        return save_checkpoint(where / "reward.pt", GaussianRewardModel(39, 4, hidden=8).state_dict())
    if kind in ("hdf5", "minari"):
        import gymnasium as gym

        from embodied.data import Episode, write_dataset
        from embodied.data.minari_format import write_minari

        obs_space = gym.spaces.Box(-10, 10, (5,), np.float32)
        act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        rng = np.random.default_rng(0)
        episodes = [
            Episode(
                observations=rng.normal(size=(t + 1, 5)).astype(np.float32),
                actions=rng.uniform(-1, 1, (t, 2)).astype(np.float32),
                rewards=rng.normal(size=t).astype(np.float32),
                terminations=np.zeros(t, bool),
                truncations=np.eye(1, t, t - 1, dtype=bool)[0],
                infos={"success": np.zeros(t, bool)},
            )
            for t in (4, 6)
        ]
        if kind == "hdf5":
            return write_dataset(where / "data.hdf5", episodes, "embodied/reach-v3", obs_space, act_space)
        env = gym.make("embodied/reach-v3")
        env.observation_space, env.action_space = obs_space, act_space
        return write_minari(where / "minari", episodes, env)
    if kind == "config":
        from embodied.config import RunOptions
        from embodied.runs import Run

        Run(where, "run", config=RunOptions(), tensorboard=False).close()
        return where / "run" / "config.json"
    if kind == "metrics":
        from embodied.runs import Run

        run = Run(where, "run", tensorboard=False)
        for step in range(1, 6):
            run.logger.log(step, {"eval/success_rate": step / 5, "eval/return": 10.0 * step})
        run.close()
        path = where / "run" / "metrics.jsonl"  # wall-clock times out, so that the file is the same every run
        path.write_text("".join(json.dumps({**json.loads(line), "time": 0.0}) + "\n" for line in path.open()))
        return path
    if kind == "labels":
        from agents.pearl.train import CONFIDENCE_KEYS
        from embodied.checkpoint import save_arrays

        return save_arrays(
            where / "labels.npz",
            {
                "first": np.arange(5),
                "second": np.arange(5)[::-1].copy(),
                "label": np.linspace(0, 1, 5),
                "accuracy": np.float64(0.9),
                "seconds": np.float64(1.0),
                **{k: np.float64(0.5) for k in CONFIDENCE_KEYS},
            },
        )
    if kind == "world_model":
        from agents.walle.transition_model import TransitionModel, observe
        from agents.walle.world_model import NeuroSymbolicWorldModel

        model = TransitionModel()
        observe(model, {"open": False, "held": False}, "open_drawer", {"open": True, "held": False}, None)
        model.save(where / "wm" / "model" / "iter_0")
        NeuroSymbolicWorldModel().save(where / "wm" / "rules" / "iter_0")
        (where / "wm" / "rules" / "iter_0" / "r_fail.py").write_text(
            "# fails when held\ndef r_fail(state, action, graphs):\n    return ('', not state.get('held'), '')\n"
        )
        return where / "wm"
    raise ValueError(kind)


def load(kind: str, path: Path) -> None:
    """The project's own reader for ``kind``, as a run, eval or report calls it."""
    if kind == "checkpoint":
        from embodied.checkpoint import load_checkpoint

        load_checkpoint(path)
    elif kind == "policy":
        from embodied.policies import load_policy_module

        load_policy_module(path).act([0.0] * 39)
    elif kind == "reward_model":
        from embodied.checkpoint import load_checkpoint, restoring
        from embodied.reward_models import GaussianRewardModel

        model = GaussianRewardModel(39, 4, hidden=8)
        with restoring(path):
            model.load_state_dict(load_checkpoint(path))
    elif kind in ("hdf5", "minari"):
        from embodied.data import load_episodes

        load_episodes(path)
    elif kind == "config":
        from embodied.config import RunOptions
        from embodied.runs import Run

        Run(path.parent.parent, path.parent.name, config=RunOptions(), resume=True, tensorboard=False).close()
    elif kind == "metrics":
        from embodied.report import find_runs

        find_runs(path.parent)
    elif kind == "labels":
        from agents.pearl.train import check_stored_labels
        from embodied.checkpoint import load_arrays, restoring

        with restoring(path):
            check_stored_labels(load_arrays(path, ("first", "second", "label", "accuracy", "seconds")), 5)
    elif kind == "world_model":
        from agents.walle.train import load_models

        load_models(path)
    else:
        raise ValueError(kind)


# --- mutations -----------------------------------------------------------------------------------------


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".lock") if path.is_dir() else [path]


def mutate(kind: str, path: Path, rng: random.Random) -> str:
    """Damage the valid ``path`` in place in one of many ways; returns the mutation's name."""
    target = rng.choice(files_of(path))
    data = target.read_bytes()
    generic = [
        "truncate",
        "bitflip",
        "insert",
        "zero_tail",
        "link_device",
        "link_elsewhere",
        "to_directory",
        "remove",
        "grow",
    ]
    special = {
        "checkpoint": ["tensor_layout", "zip_deflate"],
        "policy": ["tensor_layout", "policy_fields", "zip_deflate"],
        "reward_model": ["tensor_layout", "zip_deflate"],
        "hdf5": ["h5_structure"],
        "minari": ["h5_structure", "json_numbers"],
        "config": ["json_numbers", "json_nesting"],
        "metrics": ["json_numbers", "json_nesting", "long_line"],
        "labels": ["npz_arrays"],
        "world_model": ["json_numbers", "json_nesting", "rule_text"],
    }[kind]
    how = rng.choice(generic + special * 3)
    if how == "truncate":
        target.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif how == "bitflip":
        buf = bytearray(data)
        for _ in range(rng.choice([1, 4, 32])):
            if buf:
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(buf))
    elif how == "insert":
        at = rng.randrange(len(data) + 1)
        junk = rng.choice([b"\xff" * 8, b"\x00" * 64, b"[" * 5000, b"9" * 400, rng.randbytes(16)])
        target.write_bytes(data[:at] + junk + data[at:])
    elif how == "zero_tail":
        at = rng.randrange(len(data) + 1)
        target.write_bytes(data[:at] + b"\x00" * (len(data) - at))
    elif how == "link_device":
        target.unlink()
        target.symlink_to(rng.choice(["/dev/zero", "/dev/urandom", "/dev/null"]))
    elif how == "link_elsewhere":
        target.unlink()
        target.symlink_to(rng.choice(["/etc/passwd", "/nonexistent", str(target)]))
    elif how == "to_directory":
        target.unlink()
        target.mkdir()
    elif how == "remove":
        target.unlink()
    elif how == "grow":
        target.write_bytes(data + b"\x00" * (rng.choice([1, 20]) << 20))
    elif how == "tensor_layout":
        mutate_tensors(target, rng)
    elif how == "zip_deflate" and zipfile.is_zipfile(target):  # the same members, compressed (a zip bomb's form)
        with zipfile.ZipFile(target) as src:
            members = [(info.filename, src.read(info)) for info in src.infolist()]
        with zipfile.ZipFile(target, "w") as dst:
            for name, content in members:
                dst.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    elif how == "policy_fields":
        import torch

        payload = torch.load(target, weights_only=True)
        field = rng.choice(["kwargs", "target", "format", "state_dict"])
        payload[field] = rng.choice(
            [
                {"obs_dim": 39, "act_dim": 4, "hidden": 10**9},
                "os:system",
                None,
                [1, 2],
                {"net.0.weight": torch.zeros(3)},
            ]
        )
        torch.save(payload, target)
    elif how == "h5_structure" and target.suffix in (".hdf5", ".h5"):
        mutate_hdf5(target, rng)
    elif how in ("json_numbers", "json_nesting", "long_line") and target.suffix in (".json", ".jsonl"):
        text = data.decode("utf-8", "replace")
        if how == "json_numbers":
            import re

            numbers = list(re.finditer(r"-?\d+(\.\d+)?", text))
            if numbers:
                m = rng.choice(numbers)
                text = (
                    text[: m.start()]
                    + rng.choice(["1e400", "-1", "99999999999999999999", "NaN", "0", '"x"'])
                    + text[m.end() :]
                )
        elif how == "json_nesting":
            depth = rng.choice([100, 10_000, 200_000])
            text = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth]) + "\n" + text
        else:
            text += '{"step": 9, "x": ' + "1" * (1 << 20) + "}\n"
        target.write_text(text)
    elif how == "npz_arrays":
        import numpy as np

        with np.load(target) as z:
            arrays = {k: z[k] for k in z.files}
        key = rng.choice(sorted(arrays))
        arrays[key] = rng.choice(
            [
                np.array([10**9, -5]),
                np.array(["a", "b"]),
                np.zeros((3, 3)),
                np.array(np.nan),
                np.arange(5.0) + 0.5,
                np.zeros(0),
            ]
        )
        with open(target, "wb") as f:
            np.savez(f, **arrays)
        if rng.random() < 0.3:  # a member whose header declares far more than it holds
            import io

            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": (rng.choice([10**8, 10**12]),)}
            )
            with zipfile.ZipFile(target, "a") as z:
                z.writestr(f"{key}_bomb.npy", header.getvalue() + b"\0" * 64)
    elif how == "rule_text" and target.suffix == ".py":
        target.write_text(
            rng.choice(
                [
                    "# x\n# skill: open_drawer\ndef f(s, a, g):\n    return __import__('os').system('true')\n",
                    "# x\ndef r_fail(state, action, graphs):\n    len = r_fail\n    return len(state)\n",
                    "# x\n" + "(" * 5000 + ")" * 5000 + "\n",
                    "#" * 500_000,
                ]
            )
        )
    else:  # a special mutation that does not apply to the file picked: flip bits instead
        return mutate(kind, path, rng) if rng.random() < 0.9 else "none"
    return how


def mutate_tensors(path: Path, rng: random.Random) -> None:
    import torch

    payload = torch.load(path, weights_only=True)
    tensors = []

    def walk(obj, parent, key):
        if isinstance(obj, torch.Tensor):
            tensors.append((parent, key, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, obj, k)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, obj, i)

    walk(payload, None, None)
    if not tensors:
        return
    parent, key, t = rng.choice(tensors)
    n = max(t.numel(), 1)
    parent[key] = rng.choice(
        [
            torch.sparse_coo_tensor(torch.tensor([[0, 10**9]]), torch.tensor([1.0, 2.0]), (n,), check_invariants=False),
            torch.zeros(1).expand(*t.shape) if t.ndim else torch.zeros(1).expand(10**6),
            torch.zeros(t.shape, dtype=torch.complex64),
            torch.arange(float(n) + 3)[3:].reshape(t.shape),
            torch.zeros(1).expand(10**5, 10**4),
            torch.zeros(t.shape, dtype=torch.float64),
        ]
    )
    torch.save(payload, path)


def mutate_hdf5(path: Path, rng: random.Random) -> None:
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        groups = [g for g in f.values() if isinstance(g, h5py.Group)]
        how = rng.randrange(6)
        if how == 0:
            f.attrs["total_steps"] = rng.choice([10**12, -1, 2**62])
        elif how == 1:
            f.attrs["total_episodes"] = rng.choice([10**9, 0, -3])
        elif groups:
            g = rng.choice(groups)
            datasets = [k for k in g if isinstance(g[k], h5py.Dataset)]
            if how == 2 and datasets:  # a chunked array that was never written, declaring gigabytes
                name = rng.choice(datasets)
                shape = (g[name].shape[0],) + (10**6,) if g[name].ndim else (10**8,)
                del g[name]
                g.create_dataset(name, shape=shape, dtype=np.float64, chunks=True)
            elif how == 3 and datasets:
                name = rng.choice(datasets)
                del g[name]
                g[name] = np.array(["a", "b"], dtype=h5py.string_dtype())
            elif how == 4 and datasets:
                name = rng.choice(datasets)
                del g[name]
                g[name] = h5py.SoftLink("/" + rng.choice(list(f.keys())))
            elif datasets:
                name = rng.choice(datasets)
                del g[name]
                g[name] = h5py.ExternalLink("/etc/passwd", "/x")


# --- the worker: loads cases under the memory cap ------------------------------------------------------------


def worker() -> None:
    """Read ``{"kind", "path"}`` lines; answer one JSON line each: ok, error (EmbodiedError) or the exception."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.path.insert(0, str(ROOT))
    import envs  # noqa: F401  (ids for the dataset kinds)
    from embodied.errors import EmbodiedError

    for line in sys.stdin:
        case = json.loads(line)
        try:
            load(case["kind"], Path(case["path"]))
            answer = {"result": "ok"}
        except EmbodiedError as err:
            text = str(err)
            answer = {"result": "error" if "\n" not in text.strip() else "multiline", "message": text[:300]}
        except MemoryError:
            answer = {"result": "cap", "message": "MemoryError"}
        except BaseException as err:  # noqa: BLE001 - anything else is a traceback for the user
            answer = {"result": "traceback", "message": f"{type(err).__name__}: {str(err)[:300]}"}
        print(json.dumps(answer), flush=True)


class Worker:
    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def run(self, kind: str, path: Path, timeout: float) -> dict | None:
        """The worker's answer, or None if it died or did not answer in time (then it is killed)."""
        import select

        self.proc.stdin.write(json.dumps({"kind": kind, "path": str(path)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.kill()
            return None
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fuzz(cases: int, seed: int, timeout: float, out: Path | None = None, keep: Path | None = None) -> dict:
    """Run ``cases`` mutated files (kinds in turn); returns counts and the failures (their files copied under
    ``keep``, one directory per case, to reproduce them)."""
    sys.path.insert(0, str(ROOT))
    import envs  # noqa: F401

    import numpy as np
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)  # the valid files' weights and RNG states, so that a seed repeats every case
    np.random.seed(seed)
    random.seed(seed)
    work = Path(tempfile.mkdtemp(prefix="embodied-fuzz-"))
    results, failures = Counter(), []
    worker = Worker()
    start = time.monotonic()
    try:
        valid = {kind: make_valid(kind, work / "valid" / kind) for kind in KINDS}
        for kind, path in valid.items():  # the unmutated files must load
            answer = worker.run(kind, path, 120.0)  # the first case pays for the worker's imports
            if answer is None or answer["result"] != "ok":
                failures.append({"kind": kind, "mutation": "none (valid file)", "outcome": answer})
        for i in range(cases):
            kind = KINDS[i % len(KINDS)]
            case_dir = work / f"case{i}"
            shutil.copytree(valid[kind].parent, case_dir, symlinks=True)
            path = case_dir / valid[kind].name
            how = mutate(kind, path, rng)
            t0 = time.monotonic()
            answer = worker.run(kind, path, timeout)
            if answer is None:
                code = worker.proc.returncode
                outcome = "hang" if code == -9 and time.monotonic() - t0 >= timeout else f"crash ({code})"
                worker = Worker()
                answer = {"result": outcome}
            results[(kind, answer["result"])] += 1
            if answer["result"] not in ("ok", "error"):
                failures.append({"kind": kind, "mutation": how, "case": i, "outcome": answer})
                if keep is not None:
                    shutil.copytree(case_dir, keep / f"case{i}-{kind}", symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(case_dir, ignore_errors=True)
    finally:
        worker.kill()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "cases": cases,
        "seed": seed,
        "seconds": round(time.monotonic() - start, 1),
        "outcomes": {f"{k}/{r}": n for (k, r), n in sorted(results.items())},
        "failures": failures,
    }
    if out is not None:
        out.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--cases", type=int, default=2000, help="mutated files to load")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds a case may take before it counts as a hang"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the summary as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="copy each failing case's files here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    summary = fuzz(args.cases, args.seed, args.timeout, args.out, args.keep)
    print(
        f"{summary['cases']} cases (seed {summary['seed']}) in {summary['seconds']} s, memory cap "
        f"{MEMORY_CAP >> 20} MiB\n\n| kind | ok | one error line | failures |\n| --- | ---: | ---: | ---: |"
    )
    for kind in KINDS:
        counts = {r: n for k_r, n in summary["outcomes"].items() for k, r in [k_r.split("/")] if k == kind}
        bad = sum(n for r, n in counts.items() if r not in ("ok", "error"))
        print(f"| {kind} | {counts.get('ok', 0)} | {counts.get('error', 0)} | {bad} |")
    for f in summary["failures"]:
        print(f"FAILURE {f['kind']} {f['mutation']} case {f.get('case')}: {f['outcome']}")
    print(f"{len(summary['failures'])} failures")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
