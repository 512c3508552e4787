"""A run directory per training run: config, metrics (TensorBoard + JSONL), checkpoints, videos.

Layout::

    <root>/<name>/config.json        resolved config of the run
    <root>/<name>/system.json        the versions it started with (Python, torch, MuJoCo, ...) and the machine
    <root>/<name>/metrics.jsonl      one JSON object per logged step: {"step": .., "time": .., key: value}
    <root>/<name>/tb/                TensorBoard event files
    <root>/<name>/checkpoints/       last.pt (atomic), used by --resume
    <root>/<name>/videos/            evaluation videos
    <root>/<name>/.lock              held (flock) by the one process writing the run

One process writes a run at a time (an OS lock; a second one is refused). ``Run.save`` stores,
beside the agent's state, the global random generators and how many metric rows were written;
``Run.load`` restores both, dropping metric rows logged after the checkpoint, so a killed run
resumes to the same result and logs every step once; ``Run.restoring`` wraps the code that puts the
agent's state back, so a checkpoint that loads but does not fit the run is one clear error.
``Run.catch_interrupts`` turns the first Ctrl-C into a request the training loop answers at
``Run.stop`` by saving and raising ``RunInterrupted``. ``Stages`` is a pipeline of steps whose
outputs are files of the run (PEARL: labels, reward model, policy): a resumed run reuses a stage's
output only when the checkpoint records the stage as finished, and logs its metrics once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tqdm.auto import tqdm

import torch

from embodied.allocator import keep_freed_memory
from embodied.atomic import WRITE_FAILURES, atomic_path, missing_dirs, remove_empty, remove_stale_temps
from embodied.checkpoint import load_checkpoint, restoring, rng_state, save_checkpoint, seed_everything, set_rng_state
from embodied.config import check_resume, save_config
from embodied.device import resolve_device
from embodied.errors import EmbodiedError
from embodied.safe_io import MAX_METRIC_LINE, MAX_METRICS_BYTES, file_size, json_depth, json_text, load_json


class RunInterrupted(Exception):
    """The user pressed Ctrl-C; the run saved a checkpoint at ``step`` and stopped."""

    def __init__(self, step: int, directory: Path):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {directory}; resume with --resume")
        self.step, self.directory = step, directory


class Run:
    """Owns a run directory. ``resume=True`` reuses an existing one; otherwise it must not exist."""

    def __init__(self, root: str | Path, name: str, config: Any = None, resume: bool = False, tensorboard: bool = True):
        if not name or name in (".", "..") or "/" in name or "\0" in name:  # '/abs' or '../x' would leave --run-dir
            raise EmbodiedError(f"--run-name {name!r}: one directory name under --run-dir (no '/', not '.' or '..')")
        self.dir = Path(root).expanduser() / name
        self._tensorboard = tensorboard
        for path in (self.dir.parent, self.dir):  # a link would put the run (and its lock) wherever it points
            if path.is_symlink():
                raise EmbodiedError(
                    f"{'run directory' if path == self.dir else '--run-dir'} {path} is a symbolic "
                    f"link; refusing to write through it (pass the real directory)"
                )
        made = missing_dirs(self.dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EmbodiedError(f"cannot create run directory {self.dir}: {err.strerror}") from None
        self._lock = None
        try:
            self._open(config, resume)
        except BaseException as err:  # the lock is released whatever stopped the start
            self._release()
            if made and isinstance(err, OSError) and err.errno in WRITE_FAILURES:  # a full disk: a new directory
                shutil.rmtree(self.dir, ignore_errors=True)
                remove_empty(made[1:])  # --run-dir too, where this run made it
            raise
        self._stop = threading.Event()
        self._previous_handler = None
        _OPEN_RUNS.add(self)
        self._resumed_rngs: dict | None = None  # the global RNG states of the checkpoint load() read

    def _open(self, config: Any, resume: bool) -> None:
        """Lock the directory, check it may be used, save the config and open the metric logs (``__init__``
        releases the lock if any of it fails)."""
        self._lock = lock_run_dir(self.dir)
        if not resume and any(p.name != ".lock" for p in self.dir.iterdir()):
            raise EmbodiedError(
                f"run directory {self.dir} already exists; pass --resume to continue it or choose another --run-name"
            )
        if resume:
            remove_stale_temps(self.dir)  # writes a kill cut short, under the lock this process now holds
        for sub in ("checkpoints", "videos"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if config is not None:
            if resume and (self.dir / "config.json").exists():
                check_resume(config, self._saved_config())
            save_config(config, self.dir / "config.json")
            record_system(self.dir / "system.json")
        self.logger = MetricLogger(self.dir, tensorboard=self._tensorboard)  # refuses an unreadable metrics.jsonl

    def _saved_config(self) -> dict:
        path = self.dir / "config.json"
        try:
            saved = load_json(path, what="run config")
        except EmbodiedError as err:  # too large or deep, not JSON, not UTF-8 text, not a file
            said = str(err).replace(f"run config {path}", "it").replace(str(path), "it")  # the path is said once
            raise EmbodiedError(f"cannot read {path} to resume: {said}") from None
        if not isinstance(saved, dict):  # a list or a string has no keys to compare: the check would pass unseen
            raise EmbodiedError(
                f"cannot resume: {path} holds {type(saved).__name__}, not the run's settings (an object)"
            )
        return saved

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    def save(self, state: dict[str, Any]) -> None:
        """Checkpoint ``state`` plus the global RNG states and the metric rows written so far."""
        save_checkpoint(self.checkpoint_path, {**state, "_run": {"rng": rng_state(), "metrics_rows": self.logger.rows}})

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint (global RNGs restored, later metric rows dropped), or None when there is none."""
        if not self.checkpoint_path.exists():
            self.logger.truncate(0)  # a run that never checkpointed starts again from nothing
            return None
        state = load_checkpoint(self.checkpoint_path)
        with self.restoring():
            meta = state.pop("_run", None)
            if meta is not None:
                set_rng_state(meta["rng"])
                self._resumed_rngs = meta["rng"]
                rows = int(meta["metrics_rows"])
                if rows < 0:
                    raise ValueError(f"it counts {rows} metric rows")
                self.logger.truncate(rows)
        return state

    def restore_rngs(self) -> None:
        """Set the global RNGs again as the loaded checkpoint saved them (no checkpoint: nothing).

        ``load()`` sets them already; a run whose code between ``load()`` and the point it continues from draws
        random numbers (a network built, an evaluation redone) calls this at that point, so what follows draws as
        the uninterrupted run did."""
        if self._resumed_rngs is not None:
            with self.restoring():
                set_rng_state(self._resumed_rngs)

    def restoring(self, path: Path | None = None):
        """``embodied.checkpoint.restoring`` for this run's checkpoint (or another file of the run)."""
        return restoring(path or self.checkpoint_path)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """``summary.json``, atomically: its presence marks a finished run (``embodied sweep`` skips it)."""
        with atomic_path(self.dir / "summary.json") as tmp:
            tmp.write_text(json_text(summary, indent=2))

    def finish(self, summary: Mapping[str, Any]) -> None:
        """How every run ends: ``summary.json`` (atomically), the logger and lock released, and one JSON line
        on stdout with the run directory and the summary's entries that are not lists (curves stay in the file)."""
        self.write_summary(summary)
        self.close()
        shown = {"run": str(self.dir), **{k: v for k, v in summary.items() if not isinstance(v, (list, tuple))}}
        print(json_text(shown))

    def catch_interrupts(self) -> None:
        """Make the first Ctrl-C a stop request (answered at ``stop``); a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum, frame):
            self._stop.set()
            signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)
            print(
                "\nstopping after this step with a checkpoint, or finishing if it is the last "  # the loop decides
                "(Ctrl-C again to stop at once, without one)",
                flush=True,
            )

        self._previous_handler = signal.signal(signal.SIGINT, request_stop)

    def stop(self, step: int, checkpoint) -> None:
        """If a stop was requested: ``checkpoint()``, then raise ``RunInterrupted``."""
        if self._stop.is_set():
            checkpoint()
            self.close()
            raise RunInterrupted(step, self.dir)

    def close(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        try:
            if not self.logger.closed:
                self.logger.close()
        finally:  # a close that failed (a full disk) still releases the directory
            self._release()
            _OPEN_RUNS.discard(self)

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


_OPEN_RUNS: "weakref.WeakSet[Run]" = weakref.WeakSet()


def close_open_runs() -> None:
    """Close the runs an error left open (lock, metric file, Ctrl-C handler), so that the same process can
    ``--resume`` them: a run that stopped with an error still held its directory's lock for the process's life."""
    for run in list(_OPEN_RUNS):
        try:
            run.close()
        except OSError:  # a full disk failing the close too: the error that ended the run is the one to report
            pass


def lock_run_dir(directory: Path) -> int:
    """An exclusive ``flock`` on ``directory/.lock``, held until the fd is closed or the process dies."""
    try:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:  # ELOOP: .lock is a symbolic link
        raise EmbodiedError(f"cannot lock run directory {directory}: {directory / '.lock'}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise EmbodiedError(
            f"run directory {directory} is in use by another process"
            f"{f' (pid {holder})' if holder else ''}; wait for it to finish or choose another --run-name"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError as err:  # a full disk
        os.close(fd)
        raise OSError(err.errno, err.strerror, str(directory / ".lock")) from None
    return fd


def set_threads(threads: int) -> int:
    """Set torch's CPU threads deliberately (0: one per core); oversubscribed cores slow training ~50x."""
    cpus = os.cpu_count() or 1
    if threads < 0:
        raise EmbodiedError(f"--threads must be >= 0, got {threads}")
    if threads > cpus:  # torch starts every thread it is given: --threads 1000000000 exhausted the host
        raise EmbodiedError(f"--threads {threads} is more than this machine's {cpus} CPUs (0: one per core)")
    count = threads or cpus
    torch.set_num_threads(count)
    return count


SYSTEM_PACKAGES = ("torch", "numpy", "mujoco", "metaworld", "gymnasium", "stable_baselines3", "pot", "minari")


def system_info() -> dict[str, Any]:
    """What a result depends on beyond its config: the versions of the project, Python and the libraries that
    compute it, and the machine (Stable-Baselines3 keeps the same beside each saved model)."""
    import platform
    from importlib import metadata

    import embodied

    versions = {"embodied": embodied.__version__, "python": platform.python_version()}
    for name in SYSTEM_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]  # 0 without CUDA
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "cuda": torch.version.cuda, "gpus": gpus}
    return {"versions": versions, "machine": machine}


def recorded_versions(run_dir: Path) -> dict[str, str | None] | None:
    """The versions a run started with, from its ``system.json``; None for a run made before runs recorded them,
    or a file that is not what a run writes."""
    if not (run_dir / "system.json").exists():
        return None
    try:
        system = load_json(run_dir / "system.json", what="system info")
    except EmbodiedError:
        return None
    versions = system.get("versions") if isinstance(system, dict) else None
    plain = isinstance(versions, dict) and all(isinstance(v, str) or v is None for v in versions.values())
    return versions if plain else None


def record_system(path: Path) -> None:
    """Write ``system.json`` for a new run; a resumed one keeps the versions it started with, and a library
    that changed since is said on stderr (a resumed run is then not the run it would have been)."""
    now = system_info()
    was = recorded_versions(path.parent)
    if was is not None:
        changed = [f"{k} {was.get(k)} -> {v}" for k, v in now["versions"].items() if was.get(k) != v]
        if changed:
            print(f"warning: {path.parent} resumes with other versions: {', '.join(changed)}", file=sys.stderr)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(now, indent=2) + "\n")


def start_run(cfg: Any, default_name: str) -> tuple[Run, torch.device]:
    """What every training script does first: pick the device, seed, open the run directory.

    ``cfg`` carries ``device``, ``seed``, ``run_dir``, ``run_name``, ``resume`` (``RunOptions``).
    """
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)
    keep_freed_memory()
    seed_everything(cfg.seed)
    run = Run(cfg.run_dir, cfg.run_name or default_name, config=cfg, resume=cfg.resume)
    run.catch_interrupts()
    print(f"run directory: {run.dir} (device {device})")
    return run, device


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An ``OSError`` inside re-raised naming ``path``: a failed ``write()`` (a full disk), and TensorBoard's
    writer, name no file, and the error line would say only what failed, not where."""
    try:
        yield
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err


class MetricLogger:
    """Scalars to TensorBoard and to ``metrics.jsonl`` (machine-readable, appended, flushed each call)."""

    def __init__(self, directory: Path, tensorboard: bool = True):
        self.path = directory / "metrics.jsonl"
        lines = metric_file_lines(self.path) if self.path.exists() else []
        self.rows = len(parse_metric_lines(lines, self.path))
        self._jsonl = open(self.path, "a", buffering=1)
        self.closed = False
        if len(lines) > self.rows:
            self.truncate(self.rows, force=True)  # drop a line cut off by a kill
        self._tb = None
        self._tb_dir = directory / "tb"
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            with naming(self._tb_dir):
                self._tb = SummaryWriter(str(self._tb_dir))
        self._start = time.time()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.time() - self._start, 3), **clean}
        with naming(self.path):  # a full disk
            self._jsonl.write(json_text(record) + "\n")
        self.rows += 1
        if self._tb is not None:
            with naming(self._tb_dir):
                for key, value in clean.items():
                    self._tb.add_scalar(key, value, step)

    def truncate(self, rows: int, force: bool = False) -> None:
        """Keep only the first ``rows`` rows (those a checkpoint has seen), atomically."""
        if rows >= self.rows and not force:
            return
        self._jsonl.close()
        with open(self.path) as f:
            kept = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()][:rows]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(kept))
        self.rows = len(kept)
        self._jsonl = open(self.path, "a", buffering=1)

    def close(self) -> None:
        self._jsonl.close()
        self.closed = True
        if self._tb is not None:
            with naming(self._tb_dir):
                self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    return parse_metric_lines(metric_file_lines(path), path)


def metric_file_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a metrics file; one that cannot be read as text is an ``EmbodiedError``."""
    file_size(path, MAX_METRICS_BYTES, "metrics file")
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            while line := f.readline(MAX_METRIC_LINE + 1):
                if len(line) > MAX_METRIC_LINE:
                    raise EmbodiedError(
                        f"{path}, record {len(lines) + 1}: a line over {MAX_METRIC_LINE} characters "
                        f"is not a metric record"
                    )
                if line.strip():
                    lines.append(line)
    except (OSError, UnicodeDecodeError) as err:
        raise EmbodiedError(f"cannot read {path}: {err}") from None
    return lines


def parse_metric_lines(lines: Iterable[str], path: str | Path = "metrics.jsonl") -> list[dict]:
    """JSON records of non-blank lines, up to the first that does not parse (a line cut off by a
    kill: it and anything after it are not data). A line that parses but is not a record as
    ``MetricLogger.log`` writes it (an integer step, numbers or nulls) was not cut off but written
    by something else: an ``EmbodiedError`` naming it, not a crash in whatever reads the rows."""
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            if json_depth(line) > 1:  # a record is one flat object; deeper is not ours (and not cut off)
                raise EmbodiedError(
                    f"{path}, record {number}: {line.strip()[:100]!r} is not a metric record "
                    f"(an integer step and numbers)"
                )
            try:
                row = json.loads(line)
            except ValueError:
                break
            row = metric_record(row)
            if row is None:
                raise EmbodiedError(
                    f"{path}, record {number}: {line.strip()[:100]!r} is not a metric record "
                    f"(an integer step and numbers)"
                )
            rows.append(row)
    return rows


MAX_STEP = 2**53  # a step's magnitude: float64 holds every integer up to it (curves and tables compute in floats)
MAX_METRIC = 3.4028234663852886e38  # float32's largest finite value: no training metric goes beyond it


def metric_record(row: Any) -> dict | None:
    """``row`` as ``MetricLogger.log`` writes it (an integer step, numbers or nulls), or None if it is not one.
    A NaN or infinite number (Python's json reads the bare ``NaN``, ``Infinity`` and an overflowing ``1e400``) is
    None, what the logger writes for it: statistics over runs skip it instead of turning NaN or infinite. So is a
    number beyond float32's range (an integer of 400 digits, ``1e308``): no metric reaches it, and a mean over runs
    of such values overflows. A step beyond ``MAX_STEP`` makes it no record."""
    if not (
        isinstance(row, dict)
        and type(row.get("step")) is int
        and abs(row["step"]) <= MAX_STEP
        and all(v is None or type(v) in (int, float) for v in row.values())
    ):
        return None
    return {k: v if k == "step" or v is None or abs(v) <= MAX_METRIC else None for k, v in row.items()}


_BARS: "weakref.WeakSet[tqdm]" = weakref.WeakSet()


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0) -> Iterator:
    """A progress bar with rate and ETA (tqdm), on stderr."""
    bar = tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, mininterval=1.0)
    _BARS.add(bar)
    return bar


def close_progress_bars() -> None:
    """End the open progress bars' lines, so that a message printed next (an error) starts a line of its own."""
    for bar in list(_BARS):
        bar.close()


class Stages:
    """The finished stages of a run's pipeline, kept in its checkpoint (``state["stages"]``).

    ``output(name, path, make, save, load)`` returns the stage's output: read back by ``load`` (inside
    ``Run.restoring``, so a file that does not fit is one clear error) when a resumed run finished the stage and
    its file is there, else made by ``make`` and written by ``save``. ``finish(name, metrics)`` then logs the
    stage's metrics at step 0 (once: a resumed run logged them already) and checkpoints it as finished. A stage
    cut off between the two is redone. A run resumed from the checkpoint a ``finish`` wrote gets the global RNGs
    back at that ``finish``: what it redid on the way (models built, evaluations) drew random numbers the
    uninterrupted run drew before saving them. A stage that checkpoints inside itself adds its own keys to the
    checkpoint and calls ``run.restore_rngs()`` where it continues.
    """

    def __init__(self, run: Run, resumed: dict):
        self.run = run
        with run.restoring():
            self.finished = [str(name) for name in resumed.get("stages", [])]
        self._resumed_at_finish = bool(self.finished) and set(resumed) == {"stages"}

    def __contains__(self, name: str) -> bool:
        return name in self.finished

    def output(self, name: str, path: Path, make, save, load):
        if name in self.finished and path.exists():
            with self.run.restoring(path):
                return load(path)
        value = make()
        save(path, value)
        return value

    def finish(self, name: str, metrics: Mapping[str, float] | None = None) -> None:
        if name in self.finished:
            if self._resumed_at_finish and name == self.finished[-1]:
                self.run.restore_rngs()
            return
        if metrics:
            self.run.logger.log(0, dict(metrics))
        self.finished.append(name)
        self.run.save({"stages": self.finished})
