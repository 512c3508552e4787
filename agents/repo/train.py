"""Train RePo (or the Dreamer baseline) from pixels on Meta-World.

    embodied train repo --task reach-v3 --variant pixels
    embodied train repo --task reach-v3 --variant distractor --mode dreamer

Random prefill, then every ``train_every`` env steps ``train_steps`` gradient updates on
``batch_size`` x ``seq_len`` sequences. Checkpoints hold the agent, its optimisers and the replay,
so ``--resume`` continues a killed run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from agents.repo.agent import RePoAgent, evaluate_agent, run_episode
from agents.repo.behavior import BehaviorConfig
from agents.repo.policy import RePoPolicy
from agents.repo.world_model import MODES, WorldModelConfig
from embodied.config import (
    config_to_dict,
    DistractionOptions,
    RunOptions,
    check_choice,
    check_distraction_options,
    check_intervals,
    check_positive,
    distraction_options,
    parse_config,
)
from embodied.device import check_fits, resolve_device
from embodied.errors import EmbodiedError
from embodied.make import make_env
from embodied.nets import check_finite
from embodied.policies import save_policy
from embodied.replay import SequenceReplay
from embodied.runs import progress, start_run
from embodied.video import tile, write_mp4
from envs.registry import env_id
from envs.wrappers import ActionRepeat


@dataclass
class RePoConfig(DistractionOptions, RunOptions):
    """RePo: resilient model-based RL from pixels (Dreamer baseline with --mode dreamer)."""

    task: str = "reach-v3"  # Meta-World task, rendered from pixels
    variant: str = field(default="pixels", metadata={"help": "pixels or distractor"})
    mode: str = field(default="repo", metadata={"help": "repo or dreamer"})
    total_steps: int = 500_000  # environment steps (before action repeat)
    max_episode_steps: int = 500  # steps per episode (before action repeat)
    action_repeat: int = 2  # environment steps per agent action
    prefill: int = 5000  # random-policy steps before training
    train_every: int = 500  # environment steps between training bursts
    train_steps: int = 100  # gradient updates per burst
    batch_size: int = 50  # sequences per batch
    seq_len: int = 50  # steps per training sequence
    expl_noise: float = field(
        default=0.0,
        metadata={
            "help": "Gaussian action noise while collecting, on top of the "
            "stochastic actor (the authors use 0, Dreamer v1 0.3)"
        },
    )
    eval_every: int = 10_000  # evaluate every this many environment steps
    eval_episodes: int = 5  # episodes per evaluation
    checkpoint_every: int = 10_000  # save a checkpoint every this many environment steps
    compile: bool = field(default=False, metadata={"help": "torch.compile the encoder (GPU)"})
    amp: bool = field(default=False, metadata={"help": "bfloat16 mixed precision for the forward passes (GPU)"})
    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    cuda_graph: bool = field(
        default=False,
        metadata={
            "help": "capture one update as a CUDA graph and replay it (GPU; the small-batch update is launch-bound)"
        },
    )
    RESUMABLE = RunOptions.RESUMABLE + (
        "total_steps",
        "eval_every",
        "eval_episodes",
        "checkpoint_every",
        "compile",
        "amp",
        "cuda_graph",
    )
    RENAMED = {
        name: f"wm.{name}" for name in ("target_kl", "init_beta", "beta_lr", "reward_scale", "probe_decoder")
    }  # options of the world model's own config since it became a section
    # The defaults are the authors' scale (500k env steps, 100 updates of 50 x 50 every 500). cpu-small is what
    # fits a 2-core CPU in about an hour (~1.5-2 updates/s at 16 x 32): 30k env steps at the authors' 0.2 updates
    # per env step, 100-step agent episodes, and a dual step on log beta raised from 1e-4 (tuned for ~1e5
    # updates) so that beta can reach its budget in ~1e3.
    PRESETS = {
        "cpu-small": dict(
            total_steps=30_000,
            max_episode_steps=200,
            action_repeat=2,
            prefill=2000,
            train_every=200,
            train_steps=40,
            batch_size=16,
            seq_len=32,
            **{"wm.beta_lr": 1e-2},
            eval_every=2000,
            eval_episodes=5,
            checkpoint_every=2000,
        )
    }

    def __post_init__(self):
        check_choice("variant", self.variant, ("pixels", "distractor"))
        if env_id(self.task, self.variant) not in gym.registry:
            raise ValueError(
                f"--task {self.task}: RePo learns from pixels, and there is no {env_id(self.task, self.variant)} "
                "(every Meta-World task has one, e.g. --task reach-v3)"
            )
        check_choice("mode", self.mode, MODES)
        check_distraction_options(self, self.variant)
        self.wm = dataclasses.replace(self.wm, mode=self.mode, amp=self.amp)  # the agent's switches, one definition
        check_positive(
            self,
            "total_steps",
            "max_episode_steps",
            "action_repeat",
            "train_every",
            "train_steps",
            "batch_size",
            "seq_len",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
        )
        if self.cuda_graph and self.compile:
            raise ValueError("choose --cuda-graph or --compile, not both (the graph already removes the launches)")
        check_intervals(self, expl_noise="[0, inf)", prefill="[0, inf)")
        if self.action_repeat > self.max_episode_steps:
            raise ValueError(
                f"action_repeat {self.action_repeat} exceeds max_episode_steps {self.max_episode_steps}: "
                "an episode would hold no agent step"
            )
        if self.seq_len > self.max_episode_steps // self.action_repeat:
            raise ValueError(
                f"seq_len {self.seq_len} exceeds the episode length in agent steps "
                f"({self.max_episode_steps // self.action_repeat}: max_episode_steps {self.max_episode_steps} / "
                f"action_repeat {self.action_repeat})"
            )


BATCH_FRAME_BYTES = 512 * 2**10  # memory per frame of a training batch, activations included: ~430 KiB measured
IMAGINED_STEP_BYTES = 32 * 2**10  # and per step imagined from it (~23 KiB measured at horizon 60)
FRAME_BYTES = 64 * 64 * 3
META_WORLD_ACT_DIM = 4  # the arm's action, on every task RePo trains


def run_repo(cfg: RePoConfig) -> dict:
    if cfg.cuda_graph and (resolved := resolve_device(cfg.device)).type != "cuda":  # before the run directory is made
        raise EmbodiedError(
            f"--cuda-graph needs a CUDA device, but --device {cfg.device} gives {resolved} "
            "(use it on a machine with a CUDA GPU, or leave it out)"
        )
    check_sizes_fit(cfg)
    run, device = start_run(cfg, f"repo-{cfg.task}-{variant_label(cfg, cfg.variant)}-{cfg.mode}-s{cfg.seed}")
    distractions = distraction_options(cfg)
    env = make_pixel_env(cfg.task, cfg.variant, cfg.max_episode_steps, cfg.action_repeat, **distractions)
    eval_env = make_pixel_env(cfg.task, cfg.variant, cfg.max_episode_steps, cfg.action_repeat, **distractions)
    agent = build_agent(cfg, env.action_space.shape[0], device)
    if cfg.compile:
        agent.model.encoder = torch.compile(agent.model.encoder)
    replay = SequenceReplay()
    rng = np.random.default_rng(cfg.seed)
    step, episode, updates, curve = 0, 0, 0, []
    state = run.load()
    if state is not None:
        with run.restoring():
            agent.load_state_dict(state["agent"])
            replay.load_state_dict(state["replay"], obs_shape=env.observation_space.shape)
            rng.bit_generator.state = state["rng"]
            step, episode, updates = (int(state[k]) for k in ("step", "episode", "updates"))
            curve = list(state["curve"])
        print(f"resuming at env step {step}")

    def checkpoint() -> None:
        run.save(
            {
                "agent": agent.state_dict(),
                "replay": replay.state_dict(),
                "rng": rng.bit_generator.state,
                "step": step,
                "episode": episode,
                "updates": updates,
                "curve": curve,
                "config": config_to_dict(cfg),
            }
        )

    next_train = max(cfg.prefill, (step // cfg.train_every + 1) * cfg.train_every)
    next_eval = (step // cfg.eval_every + 1) * cfg.eval_every
    next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    bar = progress(total=cfg.total_steps, initial=step, desc=f"{cfg.mode} {cfg.task}-{cfg.variant}")
    while step < cfg.total_steps:
        run.stop(step, checkpoint)  # Ctrl-C: save and stop before the next episode (after the last one: finish)
        obs, act, rew, success = run_episode(
            env, agent, seed=cfg.seed * 1_000_000 + episode, explore=True, rng=rng, random_policy=step < cfg.prefill
        )
        replay.add_episode(obs, act, rew)
        episode += 1
        step += len(act) * cfg.action_repeat
        bar.update(len(act) * cfg.action_repeat)
        run.logger.log(step, {"train/return": float(rew.sum()), "train/success": float(success)})
        while step >= next_train:
            start = time.perf_counter()
            burst = [agent.train_step(*replay.sample(cfg.batch_size, cfg.seq_len, rng)) for _ in range(cfg.train_steps)]
            updates += cfg.train_steps
            check_finite(
                "RePo",
                "lower its learning rates (--wm.model-lr, --wm.beta-lr, --behavior.actor-lr, --behavior.critic-lr)",
                [*agent.model.named_parameters("wm"), *agent.behavior.named_parameters("behavior")],
            )
            metrics = {k: float(np.mean([m[k] for m in burst])) for k in burst[0]}  # mean over the burst
            metrics["perf/updates_per_second"] = cfg.train_steps / (time.perf_counter() - start)
            run.logger.log(step, metrics)
            next_train += cfg.train_every
        if step >= next_eval or step >= cfg.total_steps:
            result = evaluate_agent(eval_env, agent, cfg.eval_episodes, seed=10_000_000 + cfg.seed)
            curve.append((step, result["return_mean"], result["success_rate"]))
            run.logger.log(
                step,
                {
                    "eval/return": result["return_mean"],
                    "eval/success_rate": result["success_rate"],
                    "eval/success_final": result["success_final"],
                },
            )
            bar.write(
                f"step {step}: return {result['return_mean']:.1f} over {cfg.max_episode_steps} steps "
                f"success {result['success_rate']:.2f} "
                f"updates {updates} beta {agent.model.beta:.2e}"
            )
            next_eval += cfg.eval_every
        if step >= next_ckpt or step >= cfg.total_steps:
            checkpoint()
            next_ckpt += cfg.checkpoint_every
    bar.close()
    if cfg.video:
        venv = make_pixel_env(
            cfg.task,
            cfg.variant,
            cfg.max_episode_steps,
            cfg.action_repeat,
            render_mode="rgb_array",
            render_width=128,
            render_height=128,
            **distractions,
        )
        episodes = []
        for i in range(2):
            frames: list = []
            run_episode(venv, agent, seed=20_000_000 + i, explore=False, frames=frames)
            episodes.append(frames)
        write_mp4(run.path("videos", "eval.mp4"), tile(episodes), fps=30)
    save_policy(run.path("policy.pt"), *RePoPolicy.from_agent(agent, cfg.action_repeat))
    summary = {
        "task": cfg.task,
        "variant": cfg.variant,
        **distractions,
        "mode": cfg.mode,
        "steps": step,
        "updates": updates,
        "curve": curve,
        "final_return": curve[-1][1] if curve else None,
        "episode_steps": cfg.max_episode_steps,  # env steps each return sums over (action repeat included)
    }
    run.finish(summary)
    return summary


def check_sizes_fit(cfg: RePoConfig) -> None:
    """Refuse, before the run directory, sizes whose arrays cannot fit in memory: a training batch of
    ``--batch-size`` x ``--seq-len`` frames with the networks' activations and the states imagined from them, one
    episode's frames (held until it enters the replay), the replay itself (copied into each checkpoint) and the
    networks with their gradients and Adam's two moments. At absurd values each grew until the machine ran out (the
    networks: an allocation torch could not make, after the run directory existed)."""
    device = resolve_device(cfg.device)
    try:
        with torch.device("meta"):  # shapes only
            agent = RePoAgent(META_WORLD_ACT_DIM, cfg.wm, cfg.behavior, "meta")
        params = sum(p.numel() for module in (agent.model, agent.behavior) for p in module.parameters())
    except RuntimeError:  # a layer too large for torch even to describe ("Storage size calculation overflowed")
        params = 2**62
    replay_steps = min(cfg.total_steps // cfg.action_repeat, SequenceReplay().capacity_steps)
    sizes = [
        (
            f"--batch-size {cfg.batch_size}, --seq-len {cfg.seq_len} and --behavior.horizon {cfg.behavior.horizon}",
            "a training batch and the states imagined from it",
            cfg.batch_size * (cfg.seq_len + 1) * (BATCH_FRAME_BYTES + cfg.behavior.horizon * IMAGINED_STEP_BYTES),
            device,
        ),
        (
            f"--max-episode-steps {cfg.max_episode_steps}",
            "an episode's frames",
            2 * (cfg.max_episode_steps // cfg.action_repeat + 1) * FRAME_BYTES,
            "cpu",
        ),
        (f"--total-steps {cfg.total_steps}", "the replay", 2 * replay_steps * FRAME_BYTES, "cpu"),
        (
            f"--wm.deter {cfg.wm.deter}, --wm.stoch {cfg.wm.stoch}, --wm.hidden {cfg.wm.hidden} and "
            f"--behavior.hidden {cfg.behavior.hidden}",
            "the networks with their gradients and optimizer state",
            4 * params * 4,
            device,
        ),
    ]
    check_fits(sizes)


def variant_label(cfg, variant: str) -> str:
    """The variant with its non-default distractions, for run names: ``distractor-color+camera-d0.5``."""
    options = distraction_options(cfg)
    parts = [variant] + ([options["axes"].replace(",", "+")] if "axes" in options else [])
    parts += [f"d{options['difficulty']:g}"] if "difficulty" in options else []
    parts += [options["background"]] if "background" in options else []
    return "-".join(parts)


def make_pixel_env(task: str, variant: str, max_episode_steps: int, action_repeat: int, **kwargs):
    env = make_env(env_id(task, variant), max_episode_steps=max_episode_steps, **kwargs)
    return ActionRepeat(env, action_repeat)


def build_agent(cfg: RePoConfig, act_dim: int, device) -> RePoAgent:
    return RePoAgent(act_dim, cfg.wm, cfg.behavior, device, expl_noise=cfg.expl_noise, cuda_graph=cfg.cuda_graph)


def main(argv: list[str] | None = None) -> int:
    run_repo(parse_config(RePoConfig, sys.argv[1:] if argv is None else argv, prog="embodied train repo"))
    return 0


if __name__ == "__main__":
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["train", "repo", *sys.argv[1:]]))
