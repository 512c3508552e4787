"""PEBBLE's unsupervised pre-training: SAC on a state-entropy reward before the first query.

Lee, Smith & Abbeel (ICML 2021), Sec. 4.1: the intrinsic reward of a transition is the distance
from its next state to the k-th nearest neighbour among the states in the replay buffer (a
particle estimate of the state entropy, Singh et al. 2003), divided by a running standard
deviation. Maximising it spreads the visited states, so the first queries compare diverse
behaviour instead of near-identical random-action segments. After the phase PEBBLE relabels the
buffer with the learned reward and resets the critic (the Q-values of the intrinsic reward are of
no use for the task).
"""

from __future__ import annotations

import numpy as np
import torch


def knn_distance(states: torch.Tensor, reference: torch.Tensor, k: int = 5, chunk: int = 4096) -> torch.Tensor:
    """Distance from each of ``states (B, D)`` to its k-th nearest neighbour in ``reference (M, D)``, ``(B,)``.

    The k+1-th smallest distance is taken, as PEBBLE does: a state that is itself in ``reference``
    is at distance 0 from it.
    """
    if len(reference) <= k:
        raise ValueError(f"the k-NN estimate needs more than k={k} reference states, got {len(reference)}")
    dists = torch.cat([torch.cdist(states, reference[i : i + chunk]) for i in range(0, len(reference), chunk)], 1)
    return dists.kthvalue(k + 1, dim=1).values


class RunningStd:
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self):
        self.count, self.mean, self.var = 0, 0.0, 1.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        n, mean, var = len(x), float(x.mean()), float(x.var())
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.count, self.mean, self.var = total, self.mean + delta * n / total, m2 / total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var)) + 1e-8

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.var = int(state["count"]), float(state["mean"]), float(state["var"])


class StateEntropyReward:
    """The intrinsic reward of a sampled batch: k-NN distance of its next states, over the running std."""

    def __init__(self, k: int = 5, max_reference: int = 10_000):
        self.k, self.max_reference = k, max_reference
        self.stats = RunningStd()

    def __call__(self, next_obs: torch.Tensor, buffer_obs: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        n = len(buffer_obs)
        idx = rng.choice(n, size=self.max_reference, replace=False) if n > self.max_reference else slice(None)
        reference = torch.as_tensor(buffer_obs[idx], device=next_obs.device)
        with torch.no_grad():
            dist = knn_distance(next_obs, reference, self.k)
        self.stats.update(dist.cpu().numpy())
        return dist / self.stats.std
