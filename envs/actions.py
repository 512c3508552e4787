"""What every env here checks when it steps: that it was reset, and its action, four numbers in [-1, 1] (hand x, y, z
and gripper, as Meta-World's)."""

from __future__ import annotations

import gymnasium as gym
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


def check_reset(env: gym.Env) -> None:
    """Gymnasium's ``ResetNeeded`` if ``env`` steps before its first ``reset()`` (its ``_was_reset`` is set there).
    ``gym.make``'s order check does this for made envs; a class used directly failed with an AttributeError
    (point-hold), a bare AssertionError (Meta-World) or stepped from an unset state (drawer-block)."""
    if not getattr(env, "_was_reset", False):
        raise gym.error.ResetNeeded("call reset() before step()")
