"""RePo's trained agent as a policy file: what acting needs (encoder, RSSM, actor), nothing it trained with.

Unlike the state policies, it has memory: it filters its latent state over the episode's frames, so whoever runs
it calls ``reset()`` at each episode's start (``embodied.policies.start_episode``). It is called at every env
step and holds each action for ``action_repeat`` steps, seeing the frame after the last, as the agent did in
training; so ``embodied eval`` and ``embodied video`` run it on the plain pixel env.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agents.repo.networks import RSSM, Actor, ConvEncoder, preprocess

FRAME_SHAPE = (64, 64, 3)  # the encoder's four stride-2 convolutions are sized for it


class RePoPolicy(nn.Module):
    def __init__(self, act_dim: int, deter: int, stoch: int, hidden: int, actor_hidden: int, action_repeat: int):
        super().__init__()
        if not isinstance(action_repeat, int) or action_repeat < 1:  # a file's kwargs: 2.5 would misalign every step
            raise ValueError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
        self.encoder = ConvEncoder()
        self.rssm = RSSM(self.encoder.out_dim, act_dim, deter, stoch, hidden)
        self.actor = Actor(self.rssm.feat_dim, act_dim, actor_hidden)
        self.act_dim, self.action_repeat = act_dim, action_repeat
        self.observation_shape = FRAME_SHAPE
        self.reset()

    @classmethod
    def from_agent(cls, agent, action_repeat: int) -> tuple[RePoPolicy, dict]:
        """The acting part of a ``RePoAgent`` on the CPU, and the kwargs that rebuild it."""
        model, rssm = agent.model, agent.model.rssm
        kwargs = {
            "act_dim": agent.act_dim,
            "deter": rssm.deter,
            "stoch": rssm.stoch,
            "hidden": model.cfg.hidden,
            "actor_hidden": agent.behavior.cfg.hidden,
            "action_repeat": action_repeat,
        }
        policy = cls(**kwargs)
        encoder = getattr(model.encoder, "_orig_mod", model.encoder)  # torch.compile wraps it
        for mine, theirs in ((policy.encoder, encoder), (policy.rssm, rssm), (policy.actor, agent.behavior.actor)):
            mine.load_state_dict({k: v.detach().cpu() for k, v in theirs.state_dict().items()})
        return policy.eval(), kwargs

    def reset(self) -> None:
        """A new episode: the initial latent state, and a new action at the next call."""
        self._state: tuple[torch.Tensor, ...] | None = None
        self._calls = 0

    @torch.no_grad()
    def act(self, obs) -> np.ndarray:
        """The action for this env step: a new one every ``action_repeat`` calls, from the latent state filtered
        with ``obs`` (uint8 ``(64, 64, 3)``); the same one in between."""
        if self._calls % self.action_repeat == 0:
            device = next(self.parameters()).device
            if self._state is None:
                h, z = self.rssm.initial(1, device)
                self._state = (h, z, torch.zeros(1, self.act_dim, device=device))
            h, z, previous = self._state
            embed = self.encoder(preprocess(torch.as_tensor(np.asarray(obs), device=device)[None]))
            h, z = self.rssm.filter_step(h, z, previous, embed)
            action, _ = self.actor(torch.cat([h, z], -1), deterministic=True)
            self._state = (h, z, action)
        self._calls += 1
        return self._state[2][0].cpu().numpy()
