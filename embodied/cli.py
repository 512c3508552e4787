"""The ``embodied`` command: envs, collect, video, train <agent>, eval."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from embodied.atomic import ensure_writable_dir
from embodied.config import parse_config
from embodied.errors import EmbodiedError

AGENTS: dict[str, str] = {  # name -> "module:function(argv)"
    "pearl": "agents.pearl.train:main",
    "parl": "agents.parl.train:main",
    "repo": "agents.repo.train:main",
    "walle": "agents.walle.train:main",
}


@dataclass
class CollectConfig:
    """Collect trajectories with a (noisy) policy into a dataset file."""

    env: str = "embodied/reach-v3"
    episodes: int = 10
    out: Path = Path("data/dataset.hdf5")
    policy: str = field(default="scripted", metadata={"help": "scripted, random, or a policy file"})
    noise: tuple[float, ...] = field(default=(0.0,), metadata={"help": "Gaussian action-noise stds, cycled over episodes"})
    epsilon: tuple[float, ...] = field(default=(0.0,), metadata={"help": "random-action probabilities, cycled over episodes"})
    max_steps: int | None = field(default=None, metadata={"help": "cut episodes at this many steps"})
    seed: int = 0


@dataclass
class VideoConfig:
    """Record episodes of a policy to an H.264 mp4."""

    env: str = "embodied/reach-v3"
    policy: str = field(default="scripted", metadata={"help": "scripted, random, or a policy file"})
    episodes: int = 1
    out: Path = Path("videos/rollout.mp4")
    size: int = 256
    camera: str = "corner2"
    fps: int = 30
    grid: bool = field(default=True, metadata={"help": "tile episodes side by side (else one after another)"})
    captions: bool = True
    max_steps: int | None = None
    seed: int = 0


@dataclass
class EvalConfig:
    """Evaluate a policy: success rate and return over seeded episodes."""

    env: str = "embodied/reach-v3"
    policy: str = "scripted"
    episodes: int = 10
    max_steps: int | None = None
    seed: int = 1000


def cmd_envs(argv: list[str]) -> int:
    from envs.drawer_block import DrawerBlockEnv
    from envs.metaworld_env import action_space, observation_space
    from envs.registry import registered_ids

    import gymnasium as gym

    pattern = argv[0] if argv else ""
    print(f"{'id':46s} {'observation':32s} {'action':22s} max_steps")
    for env_id in registered_ids():
        if pattern not in env_id:
            continue
        spec = gym.spec(env_id)
        if spec.entry_point.endswith("DrawerBlockEnv"):
            obs = DrawerBlockEnv(**spec.kwargs).observation_space
        else:
            obs = observation_space(spec.kwargs.get("obs_type", "state"))
        shape = {k: v.shape for k, v in obs.spaces.items()} if hasattr(obs, "spaces") else obs.shape
        dtype = "" if hasattr(obs, "spaces") else str(obs.dtype)
        print(f"{env_id:46s} {f'{dtype}{list(shape)}':32s} {f'float32{list(action_space().shape)}':22s} {spec.max_episode_steps}")
    return 0


def cmd_collect(argv: list[str]) -> int:
    from embodied.data import NoiseSchedule, collect, write_dataset
    from embodied.make import make_env
    from embodied.policies import make_policy
    from embodied.runs import progress

    cfg = parse_config(CollectConfig, argv, prog="embodied collect")
    if cfg.episodes <= 0:
        raise EmbodiedError(f"--episodes must be positive, got {cfg.episodes}")
    try:
        noise = NoiseSchedule(cfg.noise, cfg.epsilon)
    except ValueError as err:
        raise EmbodiedError(str(err)) from err
    ensure_writable_dir(cfg.out)  # fail before the work, not after it
    env = make_env(cfg.env)
    policy = make_policy(cfg.policy, env)
    bar = progress(total=cfg.episodes, desc=f"collect {cfg.env}")
    episodes = collect(env, policy, cfg.episodes, noise, seed=cfg.seed, max_steps=cfg.max_steps,
                       progress=lambda ep: bar.update(1))
    bar.close()
    write_dataset(cfg.out, episodes, cfg.env, env.observation_space, env.action_space,
                  metadata={"policy": cfg.policy, "noise": list(cfg.noise), "epsilon": list(cfg.epsilon), "seed": cfg.seed})
    rate = sum(e.success for e in episodes) / len(episodes)
    print(f"wrote {cfg.out}: {len(episodes)} episodes, {sum(len(e) for e in episodes)} steps, success rate {rate:.2f}")
    return 0


def cmd_video(argv: list[str]) -> int:
    from embodied.make import make_env
    from embodied.policies import make_policy
    from embodied.video import record_episode, tile, write_mp4

    cfg = parse_config(VideoConfig, argv, prog="embodied video")
    if cfg.episodes <= 0 or cfg.size <= 0 or cfg.fps <= 0:
        raise EmbodiedError("--episodes, --size and --fps must be positive")
    ensure_writable_dir(cfg.out)
    env = make_env(cfg.env, render_mode="rgb_array", render_width=cfg.size, render_height=cfg.size, camera=cfg.camera)
    policy = make_policy(cfg.policy, env)
    episodes, successes = [], []
    for i in range(cfg.episodes):
        frames, ret, success = record_episode(env, policy, cfg.seed + i, cfg.max_steps, annotate=cfg.captions)
        episodes.append(frames)
        successes.append(success)
        print(f"episode {i}: return {ret:.1f} success {success}")
    frames = tile(episodes) if cfg.grid else [f for ep in episodes for f in ep]
    write_mp4(cfg.out, frames, fps=cfg.fps)
    print(f"wrote {cfg.out}: {len(frames)} frames")
    return 0


def cmd_eval(argv: list[str]) -> int:
    from embodied.evaluation import evaluate
    from embodied.make import make_env
    from embodied.policies import make_policy

    cfg = parse_config(EvalConfig, argv, prog="embodied eval")
    env = make_env(cfg.env)
    result = evaluate(env, make_policy(cfg.policy, env), cfg.episodes, seed=cfg.seed, max_steps=cfg.max_steps)
    print(json.dumps({"env": cfg.env, "policy": cfg.policy, **result}))
    return 0


def cmd_train(argv: list[str]) -> int:
    if not argv or argv[0] not in AGENTS:
        known = ", ".join(sorted(AGENTS)) or "none yet"
        raise EmbodiedError(f"usage: embodied train <agent> [options]; agents: {known}")
    module_name, _, func = AGENTS[argv[0]].partition(":")
    return getattr(importlib.import_module(module_name), func)(argv[1:]) or 0


def cmd_sweep(argv: list[str]) -> int:
    from embodied.sweep import main as sweep_main

    return sweep_main(argv)


def cmd_report(argv: list[str]) -> int:
    from embodied.report import main as report_main

    return report_main(argv)


COMMANDS = {"envs": cmd_envs, "collect": cmd_collect, "video": cmd_video, "eval": cmd_eval, "train": cmd_train,
            "sweep": cmd_sweep, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: embodied {" + ",".join(COMMANDS) + "} [options]   (embodied <command> --help for options)",
              file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from embodied.runs import RunInterrupted

    try:
        return COMMANDS[argv[0]](argv[1:])
    except EmbodiedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(str(err), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
