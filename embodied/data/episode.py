"""One trajectory in memory, laid out like a Minari episode."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """A trajectory of ``T`` steps.

    observations: ``(T+1, *obs_shape)`` (or a dict of such arrays), the last one after the last action.
    actions: ``(T, A)``; rewards, terminations, truncations: ``(T,)``.
    infos: per-step arrays ``(T,)``, at least ``success``.
    """

    observations: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """Whether the task was solved at any step."""
        return bool(np.any(self.infos.get("success", False)))

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistency (lengths, NaNs)."""
        steps = len(self.actions)
        obs = self.observations if isinstance(self.observations, dict) else {"observations": self.observations}
        for key, value in obs.items():
            if len(value) != steps + 1:
                raise ValueError(f"{key} has {len(value)} rows, expected T+1 = {steps + 1}")
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected T = {steps}")
        for key, value in self.infos.items():
            if len(value) != steps:
                raise ValueError(f"infos/{key} has {len(value)} rows, expected T = {steps}")
        for name, value in [("actions", self.actions), ("rewards", self.rewards), *obs.items()]:
            if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or inf")


def validate_episodes(episodes) -> None:
    """``EmbodiedError`` naming the first malformed episode, or the emptiness of the list."""
    from embodied.errors import EmbodiedError

    if not episodes:
        raise EmbodiedError("refusing to write an empty dataset (0 episodes)")
    for i, episode in enumerate(episodes):
        try:
            episode.validate()
        except ValueError as err:
            raise EmbodiedError(f"episode {i} is malformed: {err}") from err
