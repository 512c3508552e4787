import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # pytest -n auto runs one worker per core: one thread each

import torch  # noqa: E402

torch.set_num_threads(1)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: F401,E402  (registers the ids)
from loopback import Loopback  # noqa: E402  (tests/, beside this file)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def loopback():
    """Stub HTTP servers for one test: ``loopback.start(HandlerClass)`` -> base URL; stopped afterwards."""
    servers = Loopback()
    yield servers
    servers.close()
