"""RePo's CPU scale, the one definition that bench/repo_learning.py, bench/repo_study.sh and
bench/repo_study_gpu.sh train with, so their runs stay comparable.

What fits a 2-core CPU in about an hour (~1.5-2 updates/s at batch 16 x 32): 30k env steps, 0.2 updates
per env step as the authors (100 per 500), 100-step (agent) episodes. The dual step on log beta is raised
from the authors' 1e-4 (tuned for ~1e5 updates) so beta can reach the budget in ~1e3.

    python bench/repo_scale.py [key=value ...]   # the scale as `embodied train repo` flags, with overrides
"""

from __future__ import annotations

import sys

SCALE = dict(
    total_steps=30_000,
    max_episode_steps=200,
    action_repeat=2,
    prefill=2000,
    train_every=200,
    train_steps=40,
    batch_size=16,
    seq_len=32,
    beta_lr=1e-2,
    eval_every=2000,
    eval_episodes=5,
    checkpoint_every=2000,
)


def flags(**overrides) -> list[str]:
    """``SCALE`` with ``overrides`` (names of ``SCALE``) as command-line flags, ``--total-steps 30000 ...``."""
    unknown = set(overrides) - set(SCALE)
    if unknown:
        raise SystemExit(f"not a setting of the RePo scale: {', '.join(sorted(unknown))} (known: {', '.join(SCALE)})")
    return [
        item for key, value in {**SCALE, **overrides}.items() for item in (f"--{key.replace('_', '-')}", str(value))
    ]


if __name__ == "__main__":
    print(" ".join(flags(**dict(arg.split("=", 1) for arg in sys.argv[1:]))))
