"""Test-time adaptation of a trained RePo agent to new distractors, without rewards.

Everything but the encoder is frozen (dynamics, reward head, actor, critic). The encoder is
trained on target-environment observations collected by the agent's own policy so that
(1) target embeddings fall inside the *support* of the source embeddings: a discriminator
separates source from target embeddings, the source side reweighted by a learned density ratio
tau(e) (mean held at 1 by a dual variable), so the encoder needs to reach where the source has
mass, not to match its whole distribution; and (2) the frozen dynamics still predict the
target posteriors (the KL term of RePo's objective, which needs no reward).

    embodied train repo ... --run-name src          # train on clean pixels
    python -m agents.repo.adapt --source-run runs/src --target-variant distractor
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from agents.repo.agent import RePoAgent, evaluate_agent, run_episode
from agents.repo.behavior import frozen
from agents.repo.networks import preprocess
from agents.repo.train import RePoConfig, build_agent, make_pixel_env
from embodied.checkpoint import load_checkpoint, save_checkpoint, seed_everything
from embodied.config import config_from_dict, parse_config
from embodied.device import resolve_device
from embodied.errors import EmbodiedError
from embodied.nets import mlp
from embodied.replay import SequenceReplay
from embodied.runs import Run, progress


@dataclass
class AdaptConfig:
    """Reward-free test-time adaptation of a RePo encoder to a new environment variant."""

    source_run: Path = Path("runs/repo")
    target_variant: str = "distractor"
    collect_episodes: int = 10
    steps: int = 2000
    batch_size: int = 16
    seq_len: int = 32
    encoder_lr: float = 1e-4
    disc_lr: float = 3e-4
    align_coef: float = 1.0
    kl_coef: float = 1.0
    eval_episodes: int = 5
    device: str = "auto"
    seed: int = 0
    run_dir: Path = Path("runs")
    run_name: str | None = None


class SupportAligner(nn.Module):
    """Discriminator on embeddings plus a density ratio tau on source embeddings (dual-constrained mean 1)."""

    def __init__(self, embed_dim: int, hidden: int = 256):
        super().__init__()
        self.disc = mlp(embed_dim, 1, hidden, layers=3)
        self.log_tau = mlp(embed_dim, 1, hidden, layers=3)
        self.u = nn.Parameter(torch.tensor(1.0))

    def step(self, src: torch.Tensor, tgt: torch.Tensor, opt: torch.optim.Optimizer, u_opt: torch.optim.Optimizer) -> dict:
        """Train the discriminator (tau-weighted source = 1, target = 0), tau, and its dual variable."""
        tau = self.log_tau(src).exp().squeeze(-1)
        d_src, d_tgt = self.disc(src).squeeze(-1), self.disc(tgt).squeeze(-1)
        disc_loss = (tau.detach() * F.binary_cross_entropy_with_logits(d_src, torch.ones_like(d_src), reduction="none")).mean() \
            + F.binary_cross_entropy_with_logits(d_tgt, torch.zeros_like(d_tgt))
        # tau puts source mass where the discriminator thinks "target-like" (low d): min E[tau d] s.t. E[tau] = 1
        tau_loss = (tau * d_src.detach()).mean() + self.u.detach() * (tau.mean() - 1)
        opt.zero_grad()
        (disc_loss + tau_loss).backward()
        opt.step()
        u_loss = -self.u * (tau.mean().detach() - 1)
        u_opt.zero_grad()
        u_loss.backward()
        u_opt.step()
        return {"adapt/disc_loss": disc_loss.item(), "adapt/tau_mean": tau.mean().item()}


def load_source(source_run: Path, device) -> tuple[RePoConfig, RePoAgent, SequenceReplay]:
    path = Path(source_run) / "checkpoints" / "last.pt"
    if not path.exists():
        raise EmbodiedError(f"no RePo checkpoint at {path}; train one first with `embodied train repo`")
    state = load_checkpoint(path)
    cfg = config_from_dict(RePoConfig, state["config"])
    env = make_pixel_env(cfg.task, cfg.variant, cfg.max_episode_steps, cfg.action_repeat)
    agent = build_agent(cfg, env.action_space.shape[0], device)
    agent.load_state_dict(state["agent"])
    replay = SequenceReplay()
    replay.load_state_dict(state["replay"])
    return cfg, agent, replay


def adapt_encoder(agent: RePoAgent, source: SequenceReplay, target: SequenceReplay, cfg: AdaptConfig,
                  rng: np.random.Generator, log=None) -> None:
    """Train ``agent.model.encoder`` only; every other parameter is left exactly as it was."""
    device = agent.device
    model = agent.model
    source_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    aligner = SupportAligner(model.encoder.out_dim).to(device)
    enc_opt = torch.optim.Adam(model.encoder.parameters(), lr=cfg.encoder_lr)
    disc_opt = torch.optim.Adam(list(aligner.disc.parameters()) + list(aligner.log_tau.parameters()), lr=cfg.disc_lr)
    u_opt = torch.optim.Adam([aligner.u], lr=cfg.disc_lr)
    frozen_parts = [model.rssm, model.reward_head, agent.behavior] + ([model.decoder] if model.decoder is not None else [])
    bar = progress(total=cfg.steps, desc="adapt encoder")
    for step in range(cfg.steps):
        src_obs = torch.as_tensor(source.sample(cfg.batch_size, cfg.seq_len, rng)[0], device=device)
        tgt_obs, tgt_act, _ = target.sample(cfg.batch_size, cfg.seq_len, rng)  # rewards unused
        tgt_obs, tgt_act = torch.as_tensor(tgt_obs, device=device), torch.as_tensor(tgt_act, device=device)
        with torch.no_grad():
            src_embed = source_encoder(preprocess(src_obs)).flatten(0, 1)
        tgt_embed_seq = model.encoder(preprocess(tgt_obs))
        metrics = aligner.step(src_embed, tgt_embed_seq.detach().flatten(0, 1), disc_opt, u_opt)
        with frozen(aligner, *frozen_parts):
            d_tgt = aligner.disc(tgt_embed_seq.flatten(0, 1)).squeeze(-1)
            align_loss = F.binary_cross_entropy_with_logits(d_tgt, torch.ones_like(d_tgt))
            states = model.rssm.observe(tgt_embed_seq[:, 1:], tgt_act)
            kl = kl_divergence(Normal(states["post_mean"], states["post_std"]),
                               Normal(states["prior_mean"], states["prior_std"])).sum(-1).mean()
            loss = cfg.align_coef * align_loss + cfg.kl_coef * kl
        enc_opt.zero_grad()
        loss.backward()
        enc_opt.step()
        metrics.update({"adapt/align_loss": align_loss.item(), "adapt/kl": kl.item()})
        if log is not None and step % 50 == 0:
            log(step, metrics)
        bar.update(1)
    bar.close()


def run_adapt(cfg: AdaptConfig) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    src_cfg, agent, source = load_source(cfg.source_run, device)
    name = cfg.run_name or f"adapt-{Path(cfg.source_run).name}-to-{cfg.target_variant}"
    run = Run(cfg.run_dir, name, config=cfg, resume=True)
    env = make_pixel_env(src_cfg.task, cfg.target_variant, src_cfg.max_episode_steps, src_cfg.action_repeat)
    rng = np.random.default_rng(cfg.seed)
    before = evaluate_agent(env, agent, cfg.eval_episodes, seed=30_000_000 + cfg.seed)
    print(f"before adaptation: return {before['return_mean']:.1f} success {before['success_rate']:.2f}")
    target = SequenceReplay()
    for i in range(cfg.collect_episodes):
        obs, act, _, _ = run_episode(env, agent, seed=40_000_000 + i, explore=True)
        target.add_episode(obs, act, np.zeros(len(act), np.float32))  # reward-free: rewards are not kept
    adapt_encoder(agent, source, target, cfg, rng, log=lambda s, m: run.logger.log(s, m))
    after = evaluate_agent(env, agent, cfg.eval_episodes, seed=30_000_000 + cfg.seed)
    print(f"after adaptation: return {after['return_mean']:.1f} success {after['success_rate']:.2f}")
    summary = {"source_run": str(cfg.source_run), "target_variant": cfg.target_variant,
               "before": before, "after": after, "steps": cfg.steps}
    run.write_summary(summary)
    save_checkpoint(run.path("encoder.pt"), agent.model.encoder.state_dict())  # atomic, loads with weights_only
    run.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    run_adapt(parse_config(AdaptConfig, sys.argv[1:] if argv is None else argv, prog="python -m agents.repo.adapt"))
    return 0


if __name__ == "__main__":
    from embodied.errors import EmbodiedError as _E

    try:
        sys.exit(main())
    except _E as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
