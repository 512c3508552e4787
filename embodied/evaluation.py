"""Policy evaluation: success rate and return over seeded episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from embodied.data.collect import rollout
from embodied.policies import Policy


def evaluate(env: gym.Env, policy: Policy, episodes: int, seed: int = 1000, max_steps: int | None = None) -> dict:
    """``{"success_rate", "return_mean", "return_std", "episodes"}`` over ``episodes`` rollouts."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    runs = [rollout(env, policy, seed + i, max_steps=max_steps) for i in range(episodes)]
    returns = np.array([r.episode_return for r in runs])
    return {"success_rate": float(np.mean([r.success for r in runs])), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), "episodes": episodes}
