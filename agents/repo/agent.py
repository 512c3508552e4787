"""RePo agent: world model + behaviour, acting by filtering its latent state online."""

from __future__ import annotations

import numpy as np
import torch

from agents.repo.behavior import Behavior, BehaviorConfig
from agents.repo.networks import preprocess
from agents.repo.world_model import WorldModel, WorldModelConfig
from agents.repo.cuda_graph import GraphedUpdate, set_capturable
from embodied.checkpoint import load_module_state, load_optimizer_state


class RePoAgent:
    def __init__(
        self,
        act_dim: int,
        wm_cfg: WorldModelConfig = WorldModelConfig(),
        beh_cfg: BehaviorConfig = BehaviorConfig(),
        device="cpu",
        expl_noise: float = 0.0,
        cuda_graph: bool = False,
    ):
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"--cuda-graph needs a CUDA device, got {self.device}")
        self.expl_noise = expl_noise  # Gaussian noise on exploring actions (Dreamer's 0.3), on top of the actor's own
        self.act_dim = act_dim
        self.model = WorldModel(act_dim, wm_cfg).to(self.device)
        self.behavior = Behavior(self.model.rssm.feat_dim, act_dim, beh_cfg).to(self.device)
        self.cuda_graph = cuda_graph
        self._graph: GraphedUpdate | None = None  # captured at the first update

    def optimizers(self) -> list[torch.optim.Optimizer]:
        opts = [
            self.model.opt,
            self.model.beta_opt,
            self.model.probe_opt,
            self.behavior.actor_opt,
            self.behavior.critic_opt,
        ]
        return [opt for opt in opts if opt is not None]

    def _update(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor) -> dict[str, torch.Tensor]:
        """World model, then actor and critic: one update, metrics as 0-d tensors (nothing waits for the device)."""
        metrics, states = self.model.update(obs, act, rew)
        metrics.update(self.behavior.update(self.model, states))
        return metrics

    def initial_state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, z = self.model.rssm.initial(1, self.device)
        return h, z, torch.zeros(1, self.act_dim, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, state, explore: bool = False) -> tuple[np.ndarray, tuple]:
        """One step: update the latent state with ``obs`` (uint8 HWC), pick an action."""
        h, z, prev_action = state
        embed = self.model.encoder(preprocess(torch.as_tensor(obs, device=self.device)[None]))
        h, z = self.model.rssm.filter_step(h, z, prev_action, embed)
        action, _ = self.behavior.actor(torch.cat([h, z], -1), deterministic=not explore)
        if explore and self.expl_noise > 0:
            action = (action + self.expl_noise * torch.randn_like(action)).clamp(-1, 1)
        return action[0].cpu().numpy(), (h, z, action)

    def train_step(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray) -> dict[str, float]:
        if self.cuda_graph:
            if self._graph is None:
                self._graph = GraphedUpdate(self._update, [self.model, self.behavior], self.optimizers(), self.device)
            metrics = self._graph(obs, act, rew)
        else:
            metrics = self._update(*(torch.as_tensor(x, device=self.device) for x in (obs, act, rew)))
        values = torch.stack([v.float() for v in metrics.values()]).tolist()  # one wait for the device
        return dict(zip(metrics, values))

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "behavior": self.behavior.state_dict(),
            "model_opt": self.model.opt.state_dict(),
            "beta_opt": self.model.beta_opt.state_dict(),
            "probe_opt": self.model.probe_opt.state_dict() if self.model.probe_opt else None,
            "actor_opt": self.behavior.actor_opt.state_dict(),
            "critic_opt": self.behavior.critic_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        load_module_state(self.model, state["model"])
        load_module_state(self.behavior, state["behavior"])
        load_optimizer_state(self.model.opt, state["model_opt"])
        load_optimizer_state(self.model.beta_opt, state["beta_opt"])
        if state.get("probe_opt") and self.model.probe_opt:
            load_optimizer_state(self.model.probe_opt, state["probe_opt"])
        load_optimizer_state(self.behavior.actor_opt, state["actor_opt"])
        load_optimizer_state(self.behavior.critic_opt, state["critic_opt"])
        # a checkpoint from a captured run loads into an eager one and back; new optimizer states: recapture
        set_capturable(self.optimizers(), self.cuda_graph)
        self._graph = None


def run_episode(
    env,
    agent: RePoAgent,
    seed: int,
    explore: bool,
    rng: np.random.Generator | None = None,
    random_policy: bool = False,
    frames: list | None = None,
    clean: list | None = None,
    finals: list | None = None,
):
    """One episode; returns (obs (T+1,...), act (T, A), rew (T,), success at any step).

    ``frames`` gets the rendered video frames, ``clean`` each observation without its distractor
    background (``clean_pixels``), aligned with the returned observations; ``finals`` the success of
    the last step (what Stable-Baselines3's evaluation counts).
    """
    obs, _ = env.reset(seed=seed)
    state = agent.initial_state()
    observations, actions, rewards, success, done = [obs], [], [], False, False
    if clean is not None:
        clean.append(env.unwrapped.clean_pixels())
    while not done:
        if random_policy:
            action = rng.uniform(-1, 1, agent.act_dim).astype(np.float32)
        else:
            action, state = agent.act(obs, state, explore)
        obs, reward, terminated, truncated, info = env.step(action)
        if frames is not None:
            frames.append(env.render())
        if clean is not None:
            clean.append(env.unwrapped.clean_pixels())
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        success = success or bool(info.get("success", False))
        done = terminated or truncated
    if finals is not None:
        finals.append(bool(info.get("success", False)))
    return np.stack(observations), np.stack(actions).astype(np.float32), np.asarray(rewards, np.float32), success


def evaluate_agent(env, agent: RePoAgent, episodes: int, seed: int) -> dict[str, float]:
    """Return and success over seeded episodes: ``success_rate`` at any step (Meta-World's), ``success_final``
    at the last step."""
    finals: list[bool] = []
    returns, successes = [], []
    for i in range(episodes):  # one episode's frames held at a time
        _, _, rewards, success = run_episode(env, agent, seed + i, explore=False, finals=finals)
        returns.append(float(rewards.sum()))
        successes.append(success)
    return {
        "return_mean": float(np.mean(returns)),
        "success_rate": float(np.mean(successes)),
        "success_final": float(np.mean(finals)),
    }
