"""What tells apart the reasons a learned-reward run loses a task it had learned.

Logged at every feedback session of PARL and PEBBLE (keys under ``diag/``):

- ``rank_corr_recent`` / ``rank_corr_buffer``: Spearman correlation of the learned reward with the
  true reward on the current policy's recent transitions and on the whole replay buffer. A reward
  that still ranks the buffer well but not the policy's own states has drifted where it matters.
- ``reward_gap_success``: mean learned reward on transitions that were a success minus the mean on
  the others (in the standardised units SAC sees). When it shrinks or turns negative, the reward no
  longer pays for success.
- ``session_shift`` / ``session_rank_corr``: how far one feedback session moved the reward on the
  policy's recent states (mean absolute change in standardised units, and the rank correlation of
  the rewards before and after). A session that reorders the policy's own states asks SAC for a
  different task.
- ``pref_accuracy_new`` / ``pref_accuracy_train``: how often the reward orders a pair of segments as the
  teacher did, on the session's new pairs *before* they are used for training (segments of episodes the
  reward has never been fit to) and on all labels after the refit. A reward that fits its labels but not
  new episodes' has learned to tell its training episodes apart (by features that vary between episodes)
  more than the task.
- PARL only: ``implicit_cos_direct``, the cosine between the implicit (hypergradient) update and
  the direct Bradley-Terry update of the reward parameters in the same session; ``implicit_to_direct_norm``
  and ``implicit_to_direct_move``, the implicit update's size relative to the direct one, in parameter norm
  and in how far each moved the reward on the policy's recent transitions.
SAC's Q scale, alpha and entropy are logged by ``SAC.update`` (``sac/q_mean``, ``sac/alpha``, ...).
"""

from __future__ import annotations

import numpy as np
import torch
from embodied.reward_models import ordering_accuracy, rank_correlation


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flat vectors; NaN when either is zero."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float((a @ b) / (na * nb))


def recent_transitions(recent) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All transitions of the recent episodes: obs ``(N, D)``, act ``(N, A)``, true reward ``(N,)``."""
    obs = np.concatenate([o[: len(a)] for o, a, _ in recent.episodes])
    act = np.concatenate([a for _, a, _ in recent.episodes])
    rew = np.concatenate([r for _, _, r in recent.episodes])
    return obs, act, rew


def reward_agreement(reward, buffer, recent, rng: np.random.Generator, max_buffer: int = 20_000) -> dict[str, float]:
    """The learned reward against the true one on the policy's recent transitions and on the buffer."""
    obs, act, true = recent_transitions(recent)
    out = {"diag/rank_corr_recent": rank_correlation(reward(obs, act), true)}
    n = buffer.size
    idx = rng.choice(n, size=min(n, max_buffer), replace=False)
    learned = reward(buffer.obs[idx], buffer.act[idx])
    out["diag/rank_corr_buffer"] = rank_correlation(learned, buffer.true_rew[idx])
    success = buffer.success[idx] > 0.5
    out["diag/reward_gap_success"] = (
        float(learned[success].mean() - learned[~success].mean())
        if success.any() and (~success).any()
        else float("nan")
    )
    out["diag/success_fraction_buffer"] = float(success.mean())
    return out


def preference_accuracy(reward, obs: np.ndarray, act: np.ndarray, prefs) -> float:
    """How often ``reward(obs (N*L, D), act) -> (N*L,)`` orders segment pairs ``obs (N, L, D)`` as the labels
    do (ties, label 0.5, left out); NaN without a decided pair."""
    n, length = obs.shape[:2]
    returns = np.asarray(reward(obs.reshape(n * length, -1), act.reshape(n * length, -1))).reshape(n, length).sum(1)
    return ordering_accuracy(returns, prefs)


def session_shift(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """How far a feedback session moved the (standardised) reward on the same transitions."""
    return {
        "diag/session_shift": float(np.mean(np.abs(after - before))),
        "diag/session_rank_corr": rank_correlation(before, after),
    }
