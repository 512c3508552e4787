"""Atomic checkpoints that cannot run code when loaded, and the random state to resume exactly.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: PyTorch's restricted
unpickler accepts tensors and plain containers and refuses everything else, so a forged file
whose pickle would run code is refused before anything runs. To make real checkpoints fit,
``save_checkpoint`` stores what is not a tensor or a plain value in tagged plain form (NumPy
arrays as tensors, paths as strings, a short allowlist of dataclasses as their fields) and
``load_checkpoint`` turns it back.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
from collections import deque
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Iterator

import numpy as np
import torch

from embodied.atomic import atomic_path
from embodied.errors import EmbodiedError

SAFE_DATACLASSES = {"embodied.teacher:Preferences"}  # the only classes a checkpoint may name


def to_plain(obj: Any) -> Any:
    """``obj`` with NumPy arrays, paths, deques, sets and allowlisted dataclasses in weights-only form."""
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint a NumPy array of dtype {obj.dtype}")
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, (list, deque)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [to_plain(v) for v in obj]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = f"{type(obj).__module__}:{type(obj).__qualname__}"
        if name not in SAFE_DATACLASSES:
            raise TypeError(f"cannot checkpoint {name}: add it to SAFE_DATACLASSES or store its fields")
        return {"__dataclass__": name, "fields": {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def from_plain(obj: Any) -> Any:
    """The inverse of ``to_plain``."""
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        if set(obj) == {"__set__"}:
            return set(from_plain(v) for v in obj["__set__"])
        if set(obj) == {"__dataclass__", "fields"}:
            name = obj["__dataclass__"]
            if name not in SAFE_DATACLASSES:
                raise EmbodiedError(f"checkpoint names class {name!r}, which is not allowed")
            module, _, qualname = name.partition(":")
            return getattr(importlib.import_module(module), qualname)(**from_plain(obj["fields"]))
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` of the plain form to a temp file, then rename: never half a checkpoint."""
    plain = to_plain(state)
    with atomic_path(path) as tmp:
        torch.save(plain, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a file that would run code or is corrupt gives one clear error."""
    path = Path(path)
    if not path.exists():
        raise EmbodiedError(f"checkpoint not found: {path}")
    try:
        plain = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        text = str(err)
        lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(err).__name__]
        if "Unsupported global" in text or "GLOBAL" in text:  # the pickle names a callable: it could run code
            reason = next(line for line in lines if "Unsupported global" in line or "GLOBAL" in line)
            raise EmbodiedError(f"refusing to load {path}: it is not a plain weights file (loading it could run "
                                f"code): {reason[:200]}") from None
        reason = next((line for line in lines if line.startswith(("Unsupported", "invalid", "PytorchStreamReader"))),
                      lines[-1] if len(lines) > 1 else lines[0])
        raise EmbodiedError(f"checkpoint {path} is unreadable (corrupt or truncated?): {reason[:200]}") from None
    if not isinstance(plain, dict):
        raise EmbodiedError(f"checkpoint {path} does not hold a dict of state")
    return from_plain(plain)


def save_arrays(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """NumPy ``.npz`` of ``arrays``, written atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def load_arrays(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never pickled objects); one clear error if unreadable or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise EmbodiedError(f"{path} is unreadable (corrupt, or holds pickled objects): "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise EmbodiedError(f"{path} lacks {', '.join(missing)}; delete it to recompute")
    return arrays


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states (CUDA too when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextmanager
def restoring(path: str | os.PathLike, fix: str = "pass another --run-name to start afresh") -> Iterator[None]:
    """Around putting the state loaded from ``path`` back: a file that loads (weights only) but does not fit, being
    another agent's, another configuration's or edited, is one ``EmbodiedError`` naming what does not fit, not a
    traceback from deep inside ``load_state_dict``."""
    try:
        yield
    except EmbodiedError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError, OverflowError) as err:
        raise EmbodiedError(f"checkpoint {path} does not fit this run ({mismatch(err)}); it was written by another "
                            f"agent or configuration, or changed since: {fix}") from None


def mismatch(err: Exception) -> str:
    """What a failed restore says, in one short line (``load_state_dict`` lists every tensor on its own line)."""
    if isinstance(err, KeyError):
        return f"no entry {err.args[0]!r}" if err.args else "an entry is missing"
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
