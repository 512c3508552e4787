"""Collect mixed-quality trajectories: a policy (usually the scripted expert) plus noise.

Preference learning needs segments of every quality; Gaussian action noise and epsilon-random
actions, at levels cycled across episodes, give a spread from expert to random behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import gymnasium as gym
import numpy as np

from embodied.data.episode import Episode
from embodied.policies import Policy, start_episode


@dataclass
class NoiseSchedule:
    """Noise levels cycled across episodes: episode ``i`` gets ``gaussian[i % len]`` and ``epsilon[i % len]``."""

    gaussian: Sequence[float] = (0.0,)
    epsilon: Sequence[float] = (0.0,)

    def __post_init__(self):
        if not self.gaussian or not self.epsilon:
            raise ValueError("noise levels must not be empty")
        if any(s < 0 for s in self.gaussian):
            raise ValueError(f"gaussian noise std must be >= 0, got {list(self.gaussian)}")
        if any(not 0 <= e <= 1 for e in self.epsilon):
            raise ValueError(f"epsilon must be in [0, 1], got {list(self.epsilon)}")

    def levels(self, episode: int) -> tuple[float, float]:
        return self.gaussian[episode % len(self.gaussian)], self.epsilon[episode % len(self.epsilon)]


def noisy(
    action: np.ndarray, space: gym.spaces.Box, std: float, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """With probability ``epsilon`` a uniform random action, else ``action`` plus N(0, std), clipped."""
    if rng.random() < epsilon:
        return rng.uniform(space.low, space.high).astype(space.dtype)
    action = action + rng.normal(0.0, std, size=action.shape) if std > 0 else action
    return np.clip(action, space.low, space.high).astype(space.dtype)


def _stack(observations: list) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


def rollout(
    env: gym.Env,
    policy: Policy,
    seed: int,
    std: float = 0.0,
    epsilon: float = 0.0,
    max_steps: int | None = None,
    rng: np.random.Generator | None = None,
) -> Episode:
    """Run one episode until termination, truncation or ``max_steps``."""
    rng = rng or np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    start_episode(policy)
    observations, actions, rewards, terms, truncs, successes = [obs], [], [], [], [], []
    info_keys: dict[str, list] = {}
    done, t = False, 0
    while not done:
        action = noisy(np.asarray(policy(obs)), env.action_space, std, epsilon, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        t += 1
        truncated = truncated or (max_steps is not None and t >= max_steps)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        successes.append(bool(info.get("success", False)))
        for key, value in info.items():
            if key not in ("success", "is_success") and np.isscalar(value):
                info_keys.setdefault(key, []).append(value)
        done = terminated or truncated
    infos = {"success": np.array(successes)}
    infos.update({k: np.asarray(v, dtype=np.float32) for k, v in info_keys.items() if len(v) == t})
    return Episode(
        _stack(observations),
        np.stack(actions),
        np.asarray(rewards, np.float32),
        np.asarray(terms),
        np.asarray(truncs),
        infos,
        seed=seed,
    )


def episode_limit(env: gym.Env, max_steps: int | None) -> int:
    """The most steps an episode of ``env`` can take here (``max_steps``, else the env's own limit, else 1000)."""
    return max_steps or (env.spec.max_episode_steps if env.spec else None) or 1000


def space_bytes(space: gym.Space) -> int:
    """Bytes of one element of a Gymnasium Box (or Dict of Boxes) space."""
    if hasattr(space, "spaces"):
        return sum(space_bytes(s) for s in space.spaces.values())
    return int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize


def collection_bytes(env: gym.Env, episodes: int, max_steps: int | None) -> int:
    """About the memory ``collect`` holds for ``episodes`` rollouts of ``env`` at their longest, three times:
    writing them copies them, and an ``.hdf5`` file is built in memory before it is written (compressed, at most
    about the episodes' size). Checked before collecting, so a collection that cannot fit is refused, not started."""
    steps = episode_limit(env, max_steps)
    return 3 * episodes * (steps + 1) * (space_bytes(env.observation_space) + space_bytes(env.action_space) + 32)


def collect(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    noise: NoiseSchedule,
    seed: int = 0,
    max_steps: int | None = None,
    progress=None,
) -> list[Episode]:
    """``episodes`` rollouts with seeds ``seed, seed+1, ...`` and noise levels from ``noise``."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        std, epsilon = noise.levels(i)
        out.append(rollout(env, policy, seed + i, std, epsilon, max_steps, rng))
        if progress is not None:
            progress(out[-1])
    return out
