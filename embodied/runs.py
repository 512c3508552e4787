"""A run directory per training run: config, metrics (TensorBoard + JSONL), checkpoints, videos.

Layout::

    <root>/<name>/config.json        resolved config of the run
    <root>/<name>/metrics.jsonl      one JSON object per logged step: {"step": .., "time": .., key: value}
    <root>/<name>/tb/                TensorBoard event files
    <root>/<name>/checkpoints/       last.pt (atomic), used by --resume
    <root>/<name>/videos/            evaluation videos
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tqdm.auto import tqdm

import torch

from embodied.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from embodied.config import save_config
from embodied.device import resolve_device
from embodied.errors import EmbodiedError


class Run:
    """Owns a run directory. ``resume=True`` reuses an existing one; otherwise it must not exist."""

    def __init__(self, root: str | Path, name: str, config: Any = None, resume: bool = False, tensorboard: bool = True):
        self.dir = Path(root).expanduser() / name
        if self.dir.exists() and not resume and any(self.dir.iterdir()):
            raise EmbodiedError(f"run directory {self.dir} already exists; pass --resume to continue it or choose another --run-name")
        for sub in ("checkpoints", "videos"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if config is not None:
            save_config(config, self.dir / "config.json")
        self.logger = MetricLogger(self.dir, tensorboard=tensorboard)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path, state)

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when the run has none yet."""
        return load_checkpoint(self.checkpoint_path) if self.checkpoint_path.exists() else None

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def close(self) -> None:
        self.logger.close()


def start_run(cfg: Any, default_name: str) -> tuple[Run, torch.device]:
    """What every training script does first: pick the device, seed, open the run directory.

    ``cfg`` carries ``device``, ``seed``, ``run_dir``, ``run_name``, ``resume`` (``RunOptions``).
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    run = Run(cfg.run_dir, cfg.run_name or default_name, config=cfg, resume=cfg.resume)
    print(f"run directory: {run.dir} (device {device})")
    return run, device


class MetricLogger:
    """Scalars to TensorBoard and to ``metrics.jsonl`` (machine-readable, appended, flushed each call)."""

    def __init__(self, directory: Path, tensorboard: bool = True):
        self._jsonl = open(directory / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(directory / "tb"))
        self._start = time.time()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": round(time.time() - self._start, 3)}
        record.update({k: (v if math.isfinite(v) else None) for k, v in clean.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0) -> Iterator:
    """A progress bar with rate and ETA (tqdm), on stderr."""
    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, mininterval=1.0)
