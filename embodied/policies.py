"""Policies as plain callables ``obs -> action``, and a file format for trained ones.

A trained policy file is a torch checkpoint holding the import path of an ``nn.Module`` class,
its constructor kwargs and its state dict; the module implements ``act(obs) -> action`` on numpy.
Loading only imports classes from this project's ``agents`` and ``embodied`` packages.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from embodied.checkpoint import load_checkpoint

from embodied.atomic import atomic_path
from embodied.errors import EmbodiedError

Policy = Callable[[object], np.ndarray]
POLICY_FORMAT = "embodied-policy-v1"
_ALLOWED_PACKAGES = ("agents.", "embodied.")


def save_policy(path: str | os.PathLike, module: torch.nn.Module, kwargs: dict) -> Path:
    """Save ``module`` so that ``load_policy`` can rebuild it as ``type(module)(**kwargs)``."""
    cls = type(module)
    payload = {"format": POLICY_FORMAT, "target": f"{cls.__module__}:{cls.__qualname__}",
               "kwargs": kwargs, "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_policy_module(path: str | os.PathLike) -> torch.nn.Module:
    path = Path(path)
    if not path.exists():
        raise EmbodiedError(f"policy file not found: {path}")
    payload = load_checkpoint(path)  # weights_only: a forged pickle is refused before anything runs
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise EmbodiedError(f"{path} is not an embodied policy file (expected format {POLICY_FORMAT})")
    module_name, _, qualname = payload["target"].partition(":")
    if not module_name.startswith(_ALLOWED_PACKAGES):
        raise EmbodiedError(f"{path} names class {payload['target']!r} outside this project; refusing to load")
    cls = importlib.import_module(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    module = cls(**payload["kwargs"])
    module.load_state_dict(payload["state_dict"])
    return module.eval()


def make_policy(spec: str, env: gym.Env) -> Policy:
    """``"random"``, ``"scripted"`` (Meta-World's expert, or a drawer-block task's skill plan) or a policy file."""
    if spec == "random":
        return lambda _obs: env.action_space.sample()
    if spec == "scripted":
        from envs.drawer_block import DrawerBlockEnv
        from envs.experts import scripted_expert, scripted_plan

        return scripted_plan(env) if isinstance(env.unwrapped, DrawerBlockEnv) else scripted_expert(env)
    module = load_policy_module(spec)
    return module.act
