"""RePo training throughput: gradient updates/s (world model + actor-critic) and env steps/s.

    python bench/repo_throughput.py [--batch 50 --seq-len 50] [--device auto] [--compile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from agents.repo.agent import RePoAgent, run_episode
from agents.repo.world_model import WorldModelConfig
from embodied.device import resolve_device
from embodied.make import make_env
from envs.wrappers import ActionRepeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    print("| device | mode | amp | batch x seq | updates/s | env steps/s (acting, 64x64 pixels, repeat 2) |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    for mode in ("repo", "dreamer"):
        agent = RePoAgent(4, WorldModelConfig(mode=mode, amp=args.amp), device=device)
        if args.compile:
            agent.model.encoder = torch.compile(agent.model.encoder)
        obs = rng.integers(0, 255, (args.batch, args.seq_len + 1, 64, 64, 3), dtype=np.uint8)
        act = rng.uniform(-1, 1, (args.batch, args.seq_len, 4)).astype(np.float32)
        rew = rng.normal(size=(args.batch, args.seq_len)).astype(np.float32)
        agent.train_step(obs, act, rew)  # warm-up (and compilation)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.updates):
            agent.train_step(obs, act, rew)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ups = args.updates / (time.perf_counter() - start)
        env = ActionRepeat(make_env("embodied/reach-v3-pixels", max_episode_steps=200), 2)
        start = time.perf_counter()
        obs_ep, _, _, _ = run_episode(env, agent, seed=0, explore=True)
        sps = (len(obs_ep) - 1) * 2 / (time.perf_counter() - start)
        print(f"| {device} | {mode} | {'bf16' if args.amp else 'fp32'} | {args.batch} x {args.seq_len} | {ups:.2f} | {sps:.0f} |", flush=True)


if __name__ == "__main__":
    main()
