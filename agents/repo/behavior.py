"""Dreamer-style actor-critic in imagination: rollouts from every posterior state, lambda-returns,
actor gradients through the learned dynamics (the world model is frozen for this step).

Two stabilisers from DreamerV2/V3 on top of the authors' Dreamer v1 recipe: the lambda-returns
bootstrap from a slow (Polyak) copy of the critic, and the actor sees returns divided by their
5-95 percentile range (running, at least 1), so the entropy bonus keeps the same weight whatever
the reward scale. Without them the actor on reach saturated to constant bang-bang actions.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from agents.repo.networks import Actor
from agents.repo.world_model import WorldModel
from embodied.config import check_intervals
from embodied.nets import mixed_precision, mlp, soft_update


@dataclass
class BehaviorConfig:
    """The actor-critic trained in imagination (Dreamer's behaviour learning)."""

    horizon: int = 15  # imagination horizon in agent steps
    gamma: float = 0.99  # discount
    lam: float = 0.95  # lambda of the lambda-returns
    actor_lr: float = 8e-5  # learning rate of the actor
    critic_lr: float = 8e-5  # learning rate of the critic
    entropy_coef: float = 3e-4  # weight of the actor's entropy bonus
    grad_clip: float = 100.0  # gradient norm clip of actor and critic
    hidden: int = 200  # hidden units of the actor's and critic's layers
    slow_critic_tau: float = 0.02  # Polyak step of the bootstrapping critic (DreamerV3); 1 = no slow critic
    return_norm: bool = True  # divide returns by their running 5-95 percentile range (DreamerV3)
    return_norm_decay: float = 0.99  # decay of the running percentiles of the return normalisation

    def __post_init__(self):
        for name in ("horizon", "actor_lr", "critic_lr", "hidden"):
            if getattr(self, name) <= 0:
                raise ValueError(f"behavior.{name} must be positive, got {getattr(self, name)}")
        check_intervals(
            self,
            "behavior.",
            slow_critic_tau="(0, 1]",
            gamma="[0, 1)",
            lam="[0, 1]",
            entropy_coef="[0, inf)",
            grad_clip="(0, inf)",
            return_norm_decay="[0, 1)",
        )


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Parameters of ``modules`` get no gradient inside the block (they still pass gradients through)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets ``(H, N)`` from rewards ``(H, N)`` and values ``(H+1, N)`` (last one bootstraps)."""
    out = []
    next_return = values[-1]
    for t in reversed(range(rewards.shape[0])):
        next_return = rewards[t] + gamma * ((1 - lam) * values[t + 1] + lam * next_return)
        out.append(next_return)
    return torch.stack(out[::-1])


def percentiles(x: torch.Tensor, levels: tuple[float, ...]) -> torch.Tensor:
    """``torch.quantile(x, levels)`` of a 1-d tensor (linear interpolation), from a sort and positions known
    on the host: torch.quantile needs its levels as a device tensor, a host-to-device copy per call."""
    ordered = x.sort().values
    out = []
    for q in levels:
        rank = q * (x.numel() - 1)
        below = int(rank)
        above = min(below + 1, x.numel() - 1)
        out.append(torch.lerp(ordered[below], ordered[above], rank - below))
    return torch.stack(out)


class Behavior(nn.Module):
    def __init__(self, feat_dim: int, act_dim: int, cfg: BehaviorConfig = BehaviorConfig()):
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feat_dim, act_dim, cfg.hidden)
        self.critic = mlp(feat_dim, 1, cfg.hidden, layers=4, act=nn.ELU)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("return_range", torch.zeros(2))  # running 5th and 95th percentiles
        self.register_buffer("return_range_init", torch.zeros((), dtype=torch.bool))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)

    def imagine(self, model: WorldModel, h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll the actor through the prior for ``horizon`` steps: features ``(H+1, N, F)``, entropies ``(H, N)``."""
        feats, entropies = [torch.cat([h, z], -1)], []
        for _ in range(self.cfg.horizon):
            action, entropy = self.actor(feats[-1])
            h, z, _, _ = model.rssm.img_step(h, z, action)
            feats.append(torch.cat([h, z], -1))
            entropies.append(entropy)
        return torch.stack(feats), torch.stack(entropies)

    def return_scale(self, returns: torch.Tensor) -> torch.Tensor:
        """max(1, P95 - P5) of the returns seen so far (exponential moving average of the percentiles).

        Branch-free on device values (the first call takes the percentiles as they are), so it never
        waits for the device: a CUDA graph can capture it."""
        if not self.cfg.return_norm:
            return torch.ones((), device=returns.device)
        quantiles = percentiles(returns.detach().flatten().float(), (0.05, 0.95))
        averaged = torch.lerp(self.return_range, quantiles, 1 - self.cfg.return_norm_decay)
        self.return_range.copy_(torch.where(self.return_range_init, averaged, quantiles))
        self.return_range_init.fill_(True)
        return torch.clamp(self.return_range[1] - self.return_range[0], min=1.0)

    def update(self, model: WorldModel, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One actor and one critic step from ``states``; metrics as 0-d tensors (no host synchronisation)."""
        cfg = self.cfg
        h = states["h"].reshape(-1, states["h"].shape[-1]).detach()
        z = states["z"].reshape(-1, states["z"].shape[-1]).detach()
        with frozen(model, self.critic), mixed_precision(self, model.cfg.amp):
            feats, entropy = self.imagine(model, h, z)
            rewards = model.reward_head(feats[1:]).squeeze(-1).float()
            values = self.slow_critic(feats).squeeze(-1).float()
            returns = lambda_returns(rewards, values, cfg.gamma, cfg.lam)
            discount = cfg.gamma ** torch.arange(cfg.horizon, device=h.device, dtype=h.dtype)[:, None]
            scale = self.return_scale(returns)
            actor_loss = -(discount * (returns / scale + cfg.entropy_coef * entropy)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.actor_opt.step()

        with mixed_precision(self, model.cfg.amp):
            value_pred = self.critic(feats[:-1].detach()).squeeze(-1).float()
        critic_loss = (discount * (value_pred - returns.detach()) ** 2).mean() / 2
        self.critic_opt.zero_grad()
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
        self.critic_opt.step()
        soft_update(self.slow_critic, self.critic, cfg.slow_critic_tau)
        return {
            "behavior/actor_loss": actor_loss.detach(),
            "behavior/critic_loss": critic_loss.detach(),
            "behavior/imagined_return": returns.detach().mean(),
            "behavior/entropy": entropy.detach().mean(),
            "behavior/return_scale": scale.detach(),
        }
