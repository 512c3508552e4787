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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmbodiedError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device
