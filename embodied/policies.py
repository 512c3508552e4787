"""Policies as plain callables ``obs -> action``, and a file format for trained ones.

A trained policy file is a torch checkpoint holding the import path of an ``nn.Module`` class,
its constructor kwargs and its state dict; the module implements ``act(obs) -> action`` on numpy.
Loading runs nothing the file chooses: the class must be one of ``POLICY_CLASSES`` (what the agents
save), the kwargs plain numbers, and the weights must fit the class built from them (checked on the
meta device, so absurd sizes allocate nothing) before the real module is built.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from embodied.checkpoint import load_weights, torch_save

from embodied.atomic import atomic_path
from embodied.errors import EmbodiedError

Policy = Callable[[object], np.ndarray]
POLICY_FORMAT = "embodied-policy-v1"
POLICY_CLASSES = (  # what the agents save
    "agents.parl.sac:TanhGaussianActor",
    "agents.pearl.iql:IQLPolicy",
    "agents.repo.policy:RePoPolicy",
)


def save_policy(path: str | os.PathLike, module: torch.nn.Module, kwargs: dict) -> Path:
    """Save ``module`` so that ``load_policy`` can rebuild it as ``type(module)(**kwargs)``."""
    cls = type(module)
    payload = {
        "format": POLICY_FORMAT,
        "target": f"{cls.__module__}:{cls.__qualname__}",
        "kwargs": kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch_save(payload, tmp)
    return Path(path)


def load_policy_module(path: str | os.PathLike) -> torch.nn.Module:
    """The policy saved in ``path``; a forged or mismatched file is an ``EmbodiedError`` before anything is built."""
    path = Path(path)
    if not path.exists():
        raise EmbodiedError(f"policy file not found: {path}")
    if path.is_dir():  # a run directory: the policy its run saved
        if not (path / "policy.pt").is_file():
            raise EmbodiedError(f"{path} is a directory without a policy.pt (a finished run's directory holds one)")
        path = path / "policy.pt"
    payload = load_weights(path)  # weights_only: a forged pickle is refused before anything runs
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise EmbodiedError(f"{path} is not an embodied policy file (expected format {POLICY_FORMAT})")
    target, kwargs, state = payload.get("target"), payload.get("kwargs"), payload.get("state_dict")
    if target not in POLICY_CLASSES:  # a file naming any other callable could make us call it
        raise EmbodiedError(
            f"{path} names class {str(target)[:100]!r}, not a policy class "
            f"({', '.join(POLICY_CLASSES)}); refusing to load"
        )
    if not isinstance(kwargs, dict) or not all(
        isinstance(k, str) and type(v) in (int, float, bool) for k, v in kwargs.items()
    ):
        raise EmbodiedError(f"{path}: the constructor arguments must be plain numbers, got {str(kwargs)[:200]}")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise EmbodiedError(f"{path}: state_dict must map names to tensors")
    module_name, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), name)
    try:
        with torch.device("meta"):  # shapes only: hidden=10**12 allocates nothing here
            expected = {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as err:
        raise EmbodiedError(f"{path}: cannot build {target} from {kwargs}: {err}") from None
    saved = {k: tuple(v.shape) for k, v in state.items()}
    if saved != expected:
        wrong = sorted(set(saved) ^ set(expected)) or [k for k in expected if saved[k] != expected[k]]
        key = wrong[0]
        raise EmbodiedError(
            f"{path}: its weights do not fit {target}({kwargs}): {key!r} is "
            f"{saved.get(key, 'missing')} in the file, {expected.get(key, 'absent')} in the class"
        )
    module = cls(**kwargs)
    module.load_state_dict(state)
    module.saved_kwargs = dict(kwargs)
    return module.eval()


def make_policy(spec: str, env: gym.Env) -> Policy:
    """``"random"``, ``"scripted"`` (the task's expert, or a drawer-block task's skill plan) or a policy file."""
    if spec == "random":
        return lambda _obs: env.action_space.sample()
    if spec == "scripted":
        from envs.drawer_block import DrawerBlockEnv
        from envs.experts import scripted_expert, scripted_plan

        try:
            return scripted_plan(env) if isinstance(env.unwrapped, DrawerBlockEnv) else scripted_expert(env)
        except ValueError as err:  # a task without one
            raise EmbodiedError(f"{err}; use --policy random or a policy file") from None
    module = load_policy_module(spec)
    spaces = {"obs_dim": ("observation", env.observation_space.shape), "act_dim": ("action", env.action_space.shape)}
    for key, (what, shape) in spaces.items():
        size = module.saved_kwargs.get(key)
        if size is not None and shape != (size,):
            raise EmbodiedError(
                f"{spec} is a policy for {what}s of size {size}; this environment's {what} space has shape {shape}"
            )
    frame = getattr(module, "observation_shape", None)
    if frame is not None and env.observation_space.shape != tuple(frame):
        raise EmbodiedError(
            f"{spec} is a policy for observations of shape {tuple(frame)}; this environment's observation space "
            f"is {env.observation_space}"
        )
    return EpisodicPolicy(module) if hasattr(module, "reset") else module.act


class EpisodicPolicy:
    """A policy with memory (RePo's filters its latent state over the frames): ``reset()`` starts an episode."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __call__(self, obs) -> np.ndarray:
        return self.module.act(obs)

    def reset(self) -> None:
        self.module.reset()


def start_episode(policy: Policy) -> None:
    """Call at each episode's start, before the policy's first action: a policy with memory forgets the last."""
    if isinstance(policy, EpisodicPolicy):
        policy.reset()
