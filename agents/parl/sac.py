"""Soft Actor-Critic (Haarnoja et al. 2018), the lower level of PARL and PEBBLE.

Our own rather than Stable-Baselines3's: PARL needs the actor as a differentiable function of its
parameters (log-probabilities of logged actions, Hessian-vector products), and the replay buffer
must be relabelled in place whenever the learned reward changes. Twin Q, target networks,
tanh-Gaussian actor, automatic entropy tuning (target -|A|).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embodied.checkpoint import load_trained_state
from embodied.config import check_intervals
from embodied.nets import TwinQ, check_finite, mlp, soft_update

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """The lower level: Soft Actor-Critic's networks and updates."""

    hidden: int = 256  # hidden units per layer of the actor and the critics
    actor_lr: float = 3e-4  # learning rate of the actor
    critic_lr: float = 3e-4  # learning rate of the critics
    alpha_lr: float = 3e-4  # learning rate of the entropy temperature alpha
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak step of the target critics
    batch_size: int = 256  # transitions per update
    init_alpha: float = 0.1  # initial entropy temperature

    def __post_init__(self):
        for name in ("hidden", "actor_lr", "critic_lr", "alpha_lr", "tau", "batch_size", "init_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sac.{name} must be positive, got {getattr(self, name)}")
        check_intervals(self, "sac.", gamma="[0, 1)", tau="(0, 1]")  # a Polyak step past 1 overshoots the critics


class TanhGaussianActor(nn.Module):
    """pi(a|s): tanh of a Gaussian; ``act(obs)`` returns the deterministic (mean) action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden, layers=3)

    def _dist(self, obs):
        mean, log_std = self.net(obs).chunk(2, -1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std.exp()

    def sample(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability ``(B, A), (B,)``."""
        mean, std = self._dist(obs)
        u = mean + std * torch.randn_like(mean)
        action = torch.tanh(u)
        log_prob = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return action, log_prob

    def log_prob(self, obs, action) -> torch.Tensor:
        """log pi(action|obs) of given (logged) actions, differentiable in the actor's parameters."""
        action = action.clamp(-0.999999, 0.999999)
        u = torch.atanh(action)
        mean, std = self._dist(obs)
        log_prob = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        return log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)

    def kl_from(self, obs, mean_old: torch.Tensor, std_old: torch.Tensor) -> torch.Tensor:
        """Mean KL(pi_old || pi) over ``obs`` (in pre-tanh space; tanh is a bijection, so it is the same).

        Its Hessian at pi = pi_old is the Fisher information of the policy.
        """
        mean, std = self._dist(obs)
        old = torch.distributions.Normal(mean_old, std_old)
        return torch.distributions.kl_divergence(old, torch.distributions.Normal(mean, std)).sum(-1).mean()

    @torch.no_grad()
    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
        if deterministic:
            return torch.tanh(self._dist(x)[0]).cpu().numpy()
        return self.sample(x)[0].cpu().numpy()


class ReplayBuffer:
    """Transitions in preallocated arrays; rewards can be rewritten (relabelled) at any time."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.true_rew = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.success = np.zeros(capacity, np.float32)  # the env's success flag after the step (diagnostics only)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, obs, act, true_rew, next_obs, done, success: float = 0.0) -> None:
        i = self.pos
        self.obs[i], self.act[i], self.true_rew[i], self.next_obs[i], self.done[i] = obs, act, true_rew, next_obs, done
        self.success[i] = success
        self.rew[i] = true_rew
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator, device) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size, size=n)
        return tuple(
            torch.as_tensor(x[idx], device=device) for x in (self.obs, self.act, self.rew, self.next_obs, self.done)
        )

    def state_dict(self) -> dict:
        return {
            k: getattr(self, k) for k in ("obs", "next_obs", "act", "rew", "true_rew", "done", "success", "size", "pos")
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore into this buffer's arrays (its capacity may be larger, e.g. a resumed run made longer)."""
        size, pos = state["size"], state["pos"]
        if not all(type(v) is int for v in (size, pos)) or not 0 <= pos <= size:  # pos == size until it is full
            raise ValueError(f"checkpointed buffer has size {size!r} and position {pos!r}")
        if size > self.capacity:
            raise ValueError(f"checkpointed buffer holds {size} transitions, more than capacity {self.capacity}")
        for k in ("obs", "next_obs", "act", "rew", "true_rew", "done", "success"):
            if k in state:  # checkpoints written before success flags were kept have none
                getattr(self, k)[:size] = state[k][:size]
        self.size = size
        # sampling is uniform, so order does not matter: keep writing after the restored data, or
        # where the checkpointed ring buffer would have written next when it is just as large
        self.pos = pos % self.capacity if self.size == self.capacity else self.size


class SAC:
    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig = SACConfig(), device="cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.actor_kwargs = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=cfg.hidden)

    def reset_critic(self) -> None:
        """Fresh critics, target and optimizer (PEBBLE does this after unsupervised pre-training)."""
        obs_dim, act_dim = self.actor_kwargs["obs_dim"], self.actor_kwargs["act_dim"]
        self.critic = TwinQ(obs_dim, act_dim, self.cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.critic_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def update(self, obs, act, rew, next_obs, done) -> dict[str, float]:
        cfg = self.cfg
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)
            target_q = torch.min(*self.critic_target(next_obs, next_act)) - self.alpha * next_logp
            target = rew + cfg.gamma * (1 - done) * target_q
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        new_act, logp = self.actor.sample(obs)
        actor_loss = (self.alpha * logp - torch.min(*self.critic(obs, new_act))).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        soft_update(self.critic_target, self.critic, cfg.tau)
        check_finite(
            "SAC",
            "lower its learning rates (--sac.actor-lr, --sac.critic-lr, --sac.alpha-lr)",
            [*self.actor.named_parameters("actor"), *self.critic.named_parameters("critic")]
            + [("log_alpha", self.log_alpha)],
        )
        return {
            "sac/critic_loss": critic_loss.item(),
            "sac/actor_loss": actor_loss.item(),
            "sac/alpha": self.alpha.item(),
            "sac/entropy": -logp.mean().item(),
            "sac/q_mean": q1.mean().item(),
        }

    def state_dict(self) -> dict:
        state = {
            k: getattr(self, k).state_dict()
            for k in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt")
        }
        state["log_alpha"] = self.log_alpha.detach().cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k == "log_alpha":
                with torch.no_grad():
                    self.log_alpha.copy_(v)
            else:
                load_trained_state(getattr(self, k), v)


def train_on_fixed_reward(
    env,
    eval_env,
    reward,
    steps: int,
    seed: int,
    rng: np.random.Generator,
    cfg: SACConfig = SACConfig(),
    random_steps: int = 1000,
    eval_every: int = 1000,
    eval_episodes: int = 5,
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """SAC from scratch on ``reward(obs, action) -> float`` instead of the env's reward: PARL's lower level for
    a reward held still, which tells what a learned reward does to a learner without the feedback loop.

    ``random_steps`` uniform actions, then one update per env step. Returns one row per evaluation (every
    ``eval_every`` env steps, ``eval_episodes`` episodes): ``step``, ``success_rate`` (at any step),
    ``success_final`` (at the last step) and the true ``return``.
    """
    from embodied.evaluation import evaluate

    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    sac = SAC(obs_dim, act_dim, cfg)
    buffer = ReplayBuffer(obs_dim, act_dim, steps)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed * 1000)
    episode, rows = 0, []
    for step in range(1, steps + 1):
        action = env.action_space.sample() if step <= random_steps else sac.actor.act(obs, deterministic=False)
        next_obs, true_r, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, true_r, next_obs, float(terminated))
        buffer.rew[(buffer.pos - 1) % buffer.capacity] = reward(obs, action)
        obs = next_obs
        if step > random_steps:
            sac.update(*buffer.sample(cfg.batch_size, rng, "cpu"))
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed * 1000 + episode)
        if step % eval_every == 0:
            result = evaluate(eval_env, sac.actor.act, eval_episodes, seed=10_000 + seed, max_steps=max_steps)
            rows.append(
                {
                    "step": step,
                    "success_rate": result["success_rate"],
                    "success_final": result["success_final"],
                    "return": result["return_mean"],
                }
            )
    return rows
