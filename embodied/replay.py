"""Sequence replay: whole episodes stored, fixed-length chunks sampled within them (Dreamer-style).

Saved with the checkpoint (``state_dict``), so a resumed run keeps its experience.
"""

from __future__ import annotations

import numpy as np


class SequenceReplay:
    """Episodes of ``obs (T+1, ...)``, ``act (T, A)``, ``rew (T,)``;
    ``sample`` -> ``(B, L+1, ...), (B, L, A), (B, L)``."""

    def __init__(self, capacity_steps: int = 1_000_000):
        self.capacity_steps = capacity_steps
        self.episodes: list[dict[str, np.ndarray]] = []
        self.steps = 0

    def add_episode(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray) -> None:
        if len(obs) != len(act) + 1 or len(act) != len(rew):
            raise ValueError(f"episode arrays disagree: obs {len(obs)}, act {len(act)}, rew {len(rew)}")
        self.episodes.append(
            {"obs": np.asarray(obs), "act": np.asarray(act, np.float32), "rew": np.asarray(rew, np.float32)}
        )
        self.steps += len(act)
        while self.steps > self.capacity_steps and len(self.episodes) > 1:
            self.steps -= len(self.episodes.pop(0)["act"])

    def __len__(self) -> int:
        return self.steps

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        usable = [e for e in self.episodes if len(e["act"]) >= length]
        if not usable:
            raise ValueError(f"no stored episode has {length} steps")
        weights = np.array([len(e["act"]) - length + 1 for e in usable], dtype=np.float64)
        picks = rng.choice(len(usable), size=batch, p=weights / weights.sum())
        obs, act, rew = [], [], []
        for i in picks:
            e = usable[i]
            s = rng.integers(0, len(e["act"]) - length + 1)
            obs.append(e["obs"][s : s + length + 1])
            act.append(e["act"][s : s + length])
            rew.append(e["rew"][s : s + length])
        return np.stack(obs), np.stack(act), np.stack(rew)

    def state_dict(self) -> dict:
        return {"capacity_steps": self.capacity_steps, "episodes": self.episodes, "steps": self.steps}

    def load_state_dict(self, state: dict, obs_shape: tuple[int, ...] | None = None) -> None:
        """Restore, checking every episode as ``add_episode`` would (and its frames against ``obs_shape``)."""
        episodes = list(state["episodes"])
        for i, e in enumerate(episodes):
            obs, act, rew = e["obs"], e["act"], e["rew"]
            if len(obs) != len(act) + 1 or len(act) != len(rew) or act.ndim != 2:
                raise ValueError(f"stored episode {i} is malformed: obs {obs.shape}, act {act.shape}, rew {rew.shape}")
            if obs_shape is not None and tuple(obs.shape[1:]) != tuple(obs_shape):
                raise ValueError(
                    f"stored episode {i} has observations of shape {tuple(obs.shape[1:])}, "
                    f"this environment {tuple(obs_shape)}"
                )
        self.capacity_steps, self.episodes = int(state["capacity_steps"]), episodes
        self.steps = sum(len(e["act"]) for e in episodes)
