"""The action every env here takes: four numbers in [-1, 1] (hand x, y, z and gripper, as Meta-World's)."""

from __future__ import annotations

import numpy as np


def checked_action(action, dtype=np.float32) -> np.ndarray:
    """``action`` as a ``(4,)`` array clipped to [-1, 1]; a wrong shape or a NaN/inf is a ``ValueError`` (a NaN
    would otherwise move the hand to NaN, or make MuJoCo's integrator unstable, without a word)."""
    action = np.asarray(action, dtype=dtype)
    if action.shape != (4,):
        raise ValueError(f"action must have shape (4,), got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action contains NaN or inf: {action}")
    return np.clip(action, -1.0, 1.0)
