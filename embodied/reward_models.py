"""Reward models learned from (soft) preference labels with the Bradley-Terry model (PEARL, PARL).

``RewardModel``: deterministic per-step reward, the usual baseline (B-Pref, PEBBLE).
``GaussianRewardModel``: RRL (PEARL Sec. 4.2): each step's reward is N(mean, std^2); segment
returns use reparameterised samples, and a KL term to a fixed N(0, 1) prior keeps the variance
from collapsing, so noisy transferred labels are absorbed as uncertainty instead of being fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from embodied.nets import mlp
from embodied.teacher import Preferences


class RewardModel(nn.Module):
    """r(s, a): ``(..., D), (..., A) -> (...)``; with ``use_action=False``, r(s) (the action is ignored).

    A state-only reward suits tasks whose true reward is a function of the state (Meta-World's):
    preferences between segments cannot identify how the reward depends on the action, and a policy
    trained on r(s, a) can collect reward through that spurious dependence instead of the task.
    """

    gaussian = False

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, use_action: bool = True):
        super().__init__()
        self.use_action = use_action
        self.net = mlp(obs_dim + (act_dim if use_action else 0), 1, hidden)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1) if self.use_action else obs).squeeze(-1)

    def segment_logits(self, obs_a, act_a, obs_b, act_b) -> tuple[torch.Tensor, torch.Tensor]:
        """Bradley-Terry logit ``R(a) - R(b)`` for segments ``(B, L, ...)``, and a regulariser (0)."""
        return self(obs_a, act_a).sum(-1) - self(obs_b, act_b).sum(-1), torch.zeros((), device=obs_a.device)

    @torch.no_grad()
    def mean_reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs, act)


class GaussianRewardModel(nn.Module):
    """r(s, a) ~ N(mean, std^2): ``(..., D), (..., A) -> mean (...), std (...)``."""

    gaussian = True

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, min_std: float = 1e-3):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 2, hidden)
        self.min_std = min_std

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(torch.cat([obs, act], -1)).unbind(-1)
        return mean, F.softplus(raw) + self.min_std

    def segment_logits(self, obs_a, act_a, obs_b, act_b) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit from reparameterised segment-return samples, and the mean per-step KL to N(0, 1)."""
        mean_a, std_a = self(obs_a, act_a)
        mean_b, std_b = self(obs_b, act_b)
        ret_a = (mean_a + std_a * torch.randn_like(std_a)).sum(-1)
        ret_b = (mean_b + std_b * torch.randn_like(std_b)).sum(-1)
        mean, std = torch.cat([mean_a, mean_b]), torch.cat([std_a, std_b])
        kl = (0.5 * (std**2 + mean**2 - 1.0) - torch.log(std)).mean()
        return ret_a - ret_b, kl

    @torch.no_grad()
    def mean_reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs, act)[0]


class RewardEnsemble(nn.Module):
    """A weighted sum of reward models, each standardised over the segments it will score.

    Few-shot PEARL combines the transfer's reward model with one fit to the K true labels: two
    estimates with independent errors, so their weighted sum is usually better than the worse one
    and often better than both, where choosing one of them from K noisy labels is a coin toss.
    Standardising first keeps one member's scale from deciding the sum. Not trainable itself.
    """

    gaussian = False

    def __init__(self, members: list[nn.Module], weights=None):
        super().__init__()
        if not members:
            raise ValueError("a reward ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        weights = torch.ones(len(members)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (len(members),) or not torch.all(weights >= 0) or weights.sum() <= 0:
            raise ValueError(f"need one weight >= 0 per member, not all 0; got {weights.tolist()}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("shift", torch.zeros(len(members)))
        self.register_buffer("scale", torch.ones(len(members)))

    @torch.no_grad()
    def standardise(self, obs: np.ndarray, act: np.ndarray) -> "RewardEnsemble":
        """Each member's mean reward gets mean 0 and std 1 over the steps of ``obs (..., D)``, ``act (..., A)``."""
        device = self.weights.device
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
        act_t = torch.as_tensor(act, dtype=torch.float32, device=device)
        for i, member in enumerate(self.members):
            member.eval()
            reward = member.mean_reward(obs_t, act_t)
            self.shift[i], self.scale[i] = reward.mean(), reward.std().clamp_min(1e-8)
        return self

    @torch.no_grad()
    def mean_reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return sum(
            w * (m.mean_reward(obs, act) - mu) / sd
            for w, m, mu, sd in zip(self.weights, self.members, self.shift, self.scale)
        )


@dataclass
class RewardTrainConfig:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 3e-4
    kl_weight: float = 0.01  # weight of the KL-to-prior term (Gaussian model only)
    weight_decay: float = 1e-4
    # stop once the model orders more than this fraction of its labels as they say (PEBBLE's code: 0.97, so that
    # the model does not go on to fit the last few pairs at any cost); 0: always ``epochs``
    stop_accuracy: float = 0.0


def preference_loss(
    model: nn.Module,
    obs: torch.Tensor,
    act: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    label: torch.Tensor,
    kl_weight: float,
) -> tuple[torch.Tensor, dict]:
    """Soft-label Bradley-Terry cross-entropy (+ KL term); ``obs (N, L, D)``, indices/labels ``(B,)``."""
    logits, kl = model.segment_logits(obs[first], act[first], obs[second], act[second])
    ce = F.binary_cross_entropy_with_logits(logits, label)
    return ce + kl_weight * kl, {"ce": ce.item(), "kl": kl.item()}


def train_reward_model(
    model: nn.Module,
    obs: np.ndarray,
    act: np.ndarray,
    prefs: Preferences,
    cfg: RewardTrainConfig = RewardTrainConfig(),
    device: torch.device | str = "cpu",
    seed: int = 0,
    log=None,
) -> list[float]:
    """Fit ``model`` to ``prefs`` over segments ``obs (N, L, D)``, ``act (N, L, A)``; returns loss per epoch (fewer
    than ``cfg.epochs`` where ``cfg.stop_accuracy`` stopped it)."""
    if len(prefs) == 0:
        raise ValueError("empty preference set: nothing to learn a reward from")
    if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(act)) and np.all(np.isfinite(prefs.label))):
        raise ValueError("segments or labels contain NaN or inf")
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
    act_t = torch.as_tensor(act, dtype=torch.float32, device=device)
    first = torch.as_tensor(prefs.first, device=device)
    second = torch.as_tensor(prefs.second, device=device)
    label = torch.as_tensor(prefs.label, dtype=torch.float32, device=device)
    history = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(prefs), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            b = order[start : start + cfg.batch_size]
            loss, parts = preference_loss(model, obs_t, act_t, first[b], second[b], label[b], cfg.kl_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        history.append(total / len(prefs))
        if log is not None:
            log(epoch, {"reward/loss": history[-1], **{f"reward/{k}": v for k, v in parts.items()}})
        if cfg.stop_accuracy > 0:
            done = preference_accuracy(model, obs, act, prefs, device) > cfg.stop_accuracy
            model.train()  # preference_accuracy left it in eval mode; callers get it back as without the rule
            if done:
                break
    return history


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties get their mean rank) of two 1-D arrays, e.g. a learned and the true reward on the
    same transitions; NaN when either is constant or has fewer than 3 entries."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@torch.no_grad()
def preference_accuracy(
    model: nn.Module, obs: np.ndarray, act: np.ndarray, prefs: Preferences, device: torch.device | str = "cpu"
) -> float:
    """How often the model's mean segment return orders a pair as the labels do (ties skipped)."""
    model.to(device).eval()
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
    act_t = torch.as_tensor(act, dtype=torch.float32, device=device)
    return ordering_accuracy(model.mean_reward(obs_t, act_t).sum(-1).cpu().numpy(), prefs)


def ordering_accuracy(returns: np.ndarray, prefs: Preferences) -> float:
    """How often segment returns ``(N,)`` order the pairs of ``prefs`` as its labels do (ties, label 0.5,
    skipped); NaN without a decided pair."""
    label = np.asarray(prefs.label)
    decided = label != 0.5
    if not decided.any():
        return float("nan")
    pred = returns[np.asarray(prefs.first)] > returns[np.asarray(prefs.second)]
    return float(np.mean(pred[decided] == (label[decided] > 0.5)))
