"""Meta-World's scripted expert policies, usable on any variant of our environments."""

from __future__ import annotations

import warnings
from typing import Callable

import gymnasium as gym
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

# Meta-World's experts warn at every step that their gains exceed the action range; we clip anyway.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")


def scripted_expert(env: gym.Env) -> Callable[[object], np.ndarray]:
    """A policy ``obs -> action`` that runs the task's hand-written expert.

    The expert reads the 39-d simulator state, which the env keeps as ``last_state`` whatever its
    observation type (so it works on pixel and distractor variants too).
    """
    base = env.unwrapped
    task = getattr(base, "task", None)
    if task not in ENV_POLICY_MAP:
        raise ValueError(f"no scripted expert for env {env.spec.id if env.spec else env!r}")
    expert = ENV_POLICY_MAP[task]()

    def act(_obs) -> np.ndarray:
        action = expert.get_action(base.last_state.astype(np.float64))
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act
