"""Test-time adaptation of a trained RePo agent to new distractors, without rewards.

Everything but the encoder is frozen (dynamics, reward head, actor, critic). The encoder is
trained on target-environment observations collected by the agent's own policy so that
(1) target embeddings fall inside the *support* of the source embeddings: a discriminator
separates source from target embeddings, the source side reweighted by a learned density ratio
tau(e) (mean held at 1 by a dual variable), so the encoder needs to reach where the source has
mass, not to match its whole distribution; (2) the frozen dynamics still predict the
target posteriors (the KL term of RePo's objective, which needs no reward); and optionally (3) a
calibration term on a few paired observations (the same state with and without distractors):
the adapted encoder's embedding of the distracted frame is pulled to the source encoder's
embedding of the clean one (``--calibration-pairs N``; 0, the default, keeps it pair-free).

Diagnostics, before and after: return and success under distractors against the clean-pixel
return of the same agent (the ceiling), the *paired embedding error* on held-out pairs (mean
squared distance between the distracted frame's embedding and the clean frame's source embedding,
over the clean embeddings' variance: 0 is invariance, 2 is as far as two unrelated clean frames),
and the discriminator's accuracy (0.5: target embeddings are inside the source support).

    embodied train repo ... --run-name src          # train on clean pixels
    embodied adapt --source-run runs/src --target-variant distractor [--axes color,camera]
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.repo.agent import RePoAgent, evaluate_agent, run_episode
from agents.repo.behavior import frozen
from agents.repo.networks import normal_kl, preprocess
from agents.repo.policy import RePoPolicy
from agents.repo.train import (
    BATCH_FRAME_BYTES,
    FRAME_BYTES,
    RePoConfig,
    build_agent,
    make_pixel_env,
    variant_label,
)
from embodied.checkpoint import load_checkpoint, restoring, save_checkpoint, seed_everything
from embodied.config import (
    DistractionOptions,
    check_choice,
    check_distraction_options,
    check_positive,
    config_from_dict,
    distraction_options,
    parse_config,
)
from embodied.device import check_fits, resolve_device
from embodied.errors import EmbodiedError
from embodied.nets import check_finite, mlp
from embodied.policies import save_policy
from embodied.replay import SequenceReplay
from embodied.runs import Run, progress, set_threads


@dataclass
class AdaptConfig(DistractionOptions):
    """Reward-free test-time adaptation of a RePo encoder to a new environment variant."""

    source_run: Path = Path("runs/repo")  # run directory of `embodied train repo` whose last checkpoint is adapted
    target_variant: str = "distractor"  # environment variant to adapt to: distractor or pixels
    collect_episodes: int = 10  # target episodes the agent's own policy collects (no rewards used)
    steps: int = 2000  # encoder gradient steps
    batch_size: int = 16  # target sequences per step
    seq_len: int = 32  # steps per target sequence
    encoder_lr: float = 1e-4  # Adam learning rate of the encoder (the only part that changes)
    disc_lr: float = 3e-4  # learning rate of the discriminator, the density ratio and its dual variable
    align_coef: float = 1.0  # weight of the support-alignment (discriminator) term
    kl_coef: float = 1.0  # weight of the frozen dynamics' KL on target posteriors (RePo's reward-free term)
    calibration_pairs: int = 0  # paired clean/distracted frames for the calibration term (0: none)
    calib_coef: float = 1.0  # weight of the calibration term
    probe_pairs: int = 512  # held-out paired frames for the embedding-error diagnostic
    eval_episodes: int = 5  # evaluation episodes for the ceiling, before, and after (the same seeds each time)
    eval_every: int = 0  # also evaluate under the target every N adaptation steps (0: before and after only)
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads, at most this machine's CPUs (0: one per core; 1 for runs side by side)
    seed: int = 0  # seed of collection, sampling and the evaluation episodes
    run_dir: Path = Path("runs")  # directory that holds the run directories
    run_name: str | None = None  # run directory name (None: adapt-<source run>-to-<variant>)

    def __post_init__(self):
        check_positive(
            self, "collect_episodes", "batch_size", "seq_len", "eval_episodes", "probe_pairs", "encoder_lr", "disc_lr"
        )
        check_choice("target_variant", self.target_variant, ("distractor", "pixels"))
        check_distraction_options(self, self.target_variant)
        for name in ("steps", "calibration_pairs", "calib_coef", "align_coef", "kl_coef", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class SupportAligner(nn.Module):
    """Discriminator on embeddings plus a density ratio tau on source embeddings (dual-constrained mean 1)."""

    def __init__(self, embed_dim: int, hidden: int = 256):
        super().__init__()
        self.disc = mlp(embed_dim, 1, hidden, layers=3)
        self.log_tau = mlp(embed_dim, 1, hidden, layers=3)
        self.u = nn.Parameter(torch.tensor(1.0))

    def step(
        self, src: torch.Tensor, tgt: torch.Tensor, opt: torch.optim.Optimizer, u_opt: torch.optim.Optimizer
    ) -> dict:
        """Train the discriminator (tau-weighted source = 1, target = 0), tau, and its dual variable."""
        tau = self.log_tau(src).exp().squeeze(-1)
        d_src, d_tgt = self.disc(src).squeeze(-1), self.disc(tgt).squeeze(-1)
        disc_loss = (
            tau.detach() * F.binary_cross_entropy_with_logits(d_src, torch.ones_like(d_src), reduction="none")
        ).mean() + F.binary_cross_entropy_with_logits(d_tgt, torch.zeros_like(d_tgt))
        # tau puts source mass where the discriminator thinks "target-like" (low d): min E[tau d] s.t. E[tau] = 1
        tau_loss = (tau * d_src.detach()).mean() + self.u.detach() * (tau.mean() - 1)
        opt.zero_grad()
        (disc_loss + tau_loss).backward()
        opt.step()
        u_loss = -self.u * (tau.mean().detach() - 1)
        u_opt.zero_grad()
        u_loss.backward()
        u_opt.step()
        accuracy = 0.5 * ((d_src > 0).float().mean() + (d_tgt < 0).float().mean())
        return {
            "adapt/disc_loss": disc_loss.item(),
            "adapt/tau_mean": tau.mean().item(),
            "adapt/disc_accuracy": accuracy.item(),
        }


@torch.no_grad()
def embed_frames(encoder: nn.Module, frames: np.ndarray, device, batch: int = 256) -> torch.Tensor:
    """``encoder`` over uint8 frames ``(N, H, W, 3)``, ``batch`` at a time (no gradient)."""
    return torch.cat(
        [
            encoder(preprocess(torch.as_tensor(frames[i : i + batch], device=device)))
            for i in range(0, len(frames), batch)
        ]
    )


def paired_embedding_error(
    encoder: nn.Module, source_encoder: nn.Module, distracted: np.ndarray, clean: np.ndarray, device
) -> float:
    """Mean squared distance of ``encoder(distracted)`` from ``source_encoder(clean)``, over the clean
    embeddings' total variance (0: the distractors change nothing; 2: as far as two unrelated clean frames)."""
    target = embed_frames(source_encoder, clean, device)
    err = (embed_frames(encoder, distracted, device) - target).pow(2).sum(-1).mean()
    return float(err / target.var(0).sum().clamp_min(1e-8))


def embed_replay(encoder: nn.Module, replay: SequenceReplay, device) -> SequenceReplay:
    """``replay`` with every frame replaced by its embedding under the frozen ``encoder``. Sampled with the
    same generator it gives the same windows as ``replay``: the source side of the adaptation is encoded
    once, not at every step (a fifth of a step on a CPU: 1.83 -> 1.50 s at 16 x 32, 1 thread)."""
    embedded = SequenceReplay(replay.capacity_steps)
    for episode in replay.episodes:
        embedded.add_episode(
            embed_frames(encoder, episode["obs"], device).cpu().numpy(), episode["act"], episode["rew"]
        )
    return embedded


def load_source(source_run: Path, device) -> tuple[RePoConfig, RePoAgent, SequenceReplay]:
    path = Path(source_run) / "checkpoints" / "last.pt"
    if not path.exists():
        raise EmbodiedError(f"no RePo checkpoint at {path}; train one first with `embodied train repo`")
    state = load_checkpoint(path)
    with restoring(path, fix="point --source-run at a run of `embodied train repo`"):
        # adaptation trains the encoder alone, eagerly: a source trained with --cuda-graph loads on any device
        cfg = dataclasses.replace(config_from_dict(RePoConfig, state["config"]), cuda_graph=False)
        env = make_pixel_env(
            cfg.task, cfg.variant, cfg.max_episode_steps, cfg.action_repeat, **distraction_options(cfg)
        )
        agent = build_agent(cfg, env.action_space.shape[0], device)
        agent.load_state_dict(state["agent"])
        replay = SequenceReplay()
        replay.load_state_dict(state["replay"], obs_shape=env.observation_space.shape)
    return cfg, agent, replay


def adapt_encoder(
    agent: RePoAgent,
    source: SequenceReplay,
    target: SequenceReplay,
    cfg: AdaptConfig,
    rng: np.random.Generator,
    log=None,
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
    source_encoder: nn.Module | None = None,
    evaluate: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``agent.model.encoder`` only; every other parameter is left exactly as it was.

    ``calibration``: paired (distracted, clean) uint8 frames ``(N, H, W, 3)`` for the calibration term.
    ``source_encoder``: the frozen encoder the source embeddings come from (default: a copy of the
    encoder as it is now). ``evaluate(steps_done)`` is called every ``cfg.eval_every`` steps before the
    last (the caller evaluates the end itself), so one run gives the whole curve over the adaptation
    budget. Returns the last step's metrics (none for ``cfg.steps == 0``).
    """
    device = agent.device
    model = agent.model
    if source_encoder is None:
        source_encoder = copy.deepcopy(model.encoder)
    source_encoder.requires_grad_(False)
    if calibration is not None:
        if len(calibration[0]) != len(calibration[1]) or len(calibration[0]) == 0:
            raise ValueError(
                f"calibration needs the same positive number of distracted and clean frames, got "
                f"{len(calibration[0])} and {len(calibration[1])}"
            )
        calib_d = torch.as_tensor(calibration[0], device=device)
        calib_target = embed_frames(source_encoder, calibration[1], device)
        calib_scale = (
            calib_target.var(0).sum().clamp_min(1e-8) if len(calib_target) > 1 else torch.ones((), device=device)
        )
    source_embeddings = embed_replay(source_encoder, source, device)
    aligner = SupportAligner(model.encoder.out_dim).to(device)
    enc_opt = torch.optim.Adam(model.encoder.parameters(), lr=cfg.encoder_lr)
    disc_opt = torch.optim.Adam(list(aligner.disc.parameters()) + list(aligner.log_tau.parameters()), lr=cfg.disc_lr)
    u_opt = torch.optim.Adam([aligner.u], lr=cfg.disc_lr)
    frozen_parts = [model.rssm, model.reward_head, agent.behavior] + (
        [model.decoder] if model.decoder is not None else []
    )
    bar = progress(total=cfg.steps, desc="adapt encoder")
    metrics: dict[str, float] = {}  # --steps 0: none (the source encoder evaluated on the target as it is)
    for step in range(cfg.steps):
        src_embed = torch.as_tensor(
            source_embeddings.sample(cfg.batch_size, cfg.seq_len, rng)[0], device=device
        ).flatten(0, 1)
        tgt_obs, tgt_act, _ = target.sample(cfg.batch_size, cfg.seq_len, rng)  # rewards unused
        tgt_obs, tgt_act = torch.as_tensor(tgt_obs, device=device), torch.as_tensor(tgt_act, device=device)
        tgt_embed_seq = model.encoder(preprocess(tgt_obs))
        metrics = aligner.step(src_embed, tgt_embed_seq.detach().flatten(0, 1), disc_opt, u_opt)
        with frozen(aligner, *frozen_parts):
            d_tgt = aligner.disc(tgt_embed_seq.flatten(0, 1)).squeeze(-1)
            align_loss = F.binary_cross_entropy_with_logits(d_tgt, torch.ones_like(d_tgt))
            states = model.rssm.observe(tgt_embed_seq[:, 1:], tgt_act)
            kl = (
                normal_kl(states["post_mean"], states["post_std"], states["prior_mean"], states["prior_std"])
                .sum(-1)
                .mean()
            )
            loss = cfg.align_coef * align_loss + cfg.kl_coef * kl
            if calibration is not None:
                pick = torch.as_tensor(rng.choice(len(calib_d), min(64, len(calib_d)), replace=False), device=device)
                calib = (model.encoder(preprocess(calib_d[pick])) - calib_target[pick]).pow(2).sum(
                    -1
                ).mean() / calib_scale
                loss = loss + cfg.calib_coef * calib
                metrics["adapt/calibration"] = calib.item()
        enc_opt.zero_grad()
        loss.backward()
        enc_opt.step()
        check_finite(
            "the adaptation",
            "lower --encoder-lr or --disc-lr",
            [*model.encoder.named_parameters("encoder"), *aligner.named_parameters("aligner")],
        )
        metrics.update({"adapt/align_loss": align_loss.item(), "adapt/kl": kl.item()})
        if log is not None and step % 50 == 0:
            log(step, metrics)
        bar.update(1)
        if evaluate is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
                evaluate(step + 1)  # on its own random stream: the adaptation is the same with or without it
    bar.close()
    return metrics


def split_pairs(
    lengths: list[int], calibration: int, probe: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (into the episodes concatenated) for calibration and for the held-out probe.

    Calibration frames come from the first episodes, as few as hold ``calibration`` frames; the probe
    from the other episodes only, so it measures invariance on states the calibration never showed.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)])
    used = int(np.searchsorted(starts, calibration)) if calibration else 0  # episodes the calibration draws on
    if used >= len(lengths):
        raise EmbodiedError(
            f"--calibration-pairs {calibration} needs frames from every collected episode "
            f"({starts[-1]} frames in {len(lengths)}); collect more episodes or use fewer pairs"
        )
    calib = rng.choice(starts[used], calibration, replace=False) if calibration else np.zeros(0, int)
    rest = np.arange(starts[used], starts[-1])
    return calib, rng.choice(rest, min(probe, len(rest)), replace=False)


def run_adapt(cfg: AdaptConfig) -> dict:
    device = resolve_device(cfg.device)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    src_cfg, agent, source = load_source(cfg.source_run, device)
    episode = src_cfg.max_episode_steps // src_cfg.action_repeat
    if cfg.seq_len > episode:  # before the run directory: sampling would fail after collecting
        raise EmbodiedError(f"--seq-len {cfg.seq_len} exceeds {cfg.source_run}'s episodes ({episode} agent steps)")
    check_fits(
        [
            (
                f"--collect-episodes {cfg.collect_episodes}",
                "the collected target episodes (their frames, and each without its distractors)",
                3 * cfg.collect_episodes * (episode + 1) * FRAME_BYTES,
                "cpu",
            ),
            (
                f"--batch-size {cfg.batch_size} and --seq-len {cfg.seq_len}",
                "an adaptation batch",
                cfg.batch_size * (cfg.seq_len + 1) * BATCH_FRAME_BYTES,
                device,
            ),
        ]
    )
    name = cfg.run_name or f"adapt-{Path(cfg.source_run).name}-to-{variant_label(cfg, cfg.target_variant)}"
    run = Run(cfg.run_dir, name, config=cfg, resume=True)
    env = make_pixel_env(
        src_cfg.task, cfg.target_variant, src_cfg.max_episode_steps, src_cfg.action_repeat, **distraction_options(cfg)
    )
    rng = np.random.default_rng(cfg.seed)
    eval_seed = 30_000_000 + cfg.seed
    clean_env = make_pixel_env(
        src_cfg.task, src_cfg.variant, src_cfg.max_episode_steps, src_cfg.action_repeat, **distraction_options(src_cfg)
    )
    ceiling = evaluate_agent(clean_env, agent, cfg.eval_episodes, seed=eval_seed)  # the source's own pixels
    before = evaluate_agent(env, agent, cfg.eval_episodes, seed=eval_seed)
    print(
        f"on {variant_label(src_cfg, src_cfg.variant)} (ceiling): return {ceiling['return_mean']:.1f} "
        f"success {ceiling['success_rate']:.2f}; {variant_label(cfg, cfg.target_variant)} before adaptation: "
        f"return {before['return_mean']:.1f} "
        f"success {before['success_rate']:.2f}"
    )
    target, distracted, clean = SequenceReplay(), [], []
    for i in range(cfg.collect_episodes):
        pairs: list = []
        obs, act, _, _ = run_episode(env, agent, seed=40_000_000 + 1000 * cfg.seed + i, explore=True, clean=pairs)
        target.add_episode(obs, act, np.zeros(len(act), np.float32))  # reward-free: rewards are not kept
        distracted.append(obs)
        clean.append(np.stack(pairs))
    calib, probe = split_pairs([len(x) for x in distracted], cfg.calibration_pairs, cfg.probe_pairs, rng)
    distracted, clean = np.concatenate(distracted), np.concatenate(clean)
    source_encoder = copy.deepcopy(agent.model.encoder)
    gap = ceiling["return_mean"] - before["return_mean"]

    def point(step: int, result: dict) -> dict:
        """One point of the adaptation curve: return, success, share of the gap closed, embedding error."""
        closed = (result["return_mean"] - before["return_mean"]) / gap if gap > 0 else float("nan")
        error = paired_embedding_error(agent.model.encoder, source_encoder, distracted[probe], clean[probe], device)
        return {"step": step, **result, "gap_closed": closed, "embedding_error": error}

    curve: list[dict] = []

    def record(step: int, result: dict) -> None:
        """A point of the curve, also in metrics.jsonl (with the ceiling): a run stopped early still reports."""
        curve.append(point(step, result))
        run.logger.log(
            step,
            {
                "eval/ceiling_return": ceiling["return_mean"],
                **{f"eval/{k}": v for k, v in curve[-1].items() if k != "step"},
            },
        )

    def evaluate(step: int) -> None:
        record(step, evaluate_agent(env, agent, cfg.eval_episodes, seed=eval_seed))
        print(f"after {step} steps: return {curve[-1]['return_mean']:.1f} (gap closed {curve[-1]['gap_closed']:.0%})")

    record(0, before)

    last = adapt_encoder(
        agent,
        source,
        target,
        cfg,
        rng,
        log=lambda s, m: run.logger.log(s, m),
        calibration=(distracted[calib], clean[calib]) if len(calib) else None,
        source_encoder=source_encoder,
        evaluate=evaluate,
    )
    record(cfg.steps, evaluate_agent(env, agent, cfg.eval_episodes, seed=eval_seed))
    after, closed = {k: curve[-1][k] for k in before}, curve[-1]["gap_closed"]
    error_before, error_after = curve[0]["embedding_error"], curve[-1]["embedding_error"]
    disc_accuracy = last.get("adapt/disc_accuracy")  # None after --steps 0
    print(
        f"after adaptation: return {after['return_mean']:.1f} success {after['success_rate']:.2f} "
        f"(gap to the ceiling closed: {closed:.0%}); paired embedding error {error_before:.3f} -> {error_after:.3f}"
        + ("" if disc_accuracy is None else f"; discriminator accuracy {disc_accuracy:.2f}")
    )
    summary = {
        "source_run": str(cfg.source_run),
        "target_variant": cfg.target_variant,
        "ceiling": ceiling,
        "before": before,
        "after": after,
        "gap_closed": closed,
        "steps": cfg.steps,
        "calibration_pairs": int(len(calib)),
        "embedding_error_before": error_before,
        "embedding_error_after": error_after,
        "disc_accuracy": disc_accuracy,
        "curve": curve,
    }
    save_checkpoint(run.path("encoder.pt"), agent.model.encoder.state_dict())  # atomic, loads with weights_only
    save_policy(run.path("policy.pt"), *RePoPolicy.from_agent(agent, src_cfg.action_repeat))  # the adapted agent
    run.finish(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    run_adapt(parse_config(AdaptConfig, sys.argv[1:] if argv is None else argv, prog="embodied adapt"))
    return 0


if __name__ == "__main__":  # python -m agents.repo.adapt: the same as embodied adapt
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["adapt", *sys.argv[1:]]))
