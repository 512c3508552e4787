"""RePo's CPU scale as `embodied train repo` flags, for the shell scripts that train at it: the values are
``RePoConfig.PRESETS["cpu-small"]`` (`embodied train repo --preset cpu-small`), defined once there.

    python bench/repo_scale.py [key=value ...]   # the preset's flags, with overrides
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.repo.train import RePoConfig  # noqa: E402

SCALE = RePoConfig.PRESETS["cpu-small"]


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
