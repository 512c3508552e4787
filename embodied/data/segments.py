"""Fixed-length windows of trajectories: the unit that preferences are given on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embodied.data.episode import Episode


@dataclass
class Segments:
    """``N`` segments of length ``L``.

    observations: ``(N, L, D)``, the observation before each action; actions: ``(N, L, A)``;
    rewards, success: ``(N, L)``; episode, start: ``(N,)``, where each segment came from.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    episode: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def length(self) -> int:
        return self.observations.shape[1]

    def subset(self, index: np.ndarray) -> "Segments":
        return Segments(
            *(getattr(self, f)[index] for f in ("observations", "actions", "rewards", "success", "episode", "start"))
        )


def sample_segments(episodes: Sequence[Episode], length: int, count: int, rng: np.random.Generator) -> Segments:
    """``count`` windows of ``length`` steps, uniformly over all valid start positions.

    Only flat (vector) observations are supported; episodes shorter than ``length`` are skipped.
    """
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    if count <= 0:
        raise ValueError(f"segment count must be positive, got {count}")
    starts_per_episode = np.array([max(len(e) - length + 1, 0) for e in episodes])
    if starts_per_episode.sum() == 0:
        raise ValueError(f"no episode has at least {length} steps")
    if isinstance(episodes[0].observations, dict):
        raise ValueError("segments need vector observations; this dataset has dict observations")
    flat = rng.integers(0, starts_per_episode.sum(), size=count)
    bounds = np.cumsum(starts_per_episode)
    episode_idx = np.searchsorted(bounds, flat, side="right")
    start = flat - np.concatenate([[0], bounds[:-1]])[episode_idx]
    window = np.arange(length)
    obs, act, rew, suc = [], [], [], []
    for e, s in zip(episode_idx, start):
        ep = episodes[e]
        idx = s + window
        obs.append(ep.observations[idx])
        act.append(ep.actions[idx])
        rew.append(ep.rewards[idx])
        suc.append(ep.infos["success"][idx] if "success" in ep.infos else np.zeros(length, bool))
    return Segments(
        np.stack(obs).astype(np.float32),
        np.stack(act).astype(np.float32),
        np.stack(rew).astype(np.float32),
        np.stack(suc),
        episode_idx,
        start,
    )
