"""Policy evaluation: success rate and return over seeded episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from embodied.data.collect import rollout
from embodied.policies import Policy


def evaluate(env: gym.Env, policy: Policy, episodes: int, seed: int = 1000, max_steps: int | None = None) -> dict:
    """Success and return over ``episodes`` rollouts.

    ``success_any``: the fraction of episodes that succeeded at some step (Meta-World's evaluation; also
    ``success_rate``, the name the agents log). ``success_final``: succeeded at the last step (what SB3's
    Monitor and EvalCallback read from ``is_success``); on push or door-open the two differ a lot.
    ``return_mean`` is over ``episode_steps`` steps (the mean episode length), so returns of different
    horizons are not compared by mistake.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    runs = [rollout(env, policy, seed + i, max_steps=max_steps) for i in range(episodes)]
    returns = np.array([r.episode_return for r in runs])
    final = [bool(np.asarray(r.infos.get("success", [False]))[-1]) for r in runs]
    any_step = float(np.mean([r.success for r in runs]))
    return {
        "success_rate": any_step,
        "success_any": any_step,
        "success_final": float(np.mean(final)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episode_steps": float(np.mean([len(r.actions) for r in runs])),
        "episodes": episodes,
    }
