"""Throughput of the environments and of video export. Prints a markdown table.

    python bench/envs_and_video.py [--task reach-v3] [--steps 2000] [--workers 2]

Pixel rows count rendered frames (every step renders); the distractor rows give each axis alone at
difficulty 1 against the plain pixel env.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

import envs  # noqa: F401
from embodied.video import caption, write_mp4
from envs.registry import env_id


DISTRACTOR_SETTINGS = (  # one row per axis (difficulty 1), the other background family, and all axes at once
    ("background=noise", dict(axes="background")),
    ("background=shapes", dict(axes="background", background="shapes")),
    ("color", dict(axes="color")),
    ("camera", dict(axes="camera")),
    ("lighting", dict(axes="lighting")),
    ("all four axes", dict(axes="background,color,camera,lighting")),
)


def steps_per_second(env_id: str, steps: int, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # first render creates the GL context: not timed
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vector_steps_per_second(env_id: str, steps: int, workers: int) -> float:
    vec = gym.vector.AsyncVectorEnv([lambda: gym.make(env_id) for _ in range(workers)])
    vec.reset(seed=0)
    vec.step(vec.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps // workers):
        vec.step(vec.action_space.sample())
    rate = (steps // workers) * workers / (time.perf_counter() - start)
    vec.close()
    return rate


def video_export_fps(frames: int, size: int, path: str) -> float:
    env = gym.make("embodied/reach-v3", render_mode="rgb_array", render_width=size, render_height=size)
    env.reset(seed=0)
    start = time.perf_counter()
    out = []
    for t in range(frames):
        env.step(env.action_space.sample())
        out.append(caption(env.render(), f"t={t}"))
    write_mp4(path, out, fps=30)
    rate = frames / (time.perf_counter() - start)
    os.remove(path)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="also write the table, with the machine it ran on, to this markdown file")
    args = parser.parse_args()
    base = env_id(args.task)
    rows = [
        ("state env, 1 process", "env steps/s", steps_per_second(base, args.steps)),
        (
            f"state env, AsyncVectorEnv x{args.workers}",
            "env steps/s",
            vector_steps_per_second(base, args.steps, args.workers),
        ),
        ("pixel env 64x64, 1 process", "frames/s", steps_per_second(env_id(args.task, "pixels"), args.steps // 4)),
        *[
            (
                f"distractor env 64x64, {label}",
                "frames/s",
                steps_per_second(env_id(args.task, "distractor"), args.steps // 4, **kwargs),
            )
            for label, kwargs in DISTRACTOR_SETTINGS
        ],
        (
            "video export 256x256 (render+caption+H.264)",
            "frames/s",
            video_export_fps(args.steps // 10, 256, os.path.join(tempfile.mkdtemp(), "bench.mp4")),
        ),
    ]
    lines = [f"| what ({args.task}, {os.cpu_count()} CPU cores) | unit | rate |", "| --- | --- | ---: |"]
    lines += [f"| {name} | {unit} | {rate:,.0f} |" for name, unit, rate in rows]
    print("\n".join(lines))
    if args.out:
        header = [
            "# Environment and video throughput",
            "",
            f"`python bench/envs_and_video.py --task {args.task} --steps {args.steps} --workers {args.workers}` on "
            f"{date.today()}: {cpu_model()}, {os.cpu_count()} cores, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, one "
            "process per row (the vector row: one per worker), nothing else running. Distractor rows: each axis "
            "alone at difficulty 1 (every step renders; the background axis adds a segmentation render).",
            "",
        ]
        with open(args.out, "w") as f:
            f.write("\n".join(header + lines) + "\n")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU of unknown model"


if __name__ == "__main__":
    main()
