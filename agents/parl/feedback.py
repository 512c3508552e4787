"""Preference feedback on the current policy's recent behaviour (B-Pref / PEBBLE protocol).

Segments are cut from the last episodes the agent produced (PARL: the current policy's few; PEBBLE:
its last 100); pairs are chosen uniformly or by ensemble disagreement (the pairs whose predicted
preference varies most across members).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import nn

from embodied.teacher import Preferences, ScriptedTeacher


class RecentEpisodes:
    """The last ``capacity`` finished episodes: observations ``(T+1, D)``, actions ``(T, A)``, true rewards ``(T,)``."""

    def __init__(self, capacity: int = 10):
        self.episodes: deque = deque(maxlen=capacity)

    def add(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray) -> None:
        self.episodes.append((np.asarray(obs, np.float32), np.asarray(act, np.float32), np.asarray(rew, np.float32)))

    def latest(self, count: int) -> RecentEpisodes:
        """The last ``count`` of these episodes (the arrays shared, not copied)."""
        out = RecentEpisodes(count)
        out.episodes.extend(list(self.episodes)[-count:])
        return out

    def segments(self, length: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` random windows: obs ``(N, L, D)``, act ``(N, L, A)``, true rewards ``(N, L)``."""
        usable = [e for e in self.episodes if len(e[1]) >= length]
        if not usable:
            raise ValueError(f"no recent episode has {length} steps")
        picks = rng.integers(0, len(usable), size=count)
        out = [[], [], []]
        for i in picks:
            obs, act, rew = usable[i]
            s = rng.integers(0, len(act) - length + 1)
            for dst, src in zip(out, (obs, act, rew)):
                dst.append(src[s : s + length])
        return tuple(np.stack(x) for x in out)

    def state_dict(self) -> dict:
        return {"capacity": self.episodes.maxlen, "episodes": list(self.episodes)}

    def load_state_dict(self, state: dict, obs_dim: int | None = None, act_dim: int | None = None) -> None:
        """Restore, checking that every episode is ``(obs (T+1, obs_dim), act (T, act_dim), rew (T,))``."""
        episodes = [tuple(e) for e in state["episodes"]]
        for i, (obs, act, rew) in enumerate(episodes):
            if (
                len(obs) != len(act) + 1
                or len(act) != len(rew)
                or obs.ndim != 2
                or act.ndim != 2
                or obs_dim not in (None, obs.shape[1])
                or act_dim not in (None, act.shape[1])
            ):
                raise ValueError(f"recent episode {i} does not fit: obs {obs.shape}, act {act.shape}, rew {rew.shape}")
        self.episodes = deque(episodes, maxlen=int(state["capacity"]))


@torch.no_grad()
def ensemble_disagreement(ensemble: list[nn.Module], obs_a, act_a, obs_b, act_b) -> np.ndarray:
    """Std across members of P(a > b), ``(N,)``."""
    probs = [torch.sigmoid(m.segment_logits(obs_a, act_a, obs_b, act_b)[0]) for m in ensemble]
    return torch.stack(probs).std(0).cpu().numpy()


def query(
    recent: RecentEpisodes,
    teacher: ScriptedTeacher,
    ensemble: list[nn.Module],
    num: int,
    length: int,
    selection: str,
    rng: np.random.Generator,
    device,
    oversample: int = 10,
):
    """Draw ``num`` segment pairs from recent episodes, select them, and ask the teacher.

    Returns ``(obs (2N, L, D), act (2N, L, A), Preferences over indices into those arrays)``.
    """
    if selection not in ("uniform", "disagreement"):
        raise ValueError(f"unknown query selection {selection!r}: uniform or disagreement")
    pool = num * (oversample if selection == "disagreement" else 1)
    obs, act, rew = recent.segments(length, 2 * pool, rng)
    a, b = np.arange(pool), np.arange(pool, 2 * pool)
    if selection == "disagreement":
        t = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        score = ensemble_disagreement(ensemble, t(obs[a]), t(act[a]), t(obs[b]), t(act[b]))
        keep = np.argsort(-score)[:num]
        a, b = a[keep], b[keep]
    idx = np.concatenate([a, b])
    obs, act, rew = obs[idx], act[idx], rew[idx]
    first, second = np.arange(num), np.arange(num, 2 * num)
    return obs, act, teacher.label(rew, first, second, rng)


def merge(store: dict | None, obs: np.ndarray, act: np.ndarray, prefs: Preferences) -> dict:
    """Append a batch of labelled segment pairs to the growing feedback set."""
    if store is None:
        return {"obs": obs, "act": act, "prefs": prefs}
    offset = len(store["obs"])
    merged = Preferences(
        np.concatenate([store["prefs"].first, prefs.first + offset]),
        np.concatenate([store["prefs"].second, prefs.second + offset]),
        np.concatenate([store["prefs"].label, prefs.label]),
    )
    return {"obs": np.concatenate([store["obs"], obs]), "act": np.concatenate([store["act"], act]), "prefs": merged}
