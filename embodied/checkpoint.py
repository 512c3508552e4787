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
import math
import os
import random
from collections import deque
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Iterator

import numpy as np
import torch

from embodied.atomic import atomic_path
from embodied.errors import EmbodiedError, one_line

SAFE_DATACLASSES = {"embodied.teacher:Preferences"}  # the only classes a checkpoint may name
TENSOR_DTYPES = {
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
}  # what a checkpoint of ours holds; no complex or quantized
MAX_CHECKPOINT_DEPTH = 64  # nesting of dicts and lists in a checkpoint; ours stay under 10


def dense_layout(t: torch.Tensor) -> bool:
    """Whether ``t``'s strides lay its elements out densely without overlap: contiguous in some order of its
    dimensions (row-major, or e.g. channels-last as convolution weights are saved), no stride-0 expansion."""
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride()) if size != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def tensor_problem(t: torch.Tensor, seen: set[tuple[int, int]]) -> str | None:
    """Why ``t``, just loaded, is unsafe to use, or None.

    ``weights_only`` does not check layouts: a sparse tensor with indices out of range crashes the
    process at its first use, and an expanded (stride-0) tensor whose storage is far smaller than its
    shape asks for gigabytes when copied. Only attributes are read here, never the elements.
    """
    if t.is_quantized:
        return f"quantized ({t.dtype}); only dense tensors are accepted"
    if t.layout != torch.strided or t.is_sparse or t.is_nested:
        return f"layout {t.layout}; only dense tensors are accepted"
    if t.dtype not in TENSOR_DTYPES:
        return f"dtype {t.dtype}"
    if t.device.type == "meta":
        return "a meta tensor (no data)"
    if not dense_layout(t) or t.storage_offset() != 0:
        return f"a view (strides {tuple(t.stride())}, offset {t.storage_offset()}) rather than a plain tensor"
    storage = t.untyped_storage()
    if storage.nbytes() != t.numel() * t.element_size():
        return f"storage of {storage.nbytes()} bytes for {t.numel()} elements of {t.element_size()} bytes"
    key = (storage.data_ptr(), storage.nbytes())
    if t.numel() and key in seen:
        return "storage shared with another entry"
    seen.add(key)
    return None


def check_loaded(obj: Any, path: Path, where: str = "", depth: int = 0, seen: set | None = None) -> None:
    """Every tensor in ``obj`` (as ``torch.load`` returned it) is dense, plain and owns exactly its storage."""
    seen = set() if seen is None else seen
    if depth > MAX_CHECKPOINT_DEPTH:
        raise EmbodiedError(f"checkpoint {path} is nested deeper than {MAX_CHECKPOINT_DEPTH} levels at {where or '/'}")
    if isinstance(obj, torch.Tensor):
        problem = tensor_problem(obj, seen)
        if problem:
            raise EmbodiedError(f"refusing to load {path}: entry {where or '/'} is {problem}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_loaded(v, path, f"{where}/{str(k)[:60]}", depth + 1, seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_loaded(v, path, f"{where}/{i}", depth + 1, seen)


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
        return {
            "__dataclass__": name,
            "fields": {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def from_plain(obj: Any) -> Any:
    """The inverse of ``to_plain``; a marker whose payload is not what ``to_plain`` writes is a ``ValueError``."""
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            if not isinstance(obj["__ndarray__"], torch.Tensor):
                raise ValueError(f"an array entry holds {type(obj['__ndarray__']).__name__}, not a tensor")
            return obj["__ndarray__"].numpy()
        if set(obj) == {"__set__"}:
            if not isinstance(obj["__set__"], list):
                raise ValueError(f"a set entry holds {type(obj['__set__']).__name__}, not a list")
            return set(from_plain(v) for v in obj["__set__"])
        if set(obj) == {"__dataclass__", "fields"}:
            name = obj["__dataclass__"]
            if not isinstance(name, str) or name not in SAFE_DATACLASSES:
                raise EmbodiedError(f"checkpoint names class {name!r}, which is not allowed")
            if not isinstance(obj["fields"], dict) or not all(isinstance(k, str) for k in obj["fields"]):
                raise ValueError(f"the fields of {name} are not a dict of names")
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
        torch_save(plain, tmp)
    return Path(path)


def torch_save(obj: Any, tmp: Path) -> None:
    """``torch.save(obj)`` into an ``atomic_path`` temp file; a write the machine refused (a full disk) is the
    ``OSError`` it was (``atomic_path`` names the target): torch's writer reports it as RuntimeError("unexpected
    pos"), a traceback."""
    with open(tmp, "wb", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) on close
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError) and err.__context__.errno is not None:
                raise OSError(err.__context__.errno, err.__context__.strerror) from err
            raise


def archive_problem(path: Path) -> str | None:
    """Why ``path`` is not an archive as ``torch.save`` writes it, read from its zip directory alone, as what
    follows the file's name in the error (``is refused: ...``, ``is unreadable ...``); None if it is. PyTorch's
    reader allocates each member's declared unpacked size and inflates compressed members, so a few-MB file of
    deflated zeros would unpack to gigabytes; ``torch.save`` never compresses, so a compressed member is refused,
    and stored members cannot declare more bytes than the file holds. The pre-1.6 format (not a zip) is refused
    too: nothing here writes it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except Exception as err:  # noqa: BLE001 - a damaged directory raises many types (NotImplementedError too)
        return f"is unreadable (corrupt or truncated?): not a zip archive as torch.save writes ({one_line(err, 150)})"
    packed = next((m for m in members if m.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        return f"is refused: member {packed.filename[:100]!r} is compressed (torch.save stores members as they are)"
    declared, size = sum(m.file_size for m in members), path.stat().st_size
    if declared > size:
        return f"is refused: its members declare {declared} bytes in a file of {size}"
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``, then check every tensor (``check_loaded``) before anything uses it.

    A file that would run code, is corrupt, or holds tensors that are not plain dense ones gives one clear error.
    """
    path = Path(path)
    if not path.exists():
        raise EmbodiedError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise EmbodiedError(f"checkpoint {path} is not a regular file")
    problem = archive_problem(path)
    if problem:
        raise EmbodiedError(f"checkpoint {path} {problem}")
    try:
        plain = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        text = str(err)
        lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(err).__name__]
        if "Unsupported global" in text or "GLOBAL" in text:  # the pickle names a callable: it could run code
            reason = next(line for line in lines if "Unsupported global" in line or "GLOBAL" in line)
            raise EmbodiedError(
                f"refusing to load {path}: it is not a plain weights file (loading it could run code): {reason[:200]}"
            ) from None
        reason = next(
            (line for line in lines if line.startswith(("Unsupported", "invalid", "PytorchStreamReader"))),
            lines[-1] if len(lines) > 1 else lines[0],
        )
        raise EmbodiedError(f"checkpoint {path} is unreadable (corrupt or truncated?): {reason[:200]}") from None
    if not isinstance(plain, dict):
        raise EmbodiedError(f"checkpoint {path} does not hold a dict of state")
    check_loaded(plain, path)
    try:
        return from_plain(plain)
    except (ValueError, TypeError) as err:  # TypeError: a dataclass given fields it does not have
        raise EmbodiedError(f"checkpoint {path} is malformed: {one_line(err)}") from None


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A file of trained weights (a policy, a reward model): ``load_checkpoint``'s checks, and every floating
    tensor finite, so that a NaN or infinite weight is one error naming it here instead of NaN actions or rewards
    far downstream."""
    state = load_checkpoint(path)
    bad = first_nonfinite(state)
    if bad:
        raise EmbodiedError(f"{path}: entry {bad} holds NaN or infinite values; these weights cannot be used")
    return state


def first_nonfinite(obj: Any, where: str = "") -> str | None:
    """The path of the first floating tensor in ``obj`` (nested dicts) holding a NaN or infinity, or None."""
    if isinstance(obj, torch.Tensor):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        return next((w for k, v in obj.items() if (w := first_nonfinite(v, f"{where}/{k}"))), None)
    return None


def load_module_state(module: torch.nn.Module, state: Any) -> None:
    """``module.load_state_dict(state)`` (every entry, of its shape) after checking that every floating entry is
    finite: a run checkpoints weights only after ``embodied.nets.check_finite`` passed them, so a NaN one was put
    there by someone else, and would fail far from the file (a distribution refusing NaN arguments)."""
    if not isinstance(state, dict):
        raise ValueError(f"a network's state is {type(state).__name__}, not a dict of tensors")
    bad = first_nonfinite(state)
    if bad:
        raise ValueError(f"network entry {bad.lstrip('/')} holds NaN or infinite values")
    module.load_state_dict(state)


def save_arrays(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """NumPy ``.npz`` of ``arrays``, written atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


MAX_NPZ_BYTES = 1 << 30  # all arrays of one .npz stage file together (ours hold a few MB)


def npz_problem(path: str | os.PathLike) -> str | None:
    """Why the ``.npz`` at ``path`` must not be loaded, read from its zip directory and array headers alone:
    a member whose header declares more bytes than the member holds (NumPy allocates the declared shape
    before reading), or members that unpack to more than ``MAX_NPZ_BYTES`` (a zip bomb)."""
    import zipfile

    from embodied.safe_io import file_size

    try:
        file_size(path, MAX_NPZ_BYTES, "stage file")  # a regular file (not a link to a device), not too large
    except EmbodiedError as err:
        return str(err)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_NPZ_BYTES:
                return f"its arrays unpack to {total} bytes (at most {MAX_NPZ_BYTES})"
            for member in members:
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)  # the header only
                    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if declared > member.file_size:
                        return (
                            f"{member.filename} declares shape {shape} ({declared} bytes) in {member.file_size} bytes"
                        )
    except Exception as err:  # noqa: BLE001 - a damaged directory raises many types (NotImplementedError too)
        return f"not a readable .npz ({one_line(err, 150)})"
    return None


def load_arrays(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never pickled objects); one clear error if unreadable, incomplete, or
    declaring more data than it holds (checked before anything is allocated)."""
    problem = npz_problem(path)
    if problem:
        raise EmbodiedError(f"{path} is refused: {problem}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise EmbodiedError(
            f"{path} is unreadable (corrupt, or holds pickled objects): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
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


EXECUTION_FLAGS = ("capturable", "foreach", "fused", "differentiable")  # how an optimizer runs, not what it learned


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Any) -> None:
    """``optimizer.load_state_dict(state)`` after checking ``state`` against the optimizer the run built from its
    settings: torch trusts the dict, and a wrong type, shape or negative step in it failed at the first update, far
    from the file. The groups must hold the same parameters and settings of the same kinds (numbers finite and
    >= 0); each parameter's state, finite tensors of its shape (and a scalar step >= 0). How the optimizer executes
    (``EXECUTION_FLAGS``) stays this run's: a file written with CUDA graphs loads on a CPU."""
    live = optimizer.state_dict()
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise ValueError("an optimizer's state is not a dict of 'state' and 'param_groups'")
    groups = state["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        raise ValueError(f"the optimizer has {len(live['param_groups'])} parameter group(s), the file another count")
    shapes = {  # the parameters' shapes by the indices the state dict names them with
        i: p.shape
        for group, ids in zip(optimizer.param_groups, live["param_groups"])
        for i, p in zip(ids["params"], group["params"])
    }
    for g, (saved, built) in enumerate(zip(groups, live["param_groups"])):
        if not isinstance(saved, dict) or saved.get("params") != built["params"]:
            raise ValueError(f"optimizer group {g} does not hold this run's parameters")
        for key, value in saved.items():
            if key not in built:
                raise ValueError(f"optimizer group {g} has an unknown setting {key!r}")
            if key not in EXECUTION_FLAGS and key != "params" and not same_kind(value, built[key]):
                raise ValueError(f"optimizer setting {key!r} is {value!r}, not like this run's {built[key]!r}")
        saved.update({key: built[key] for key in EXECUTION_FLAGS if key in built})
    entries = state["state"]
    if not isinstance(entries, dict):
        raise ValueError("an optimizer's per-parameter state is not a dict")
    for index, entry in entries.items():
        if index not in shapes or not isinstance(entry, dict):
            raise ValueError(f"optimizer state {index!r} names no parameter of this run")
        for key, value in entry.items():
            scalar = key == "step"
            if not isinstance(value, torch.Tensor) or not value.is_floating_point() and not scalar:
                what = "a floating tensor" if isinstance(value, torch.Tensor) or not scalar else "a tensor"
                raise ValueError(f"optimizer state {index}/{key} is not {what}")
            wrong_shape = value.numel() != 1 if scalar else value.shape != shapes[index]
            if wrong_shape or not bool(torch.isfinite(value).all()):
                raise ValueError(f"optimizer state {index}/{key} is not a finite tensor of its parameter's shape")
            if scalar and float(value) < 0:
                raise ValueError(f"optimizer state {index}/step is negative")
    optimizer.load_state_dict(state)


def load_trained_state(part: torch.nn.Module | torch.optim.Optimizer, state: Any) -> None:
    """A network's or an optimizer's state from a checkpoint, checked: ``load_module_state`` or
    ``load_optimizer_state``, by what ``part`` is (agents keep both under one dict of names)."""
    if isinstance(part, torch.optim.Optimizer):
        load_optimizer_state(part, state)
    else:
        load_module_state(part, state)


def same_kind(value: Any, like: Any) -> bool:
    """``value`` could be an optimizer setting where this run's is ``like``: a bool for a bool, a finite number
    >= 0 for a number, a tuple of those for a tuple, a finite scalar tensor for a tensor, None or a bool for None."""
    if isinstance(like, bool) or like is None:
        return isinstance(value, bool) or value is None and like is None
    if isinstance(like, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if isinstance(like, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(like) and all(map(same_kind, value, like))
    if isinstance(like, torch.Tensor):
        return isinstance(value, torch.Tensor) and value.numel() == 1 and bool(torch.isfinite(value).all())
    return type(value) is type(like)


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
        raise EmbodiedError(
            f"checkpoint {path} does not fit this run ({mismatch(err)}); it was written by another "
            f"agent or configuration, or changed since: {fix}"
        ) from None


def mismatch(err: Exception) -> str:
    """What a failed restore says, in one short line (``load_state_dict`` lists every tensor on its own line)."""
    if isinstance(err, KeyError):
        return f"no entry {err.args[0]!r}" if err.args else "an entry is missing"
    return one_line(err)


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
