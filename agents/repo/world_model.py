"""The latent world model, trained as RePo (no reconstruction; KL held to a budget by a dual
variable) or as Dreamer (pixel reconstruction; KL with free nats), selected by ``mode``.

RePo's objective (Zhu et al. 2023): reward NLL + beta * (KL - target_kl), with KL balanced
5/6 toward the prior (training the prior to predict the posterior) and 1/6 toward the posterior;
beta = exp(log_beta) rises by dual ascent while KL exceeds its budget and falls below it.
A decoder, if any, is a probe on detached features: no reconstruction gradient reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from agents.repo.networks import RSSM, ConvDecoder, ConvEncoder, normal_kl, normal_log_prob, preprocess
from embodied.config import check_intervals
from embodied.nets import mixed_precision, mlp

MODES = ("repo", "dreamer")


@dataclass
class WorldModelConfig:
    """The latent world model (RSSM, reward head, KL term), RePo's or Dreamer's."""

    mode: str = field(default="repo", metadata={"option": False})  # set from the agent's --mode
    deter: int = 200  # deterministic state size of the RSSM
    stoch: int = 30  # stochastic state size of the RSSM
    hidden: int = 200  # hidden units of the RSSM's and reward head's layers
    model_lr: float = 3e-4  # learning rate of the world model
    grad_clip: float = 100.0  # gradient norm clip of the world model
    target_kl: float = 3.0  # RePo: the KL budget (nats) that the dual variable beta enforces
    init_beta: float = 1e-5  # RePo: initial value of the dual variable beta
    beta_lr: float = field(
        default=1e-4,
        metadata={
            "help": "RePo: dual ascent step on log beta (Adam); the authors' 1e-4 suits ~1e5 updates, a short run "
            "needs ~1e-2"
        },
    )
    kl_balance: float = 5 / 6  # weight of KL(sg(post) || prior) in the KL term
    free_nats: float = 3.0  # Dreamer: KL below this many nats is not penalised
    kl_scale: float = 1.0  # Dreamer: weight of the KL term
    probe_decoder: bool = False  # RePo: a reconstruction probe on detached features (for inspection; costs time)
    amp: bool = field(default=False, metadata={"option": False})  # set from the agent's --amp
    reward_scale: float = field(
        default=0.1,
        metadata={
            "help": "rewards as the model sees them: Meta-World's per-step [0, 10] to the [0, 1] of the DMC tasks "
            "the hyperparameters were tuned on"
        },
    )

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"world model mode must be one of {MODES}, got {self.mode!r}")
        for name in ("deter", "stoch", "hidden", "model_lr", "target_kl", "init_beta", "beta_lr", "reward_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"wm.{name} must be positive, got {getattr(self, name)}")
        check_intervals(
            self, "wm.", grad_clip="(0, inf)", kl_balance="[0, 1]", free_nats="[0, inf)", kl_scale="[0, inf)"
        )


class WorldModel(nn.Module):
    def __init__(self, act_dim: int, cfg: WorldModelConfig = WorldModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder()
        self.rssm = RSSM(self.encoder.out_dim, act_dim, cfg.deter, cfg.stoch, cfg.hidden)
        self.reward_head = mlp(self.rssm.feat_dim, 1, cfg.hidden, layers=3, act=nn.ELU)
        use_decoder = cfg.mode == "dreamer" or cfg.probe_decoder
        self.decoder = ConvDecoder(self.rssm.feat_dim) if use_decoder else None
        self.log_beta = nn.Parameter(torch.tensor(math.log(cfg.init_beta)), requires_grad=cfg.mode == "repo")
        model_params = [p for n, p in self.named_parameters() if n != "log_beta" and not n.startswith("decoder.")]
        if cfg.mode == "dreamer" and self.decoder is not None:
            model_params += list(self.decoder.parameters())
        self.model_params = model_params
        self.opt = torch.optim.Adam(model_params, lr=cfg.model_lr)
        self.beta_opt = torch.optim.Adam([self.log_beta], lr=cfg.beta_lr)
        self.probe_opt = (
            torch.optim.Adam(self.decoder.parameters(), lr=cfg.model_lr)
            if cfg.mode == "repo" and self.decoder is not None
            else None
        )

    @property
    def beta(self) -> float:
        return self.log_beta.exp().item()

    def features(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([states["h"], states["z"]], -1)

    def losses(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor) -> tuple[dict, dict]:
        """``obs (B, L+1, H, W, 3)`` uint8, ``act (B, L, A)``, ``rew (B, L)`` -> (loss terms, states)."""
        images = preprocess(obs[:, 1:])  # frame 0 only starts the sequence: no loss term looks at it
        rew = rew * self.cfg.reward_scale
        states = self.rssm.observe(self.encoder(images), act)
        feat = self.features(states)
        reward_pred = self.reward_head(feat).squeeze(-1).float()
        reward_nll = -normal_log_prob(rew, reward_pred, 1.0).mean()
        post = states["post_mean"], states["post_std"]
        prior = states["prior_mean"], states["prior_std"]
        sg_post = tuple(x.detach() for x in post)
        sg_prior = tuple(x.detach() for x in prior)
        kl_prior = normal_kl(*sg_post, *prior).sum(-1).mean()
        kl_post = normal_kl(*post, *sg_prior).sum(-1).mean()
        kl = self.cfg.kl_balance * kl_prior + (1 - self.cfg.kl_balance) * kl_post
        terms = {
            "reward_nll": reward_nll,
            "kl": kl,
            "reward_mse": ((reward_pred.detach() - rew) ** 2).mean(),
        }  # logged only: the reward error
        if self.decoder is not None:
            target = images
            source = feat if self.cfg.mode == "dreamer" else feat.detach()  # RePo: probe only
            terms["recon"] = ((self.decoder(source).float() - target) ** 2).sum((-3, -2, -1)).mean() / 2
        return terms, states

    def model_loss(self, terms: dict) -> torch.Tensor:
        if self.cfg.mode == "repo":
            return terms["reward_nll"] + self.log_beta.exp().detach() * (terms["kl"] - self.cfg.target_kl)
        kl = torch.clamp(terms["kl"], min=self.cfg.free_nats)
        return terms["reward_nll"] + terms["recon"] + self.cfg.kl_scale * kl

    def dual_update(self, kl: float | torch.Tensor) -> None:
        """Dual ascent on log_beta: up while KL > target, down while below (``kl``: a number or a detached tensor)."""
        if self.cfg.mode != "repo":
            return
        loss = -self.log_beta * (kl - self.cfg.target_kl)
        self.beta_opt.zero_grad()
        loss.backward()
        self.beta_opt.step()

    def update(self, obs, act, rew) -> tuple[dict[str, torch.Tensor], dict]:
        """One gradient step on ``obs, act, rew`` tensors. Returns the metrics as 0-d tensors and the
        detached posterior states; nothing in it waits for the device, so a CUDA graph can capture it."""
        with mixed_precision(self, self.cfg.amp):
            terms, states = self.losses(obs, act, rew)
            loss = self.model_loss(terms)
        self.opt.zero_grad()
        if self.probe_opt is not None:
            self.probe_opt.zero_grad()
            loss = loss + terms["recon"]  # only the probe's parameters receive this gradient (detached input)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model_params, self.cfg.grad_clip)
        self.opt.step()
        if self.probe_opt is not None:
            self.probe_opt.step()
        self.dual_update(terms["kl"].detach())
        metrics = {f"model/{k}": v.detach() for k, v in terms.items()}
        metrics["model/beta"] = self.log_beta.detach().exp()
        return metrics, {k: v.detach() for k, v in states.items()}

    def train_step(self, obs, act, rew) -> tuple[dict[str, float], dict]:
        metrics, states = self.update(obs, act, rew)
        return {k: v.item() for k, v in metrics.items()}, states
