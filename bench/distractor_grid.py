"""A picture and a short video of what each distraction axis does at three difficulties.

    python bench/distractor_grid.py [--task reach-v3] [--out docs/images] [--steps 60]

For each axis, one PNG (rows: difficulty 0, 0.5, 1; columns: four episodes, seeds 0-3, each at its 30th
step: every episode draws new distractions) and one mp4 (the three difficulties side by side through one
scripted episode, the same seed and actions), at 128 x 128.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from PIL import Image

from embodied.make import make_env
from embodied.policies import make_policy
from embodied.video import caption, tile, write_mp4
from envs.distractions import AXES
from envs.registry import env_id

DIFFICULTIES = (0.0, 0.5, 1.0)
SETTINGS = {axis: dict(axes=axis) for axis in AXES} | {
    "background-shapes": dict(axes="background", background="shapes")
}


def episode_frames(task: str, kwargs: dict, difficulty: float, steps: int, size: int, seed: int) -> list[np.ndarray]:
    env = make_env(
        env_id(task, "distractor"),
        render_mode="rgb_array",
        render_width=size,
        render_height=size,
        difficulty=difficulty,
        **kwargs,
    )
    policy = make_policy("scripted", env)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
        frames.append(caption(env.render(), f"difficulty {difficulty:g}"))
    env.close()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, kwargs in SETTINGS.items():
        runs = [episode_frames(args.task, kwargs, d, args.steps, args.size, args.seed) for d in DIFFICULTIES]
        rows = [
            np.concatenate([episode_frames(args.task, kwargs, d, 30, args.size, seed)[-1] for seed in range(4)], axis=1)
            for d in DIFFICULTIES
        ]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.out / f"distractor-{name}.png", optimize=True)
        write_mp4(args.out / f"distractor-{name}.mp4", tile(runs, columns=len(DIFFICULTIES)), fps=15)
        print(f"wrote {args.out}/distractor-{name}.png and .mp4")


if __name__ == "__main__":
    main()
