"""``embodied sweep``: seeds x grid values of one agent, each trial a run directory, run as Ray tasks.

    embodied sweep --agent parl --seeds 0,1,2,3,4 --grid method=parl,pebble,sac --out runs/study \\
        [--address ADDR] [--cpus-per-trial 1] [--max-retries 3] -- --task button-press-v3 --total-steps 30000

- ``--grid KEY=V1,V2`` axes are crossed; a linked axis ``--grid KEY1:KEY2=A1:B1,A2:B2`` sets its options
  together, point by point (PEARL's source -> target task pairs).
- Every trial is ``embodied train AGENT ... --seed S --run-dir OUT --run-name NAME --threads C`` in a
  child process of a Ray task that reserves C CPUs, so Ray never runs more trials than cores and
  each trial's torch uses exactly its share: oversubscription is impossible by construction.
- Idempotent: a trial whose ``summary.json`` exists is skipped; one whose directory exists
  otherwise is continued with ``--resume`` (from its last checkpoint).
- Robust: a trial whose Ray worker dies is retried by Ray (``--max-retries``); the child process
  dies with its worker (``PR_SET_PDEATHSIG``) so the retry can take the run's lock and resume.
- ``--gpus-per-trial F`` reserves F of a GPU per trial (a fraction below 1 puts several trials on one
  GPU, as Ray allows; whole numbers above 1); Ray sets each trial's ``CUDA_VISIBLE_DEVICES``. Where
  NVIDIA's multi-process service is installed and the sweep starts Ray itself, it runs for the
  sweep, so the trials' kernels share the GPU instead of taking turns. Without a GPU it is refused.
- ``--backend local`` runs the same trials as child processes of the sweep itself, as many at a time as
  the cores (and GPU shares) allow, for a machine without Ray; a trial killed by a signal is resumed
  from its checkpoint (``--max-retries`` times).
- Without ``--address`` a local Ray with all cores starts and stops with the sweep; with it the
  sweep joins a cluster. ``OUT`` should then be a shared path; if it is not, each trial's small
  files (config, metrics, summary) are copied back to ``OUT`` on the head, so that ``embodied
  report OUT`` works there (checkpoints and videos stay on the node that ran the trial).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import itertools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing
from typing import Any
from pathlib import Path

from embodied.atomic import atomic_path
from embodied.cli import AGENTS
from embodied.config import flag as option_flag
from embodied.config import (
    CommandParser,
    HelpFormatter,
    MAX_SEED,
    RunOptions,
    describe_differences,
    did_you_mean,
    differing_options,
    finite_float,
    option_types,
    parse_command_args,
    parse_config,
)
from embodied.errors import EmbodiedError, one_line
from embodied.safe_io import MAX_METRICS_BYTES, json_text, load_json, read_text

RESERVED = {"seed", "run_dir", "run_name", "resume", "threads"}  # the sweep sets these itself
SMALL_FILES = ("config.json", "metrics.jsonl", "summary.json")
FINAL_KEYS = ("final_success_rate", "success_rate", "final_return")
MAX_TRIALS = 10_000  # trials in one sweep
BUDGETS = ("total_steps", "iterations", "iql_steps")  # a finished run given more of one of these is continued


@dataclasses.dataclass
class Trial:
    name: str
    argv: list[str]  # options for `embodied train AGENT` without run dir/name/resume/threads
    settings: dict
    config: Any = None  # the agent's config these options give (what its run directory must hold)


def config_class(agent: str) -> type:
    if agent not in AGENTS:
        raise EmbodiedError(f"unknown agent {agent!r}; agents: {', '.join(sorted(AGENTS))}")
    module, name = AGENTS[agent]
    return getattr(importlib.import_module(module), name)


def parse_grid(items: list[str], cls: type) -> dict[str, list[str]]:
    """``["method=parl,pebble", ...]`` -> {"method": ["parl", "pebble"]}, checked against ``cls``'s fields.

    A linked axis sets several options together, point by point instead of as a cross product:
    ``source_task:target_task=plate-slide-v3:plate-slide-back-v3,drawer-open-v3:door-open-v3`` is two points
    (a task pair each), kept as one key ``"source_task:target_task"`` whose values are ``"A:B"``."""
    fields = option_types(cls)
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        keys = [k.strip().lstrip("-").replace("-", "_") for k in key.split(":")]
        if not sep or not all(keys) or not values:
            raise EmbodiedError(f"--grid {item!r}: expected KEY=V1,V2,... or KEY1:KEY2=A1:B1,A2:B2,...")
        # tuples take comma-separated values themselves: separate grid values with ';' for those
        split = ";" if any(typing.get_origin(fields.get(k)) in (tuple, list) for k in keys) else ","
        key = ":".join(keys)
        if key in grid:
            raise EmbodiedError(f"--grid names {key!r} twice")
        grid[key] = [v for v in values.split(split) if v != ""]
    return check_grid(grid, cls)


def check_grid(grid: dict[str, list[str]], cls: type) -> dict[str, list[str]]:
    """The grid, if every key names options of ``cls`` (once in all) and every value gives each of them one."""
    fields = option_types(cls)
    named: set[str] = set()
    for key, points in grid.items():
        for k in key.split(":"):
            if k not in fields:
                hint = did_you_mean(k.replace("-", "_"), fields) or "see embodied train AGENT --help"
                raise EmbodiedError(f"--grid {key}: {k!r} is not an option of this agent ({hint})")
            if k in RESERVED:
                raise EmbodiedError(f"--grid {key}: {k} is set by the sweep itself (use --seeds for seeds)")
            if k in named:
                raise EmbodiedError(f"--grid names {k!r} twice")
            named.add(k)
        if not points:
            raise EmbodiedError(f"--grid {key}: no values")
        if len(set(points)) != len(points):
            raise EmbodiedError(f"--grid {key} repeats a value")
        bad = [v for v in points if len(v.split(":")) != len(key.split(":"))]
        if bad:
            raise EmbodiedError(f"--grid {key}: {bad[0]!r} does not give one value for each of its options")
    return grid


def grid_point(key: str, value: str) -> dict[str, str]:
    """The options one grid value sets: ``{"method": "parl"}``, or for a linked axis one per option."""
    return dict(zip(key.split(":"), value.split(":"))) if ":" in key else {key: value}


def grid_options(grid: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every option the grid sets, with its distinct values in grid order (a linked axis's options apart)."""
    options: dict[str, list[str]] = {}
    for key, values in grid.items():
        for value in values:
            for k, v in grid_point(key, value).items():
                if v not in options.setdefault(k, []):
                    options[k].append(v)
    return options


def option_args(key: str, value: str, cls: type) -> list[str]:
    flag = option_flag(key)
    if key == "preset":
        return [flag, value]
    if option_types(cls)[key] is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise EmbodiedError(f"--grid {key}: {value!r} is not a boolean")
        return [flag if value.lower() in ("true", "1", "yes") else "--no-" + flag[2:]]
    return [flag, value]


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """Seeds as ``0,1,2``, a range ``0-9`` (both ends included), or both mixed (``0-4,7``): distinct, in
    [0, MAX_SEED], at most ``MAX_TRIALS`` of them, counted before a range is expanded (``0-1000000000000`` was a
    MemoryError, and a range of 1e9 would have filled the memory before failing)."""
    seeds = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            bounds = (int(lo), int(hi)) if dash and lo else (int(part), int(part))
            if len(seeds) + bounds[1] - bounds[0] + 1 > MAX_TRIALS:
                raise EmbodiedError(f"{option} {text!r}: more than {MAX_TRIALS} seeds")
            seeds += range(bounds[0], bounds[1] + 1)
    except ValueError:
        raise EmbodiedError(f"{option} {text!r}: expected integers like 0,1,2 or a range like 0-9") from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise EmbodiedError(f"{option} {text!r}: expected distinct integers in [0, {MAX_SEED}]")
    return seeds


def trial_name(agent: str, settings: dict, seed: int) -> str:
    parts = [agent] + [f"{k}={v}" for k, v in settings.items()] + [f"s{seed}"]
    return re.sub(r"[^A-Za-z0-9=.,_+-]+", "_", "-".join(parts))[:200]


def passes(key: str, argv: list[str]) -> bool:
    """Whether ``argv`` sets option ``key``: ``--key V``, ``--key=V``, or a boolean's ``--no-key``."""
    flag = option_flag(key)
    return any(a in (flag, "--no-" + flag[2:]) or a.startswith(flag + "=") for a in argv)


def plan(agent: str, seeds: list[int], grid: dict[str, list[str]], passthrough: list[str]) -> list[Trial]:
    """Every trial of the sweep, each config checked (``__post_init__`` too) before anything starts."""
    cls = config_class(agent)
    for key in RESERVED:
        if passes(key, passthrough):
            raise EmbodiedError(f"{option_flag(key)} is set by the sweep; do not pass it after --")
    for key in grid_options(grid):  # the grid's value would silently win over the one after --
        if passes(key, passthrough):
            raise EmbodiedError(f"{option_flag(key)} is set by --grid {key}; do not pass it after -- as well")
    count = len(seeds) * math.prod(len(values) for values in grid.values())
    if count > MAX_TRIALS:  # each is checked and gets a run directory: 200,000 seeds planned for minutes, silently
        raise EmbodiedError(f"the sweep has {count} trials (seeds x grid points), more than {MAX_TRIALS}")
    trials = []
    # seeds outermost: trials start in this order, so a sweep cut short has whole seeds of every setting
    for seed, values in itertools.product(seeds, list(itertools.product(*grid.values())) if grid else [()]):
        settings = {k: v for key, value in zip(grid, values) for k, v in grid_point(key, value).items()}
        extra = [a for k, v in settings.items() for a in option_args(k, v, cls)]
        argv = passthrough + extra + ["--seed", str(seed)]
        config = parse_config(cls, argv, prog=f"embodied train {agent}")  # bad options fail here, before Ray starts
        trials.append(Trial(trial_name(agent, settings, seed), argv, {**settings, "seed": seed}, config))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise EmbodiedError("two trials would share a run directory name; make grid values distinct")
    return trials


def trial_state(run_dir: Path, config: Any) -> str:
    """``"finished"`` (a finished run of these settings), ``"extend"`` (finished with a smaller budget: continue it),
    or ``"todo"`` (new, or stopped early: start or resume it). A run directory made with other settings is refused
    before anything starts: a finished one would pass for the trial's results, an unfinished one would fail late."""
    if not (run_dir / "config.json").exists():
        return "finished" if is_finished(run_dir) else "todo"
    saved = load_json(run_dir / "config.json", what="run config")
    if not isinstance(saved, dict):
        raise EmbodiedError(f"{run_dir}/config.json holds no settings; remove the run directory or use another --out")
    resumable = getattr(config, "RESUMABLE", RunOptions.RESUMABLE)
    finished = is_finished(run_dir)
    differ = differing_options(config, saved, RunOptions.RESUMABLE if finished else resumable)
    if not differ:
        return "finished" if finished else "todo"
    if finished and all(
        key in BUDGETS and key in resumable and isinstance(was, int) and value > was for key, value, was in differ
    ):
        return "extend"
    raise EmbodiedError(
        f"{run_dir} was {'run' if finished else 'started'} with other settings ({describe_differences(differ)}); "
        "give the sweep another --out, or remove that run directory"
    )


def is_finished(run_dir: Path) -> bool:
    try:
        load_json(run_dir / "summary.json", what="summary")
        return True
    except EmbodiedError:
        return False


def final_metric(summary: dict) -> tuple[str, float | None]:
    for key in FINAL_KEYS:
        if isinstance(summary.get(key), (int, float)):
            return key, float(summary[key])
    return "", None


def _die_with_parent() -> None:
    """In the child: SIGKILL when the Ray worker that started it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_trial(agent: str, argv: list[str], out: str, name: str, threads: int) -> dict:
    """Body of one Ray task: the training run in a child process; returns its small files."""
    run_dir = Path(out) / name
    if is_finished(run_dir):
        return {"name": name, "skipped": True, "files": {}}
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    start = time.time()
    for attempt in range(20):  # a killed predecessor releases the run's lock a moment after it dies
        resume = ["--resume"] if run_dir.exists() else []
        cmd = [
            sys.executable,
            "-m",
            "embodied.cli",
            "train",
            agent,
            *argv,
            "--run-dir",
            out,
            "--run-name",
            name,
            "--threads",
            str(threads),
            *resume,
        ]
        proc = subprocess.run(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
        )
        if proc.returncode == 0:
            break
        if "in use by another process" in proc.stderr and attempt < 19:
            time.sleep(1.0)
            continue
        raise TrialFailed(name, proc.returncode, proc.stderr)
    files = {f: read_text(run_dir / f, MAX_METRICS_BYTES, f) for f in SMALL_FILES if (run_dir / f).exists()}
    return {"name": name, "skipped": False, "seconds": time.time() - start, "files": files, "node": _node_id()}


class TrialFailed(RuntimeError):
    """A trial's process exited with an error; ``killed`` when a signal ended it (out of memory, a kill)."""

    def __init__(self, name: str, returncode: int, stderr: str):
        super().__init__(f"trial {name} failed (exit {returncode}): {stderr.strip()[-1500:]}")
        self.name, self.returncode, self.stderr = name, returncode, stderr
        self.killed = returncode < 0

    def __reduce__(self):  # Ray sends it back pickled
        return TrialFailed, (self.name, self.returncode, self.stderr)


def _node_id() -> str | None:
    """The Ray node this trial ran on (recorded in sweep.json: where to find its checkpoints on a cluster)."""
    try:
        import ray

        # only inside a Ray task: outside one (a local sweep), asking for the context would start a Ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # no Ray installed
        return None


def sync_back(out: Path, result: dict) -> None:
    """Write a trial's small files on this (head) machine if its run directory is not here."""
    run_dir = out / result["name"]
    if result["files"] and not is_finished(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, text in result["files"].items():
            (run_dir / name).write_text(text)


def check_gpus_per_trial(gpus: float, address: str | None) -> None:
    """A share Ray accepts (a fraction up to 1, or a whole number), and, for a local sweep, a GPU to share."""
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise EmbodiedError(f"--gpus-per-trial {gpus:g}: a fraction in (0, 1] or a whole number of GPUs")
    if gpus > 0 and address is None:
        found = local_gpu_count()
        if found == 0:
            raise EmbodiedError(
                f"--gpus-per-trial {gpus:g} needs a CUDA GPU, and this machine has none "
                "(leave the option out to run on the CPUs)"
            )
        if gpus > found:
            raise EmbodiedError(f"--gpus-per-trial {gpus:g} is more than this machine's {found} GPUs")


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def task_options(cpus: int, gpus: float, retries: int) -> dict:
    """What each trial's Ray task reserves."""
    return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": retries, "retry_exceptions": False}


def sweep(
    agent: str,
    seeds: list[int],
    grid: dict[str, list[str]],
    out: Path,
    passthrough: list[str],
    address: str | None = None,
    cpus_per_trial: int = 1,
    max_retries: int = 3,
    gpus_per_trial: float = 0.0,
    backend: str = "ray",
) -> list[dict]:
    if backend not in ("ray", "local"):
        raise EmbodiedError(f"--backend {backend!r}: ray or local")
    if backend == "local" and address is not None:
        raise EmbodiedError("--backend local runs on this machine: leave out --address")
    check_gpus_per_trial(gpus_per_trial, address)
    if address is None and cpus_per_trial > (os.cpu_count() or 1):  # before --out is made
        raise EmbodiedError(f"--cpus-per-trial {cpus_per_trial} is more than this machine's {os.cpu_count()} CPUs")
    trials = plan(agent, seeds, grid, passthrough)
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    states = {t.name: trial_state(out / t.name, t.config) for t in trials}  # all checked before any trial starts
    for t in trials:
        if states[t.name] == "extend":  # its summary described the shorter run; without it the run is resumed
            print(f"sweep: {t.name} continues to the larger budget")
            (out / t.name / "summary.json").unlink()
    todo = [t for t in trials if states[t.name] != "finished"]
    gpu_note = f", {gpus_per_trial:g} GPU" if gpus_per_trial else ""
    print(
        f"sweep: {len(trials)} trials ({len(trials) - len(todo)} finished already), {cpus_per_trial} CPU"
        f"{gpu_note} each, out {out}"
    )
    rows = [{"name": t.name, "status": "done before", **_summary_fields(out / t.name)} for t in trials if t not in todo]
    if todo and backend == "local":
        rows += _run_locally(agent, todo, out, cpus_per_trial, max_retries, gpus_per_trial)
    elif todo:
        rows += _run_on_ray(agent, todo, out, address, cpus_per_trial, max_retries, gpus_per_trial)
    rows.sort(key=lambda r: r["name"])
    print_table(rows)
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(
            json_text(
                {
                    "agent": agent,
                    "seeds": seeds,
                    "grid": grid,
                    "passthrough": passthrough,
                    "cpus_per_trial": cpus_per_trial,
                    "gpus_per_trial": gpus_per_trial,
                    "backend": backend,
                    "trials": rows,
                },
                indent=2,
            )
        )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise EmbodiedError(f"{len(failed)} of {len(rows)} trials failed: {', '.join(r['name'] for r in failed)}")
    return rows


def _summary_fields(run_dir: Path) -> dict:
    try:
        key, value = final_metric(load_json(run_dir / "summary.json", what="summary"))
    except (EmbodiedError, AttributeError):
        key, value = "", None
    return {"metric": key, "value": value}


class _MPS:
    """NVIDIA's multi-process service for the sweep's lifetime, where its control binary exists (else nothing).

    Without it, processes sharing a GPU time-slice it: one process's kernels at a time. With it, the
    trials' small kernels run side by side. Started before Ray, so every worker inherits the pipe.
    """

    def __init__(self):
        self.control = shutil.which(
            "nvidia-cuda-mps-control", path=os.environ.get("PATH", "") + ":/usr/local/nvidia/bin"
        )
        self.started = False

    def __enter__(self):
        if self.control and "CUDA_MPS_PIPE_DIRECTORY" not in os.environ:
            base = Path(tempfile.mkdtemp(prefix="embodied-mps-"))
            os.environ["CUDA_MPS_PIPE_DIRECTORY"] = str(base / "pipe")
            os.environ["CUDA_MPS_LOG_DIRECTORY"] = str(base / "log")
            for sub in ("pipe", "log"):
                (base / sub).mkdir()
            self.started = subprocess.run([self.control, "-d"], capture_output=True).returncode == 0
            if not self.started:
                del os.environ["CUDA_MPS_PIPE_DIRECTORY"], os.environ["CUDA_MPS_LOG_DIRECTORY"]
        print(f"sweep: NVIDIA MPS {'on' if self.started else 'off (not installed or not startable)'}")
        return self

    def __exit__(self, *exc):
        if self.started:
            subprocess.run([self.control], input="quit\n", text=True, capture_output=True)
            os.environ.pop("CUDA_MPS_PIPE_DIRECTORY", None)
            os.environ.pop("CUDA_MPS_LOG_DIRECTORY", None)


def _run_on_ray(
    agent: str, trials: list[Trial], out: Path, address: str | None, cpus: int, retries: int, gpus: float = 0.0
) -> list[dict]:
    if 0 < gpus < 1 and address is None:
        with _MPS():
            return _run_on_ray_now(agent, trials, out, address, cpus, retries, gpus)
    return _run_on_ray_now(agent, trials, out, address, cpus, retries, gpus)


def _run_on_ray_now(
    agent: str, trials: list[Trial], out: Path, address: str | None, cpus: int, retries: int, gpus: float
) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise EmbodiedError("embodied sweep needs Ray: pip install -e '.[sweep]'") from None
    started_here = address is None
    if started_here:
        # Ray runs its workers at nice 15 by default, so any other job on the machine starved the
        # trials (measured: a PARL trial 3-4x slower beside one unrelated process); trials are the work here.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(
            address="local",  # a Ray of its own: never a cluster that happens to run here (or a stale record of one)
            num_cpus=os.cpu_count(),
            num_gpus=local_gpu_count() if gpus else 0,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as err:  # Ray's own errors, multi-line: one line that says what to do
            text = one_line(err, 200)
            hint = (
                "; the cluster uses token authentication: copy the head's ~/.ray/auth_token to this machine (or set "
                "RAY_AUTH_TOKEN) and set RAY_AUTH_MODE=token"
                if "token" in text.lower() or "authenticat" in text.lower()
                else "; is `ray start --head` running there, and is its port reachable?"
            )
            raise EmbodiedError(f"cannot join the Ray cluster at {address}: {text}{hint}") from None
    try:
        total = int(ray.cluster_resources().get("CPU", 0))
        if cpus > total:
            raise EmbodiedError(f"--cpus-per-trial {cpus} is more than the cluster's {total} CPUs")
        total_gpus = ray.cluster_resources().get("GPU", 0)
        if gpus > total_gpus:
            raise EmbodiedError(f"--gpus-per-trial {gpus:g} is more than the cluster's {total_gpus:g} GPUs")
        task = ray.remote(**task_options(cpus, gpus, retries))(run_trial)
        pending = {task.remote(agent, t.argv, str(out), t.name, cpus): t for t in trials}
        rows = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(done[0])
            try:
                row = _finished_row(out, trial, ray.get(done[0]))
            except Exception as err:  # the trial's own failure (after Ray's retries for worker deaths)
                row = _failed_row(trial, err)
            _report_progress(rows, row, len(trials))
        return rows
    finally:
        ray.shutdown()


def _finished_row(out: Path, trial: Trial, result: dict) -> dict:
    sync_back(out, result)
    return {
        "name": trial.name,
        "status": "skipped" if result["skipped"] else "finished",
        "seconds": round(result.get("seconds", 0.0), 1),
        "node": result.get("node"),
        **_summary_fields(out / trial.name),
    }


def _failed_row(trial: Trial, err: Exception) -> dict:
    return {"name": trial.name, "status": "failed", "error": str(err).strip().splitlines()[-1][:300]}


def _report_progress(rows: list[dict], row: dict, total: int) -> None:
    rows.append(row)
    value = "" if row.get("value") is None else f" {row['metric']} {row['value']:.3f}"
    seconds = f" {row['seconds']}s" if "seconds" in row else ""  # a failed trial has no time
    print(
        f"[{len(rows)}/{total}] {row['status']:8s} {row['name']}{seconds}{value}"
        + (f" ({row['error']})" if "error" in row else ""),
        flush=True,
    )


def _run_locally(agent: str, trials: list[Trial], out: Path, cpus: int, retries: int, gpus: float) -> list[dict]:
    """The trials as child processes of this one, without Ray: as many at a time as fit the cores (``cpus``
    each) and the GPUs (``gpus`` of one each); a trial killed by a signal is resumed up to ``retries`` times."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    total = os.cpu_count() or 1  # sweep() has refused a cpus over it before --out was made
    slots = total // cpus
    if gpus:
        slots = min(slots, max(1, int(local_gpu_count() / gpus + 1e-9)))

    def attempt(trial: Trial) -> dict:
        for _ in range(retries):
            try:
                return run_trial(agent, trial.argv, str(out), trial.name, cpus)
            except TrialFailed as err:
                if not err.killed:
                    raise
                print(f"sweep: {trial.name} was killed; resuming it from its checkpoint", flush=True)
        return run_trial(agent, trial.argv, str(out), trial.name, cpus)  # the last try: its failure is the trial's

    print(f"sweep: {slots} trials at a time on this machine (no Ray)")
    rows: list[dict] = []
    with _MPS() if 0 < gpus < 1 else contextlib.nullcontext(), ThreadPoolExecutor(slots) as pool:
        futures = {pool.submit(attempt, t): t for t in trials}
        for future in as_completed(futures):
            trial = futures[future]
            try:
                row = _finished_row(out, trial, future.result())
            except Exception as err:
                row = _failed_row(trial, err)
            _report_progress(rows, row, len(trials))
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| trial | status | seconds | final metric |\n| --- | --- | ---: | ---: |")
    for r in rows:
        value = "" if r.get("value") is None else f"{r['metric']} = {r['value']:.3f}"
        print(f"| {r['name']} | {r['status']} | {r.get('seconds', '')} | {value} |")


def main(argv: list[str]) -> int:
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    else:
        passthrough = []
    parser = CommandParser(
        prog="embodied sweep",
        allow_abbrev=False,
        description="Run seeds x grid values of one agent as Ray tasks.",
        formatter_class=HelpFormatter,
        epilog="Options after -- go to every trial (embodied train AGENT --help lists them).",
    )
    parser.add_argument("--agent", required=True, help=f"one of {', '.join(sorted(AGENTS))}")
    parser.add_argument("--seeds", default="0,1,2", help="seeds: comma-separated, or a range like 0-9")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an agent option and its values (repeat for a cross product; ';' separates tuple values); "
        "KEY1:KEY2=A1:B1,A2:B2 sets two options together, point by point (e.g. source and target task)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory that holds one run directory per trial")
    parser.add_argument(
        "--address", default=None, help="join this Ray cluster (default: start a local one on all cores)"
    )
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs (and torch threads) reserved per trial")
    parser.add_argument(
        "--gpus-per-trial",
        type=finite_float,
        default=0.0,
        help="GPU share per trial: 0.25 runs four trials on each GPU (Ray's fractional GPUs; MPS where "
        "installed); 0: CPU only",
    )
    parser.add_argument(
        "--max-retries", type=int, default=3, help="retries of a trial whose worker (or, local, process) was killed"
    )
    parser.add_argument(
        "--backend",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray tasks (a local Ray, or a cluster with --address); local: child processes of this sweep, "
        "for a machine without Ray",
    )
    args = parse_command_args(parser, argv)
    if args is None:
        return 0
    seeds = parse_seeds(args.seeds)
    if args.cpus_per_trial <= 0 or args.max_retries < 0:
        raise EmbodiedError("--cpus-per-trial must be positive and --max-retries >= 0")
    grid = parse_grid(args.grid, config_class(args.agent))
    sweep(
        args.agent,
        seeds,
        grid,
        args.out,
        passthrough,
        args.address,
        args.cpus_per_trial,
        args.max_retries,
        args.gpus_per_trial,
        args.backend,
    )
    return 0
