"""Pick the torch device: CUDA when present, unless the user says otherwise."""

from __future__ import annotations

import torch

from embodied.errors import EmbodiedError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise EmbodiedError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type not in ("cpu", "cuda"):  # torch knows mps, xpu, meta...: nothing here runs or sizes for them
        raise EmbodiedError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmbodiedError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EmbodiedError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def memory_bytes(device: torch.device | str = "cpu") -> int:
    """The memory of ``device``: a CUDA device's total, else this machine's physical memory (what a setting whose
    arrays it would hold is checked against before a run starts)."""
    import os

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(sizes: list[tuple[str, str, int, torch.device | str]]) -> None:
    """Refuse settings whose arrays cannot fit in memory, before a run starts: each entry is (the options, what
    they size, at least how many bytes it holds, the device that holds it). At absurd values such arrays either
    failed after minutes of work or grew until the machine ran out, taking other processes with them."""
    for options, what, need, device in sizes:
        have = memory_bytes(device)
        if need > have:
            raise EmbodiedError(
                f"{options}: {what} would hold at least {need / 2**30:.0f} GiB, more than the {have / 2**30:.0f} GiB "
                f"of {torch.device(device).type} memory here"
            )
