import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import envs  # noqa: F401,E402  (registers the ids)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
