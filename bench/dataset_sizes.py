"""Bytes on disk of the same episodes in the two dataset layouts `embodied collect` writes.

    python bench/dataset_sizes.py [--episodes 10] [--steps 100]

Both layouts are lossless: the Minari folder stores frames as raw uint8 arrays (Minari's JPEG
encoding is off), our single-file .hdf5 compresses observations with gzip (level 4).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    import envs  # noqa: F401
    from embodied.data import NoiseSchedule, collect, write_dataset
    from embodied.data.minari_format import write_minari
    from embodied.make import make_env
    from envs.experts import scripted_expert

    print(
        "| env | episodes x steps | raw observations | Minari folder | single-file .hdf5 |\n"
        "| --- | --- | ---: | ---: | ---: |"
    )
    for env_id, kwargs in (
        ("embodied/reach-pixels-v3", {}),
        ("embodied/reach-pixels-v3", {"obs_type": "pixels+state"}),
        ("embodied/reach-v3", {}),
    ):
        env = make_env(env_id, **kwargs)
        eps = collect(
            env, scripted_expert(env), args.episodes, NoiseSchedule((0.0, 0.3), (0.0, 0.1)), max_steps=args.steps
        )
        obs_bytes = sum(
            sum(v.nbytes for v in e.observations.values())
            if isinstance(e.observations, dict)
            else e.observations.nbytes
            for e in eps
        )
        with tempfile.TemporaryDirectory() as d:
            minari_size = size(write_minari(Path(d) / "m", eps, env))
            single = size(write_dataset(Path(d) / "s.hdf5", eps, env_id, env.observation_space, env.action_space))
        name = env_id + (f" ({kwargs['obs_type']})" if kwargs else "")
        print(
            f"| {name} | {args.episodes} x {args.steps} | {obs_bytes / 2**20:.1f} MiB | "
            f"{minari_size / 2**20:.1f} MiB | "
            f"{single / 2**20:.1f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
