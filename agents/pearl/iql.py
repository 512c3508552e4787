"""Implicit Q-Learning (Kostrikov et al. 2022), the offline RL step of PEARL.

V is fit by expectile regression on Q (never querying out-of-dataset actions), Q by TD on V, and
the policy by advantage-weighted regression. Defaults are the paper's: hidden 256x2, lr 3e-4,
gamma 0.99, tau 0.005, expectile 0.7, temperature 3.0, batch 256.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embodied.checkpoint import load_trained_state
from embodied.config import check_intervals
from embodied.nets import TwinQ, check_finite, mlp, soft_update


@dataclass
class IQLConfig:
    """Implicit Q-learning (Kostrikov et al. 2022) on the relabelled target data."""

    hidden: int = 256  # hidden units of the policy, Q and value networks
    lr: float = 3e-4  # learning rate of all three
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak step of the target Q network
    expectile: float = 0.7  # expectile of the value regression (0.5: the mean; towards 1: the max)
    temperature: float = field(default=3.0, metadata={"option": False})  # the agent's --iql-temperature
    batch_size: int = 256  # transitions per gradient step
    max_weight: float = 100.0  # clip of the advantage weights exp(temperature * A)

    def __post_init__(self):
        for name in ("hidden", "lr", "batch_size", "max_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"iql.{name} must be positive, got {getattr(self, name)}")
        check_intervals(self, "iql.", expectile="(0, 1)", tau="(0, 1]", gamma="[0, 1)")


class IQLPolicy(nn.Module):
    """Gaussian policy with a tanh-squashed mean; ``act(obs)`` is deterministic (the mean)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, layers=3)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.net(obs))
        return torch.distributions.Normal(mean, self.log_std.clamp(-5, 2).exp())

    @torch.no_grad()
    def act(self, obs) -> np.ndarray:
        device = self.log_std.device
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
        return torch.tanh(self.net(x)).cpu().numpy()


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2: weight ``expectile`` where diff > 0 (Q above V), ``1 - expectile`` below."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff**2).mean()


class IQL:
    """Holds networks and optimisers; ``update(batch)`` does one gradient step on each."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: IQLConfig = IQLConfig(), device: torch.device | str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.q = TwinQ(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = mlp(obs_dim, 1, cfg.hidden, layers=3).to(self.device)
        self.policy = IQLPolicy(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.policy_kwargs = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=cfg.hidden)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=cfg.lr)
        self.pi_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)

    def update(self, obs, act, rew, next_obs, done) -> dict[str, float]:
        cfg = self.cfg
        with torch.no_grad():
            q_t = torch.min(*self.q_target(obs, act))
        v = self.v(obs).squeeze(-1)
        v_loss = expectile_loss(q_t - v, cfg.expectile)
        self.v_opt.zero_grad()
        v_loss.backward()
        self.v_opt.step()

        with torch.no_grad():
            target = rew + cfg.gamma * (1.0 - done) * self.v(next_obs).squeeze(-1)
        q1, q2 = self.q(obs, act)
        q_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.q_opt.zero_grad()
        q_loss.backward()
        self.q_opt.step()
        soft_update(self.q_target, self.q, cfg.tau)

        with torch.no_grad():
            weight = torch.exp(cfg.temperature * (q_t - v.detach())).clamp(max=cfg.max_weight)
        log_prob = self.policy.distribution(obs).log_prob(act.clamp(-0.999, 0.999)).sum(-1)
        pi_loss = -(weight * log_prob).mean()
        self.pi_opt.zero_grad()
        pi_loss.backward()
        self.pi_opt.step()
        check_finite(
            "IQL",
            "lower --iql.lr, --iql-temperature or --iql.max-weight",
            [*self.q.named_parameters("q"), *self.v.named_parameters("v"), *self.policy.named_parameters("policy")],
        )
        return {
            "iql/v_loss": v_loss.item(),
            "iql/q_loss": q_loss.item(),
            "iql/pi_loss": pi_loss.item(),
            "iql/v_mean": v.mean().item(),
        }

    def state_dict(self) -> dict:
        return {
            name: getattr(self, name).state_dict()
            for name in ("q", "q_target", "v", "policy", "q_opt", "v_opt", "pi_opt")
        }

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            load_trained_state(getattr(self, name), value)


class TransitionBuffer:
    """Flat offline transitions on the training device; ``sample(n, gen)`` draws a minibatch."""

    def __init__(self, obs, act, rew, next_obs, done, device):
        as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)  # noqa: E731
        self.obs, self.act, self.rew, self.next_obs, self.done = map(as_t, (obs, act, rew, next_obs, done))

    def __len__(self) -> int:
        return len(self.obs)

    def sample(self, n: int, gen: torch.Generator):
        idx = torch.randint(0, len(self), (n,), generator=gen).to(self.obs.device)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]


def transitions_from_episodes(episodes, rewards: list[np.ndarray]):
    """Stack episodes into (obs, act, rew, next_obs, done); ``rewards[i]`` replaces episode i's rewards."""
    obs = np.concatenate([e.observations[:-1] for e in episodes])
    next_obs = np.concatenate([e.observations[1:] for e in episodes])
    act = np.concatenate([e.actions for e in episodes])
    done = np.concatenate([e.terminations for e in episodes]).astype(np.float32)  # time limits are not terminal
    return obs, act, np.concatenate(rewards), next_obs, done
