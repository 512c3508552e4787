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
    returns, any_step, final, steps = [], [], [], []
    for i in range(episodes):  # one episode held at a time: many pixel episodes would not fit in memory
        run = rollout(env, policy, seed + i, max_steps=max_steps)
        returns.append(run.episode_return)
        any_step.append(run.success)
        final.append(bool(np.asarray(run.infos.get("success", [False]))[-1]))
        steps.append(len(run.actions))
    returns = np.array(returns)
    return {
        "success_rate": float(np.mean(any_step)),
        "success_any": float(np.mean(any_step)),
        "success_final": float(np.mean(final)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episode_steps": float(np.mean(steps)),
        "episodes": episodes,
    }
