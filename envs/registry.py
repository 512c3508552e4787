"""Gymnasium ids for every environment of the project, named as Gymnasium names its own
(``<name>-<variant>-v<version>``, the version last).

``embodied/<task>``                     Meta-World v3 task, 39-d state observations (``embodied/reach-v3``)
``embodied/<name>-pixels-v3``           the same task, uint8 64x64x3 images (kwargs: width, height, camera, obs_type)
``embodied/<name>-distractor-v3``       pixels with distractions (kwargs: axes, difficulty, background; see
                                        ``envs.distractions``); the default is a moving background video
``embodied/drawer-block-<stow|retrieve|tidy>-v0``  long-horizon tasks in a scene of ours (WALL-E)
``embodied/point-hold-v0``, ``embodied/point-hold-clean-v0``  a diagnostic task for learned rewards (PARL)

The ids of earlier releases (``embodied/reach-v3-pixels``) still make the same env, with a deprecation warning.
"""

from __future__ import annotations

import warnings

import gymnasium as gym

from envs.drawer_block import TASKS as DRAWER_BLOCK_TASKS
from envs.metaworld_env import MAX_EPISODE_STEPS, TASKS
from envs.point_hold import MAX_EPISODE_STEPS as POINT_HOLD_STEPS, VARIANTS as POINT_HOLD_VARIANTS

NAMESPACE = "embodied"
VARIANTS = {
    "": dict(obs_type="state"),
    "pixels": dict(obs_type="pixels"),
    "distractor": dict(obs_type="pixels", distractor=True),
}


def env_id(task: str, variant: str = "") -> str:
    """The id of a Meta-World ``task`` (``reach-v3``) in a ``variant`` (``""``, ``pixels``, ``distractor``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(v for v in VARIANTS if v)}")
    if not variant:
        return f"{NAMESPACE}/{task}"
    name, version = task.rsplit("-", 1)
    return f"{NAMESPACE}/{name}-{variant}-{version}"


def metaworld_ids() -> list[str]:
    return [env_id(task, variant) for task in TASKS for variant in VARIANTS]


def deprecated_ids() -> dict[str, str]:
    """Old id -> its replacement."""
    return {f"{NAMESPACE}/{task}-{variant}": env_id(task, variant) for task in TASKS for variant in VARIANTS if variant}


def drawer_block_ids() -> list[str]:
    return [f"{NAMESPACE}/drawer-block-{task}-v0" for task in DRAWER_BLOCK_TASKS]


def point_hold_ids() -> list[str]:
    return [f"{NAMESPACE}/{name}" for name in POINT_HOLD_VARIANTS]


def make_deprecated(replacement: str, **kwargs):
    """Entry point of an old id: the env of ``replacement``, after a warning that names it."""
    from envs.metaworld_env import MetaWorldEnv

    # FutureWarning, not DeprecationWarning: Python shows it by default (a DeprecationWarning raised here,
    # outside the user's __main__, would be hidden)
    warnings.warn(f"this id is deprecated; use {replacement} (the same environment)", FutureWarning, stacklevel=2)
    return MetaWorldEnv(**kwargs)


def register_all() -> None:
    """Register every id (idempotent: safe to call on every import)."""
    for task, drawer_id in zip(DRAWER_BLOCK_TASKS, drawer_block_ids()):
        if drawer_id not in gym.registry:
            gym.register(
                id=drawer_id,
                entry_point="envs.drawer_block:DrawerBlockEnv",
                kwargs=dict(task=task),
                max_episode_steps=3000,
            )
    for name, nuisance in POINT_HOLD_VARIANTS.items():
        if f"{NAMESPACE}/{name}" not in gym.registry:
            gym.register(
                id=f"{NAMESPACE}/{name}",
                entry_point="envs.point_hold:PointHoldEnv",
                kwargs=dict(nuisance=nuisance),
                max_episode_steps=POINT_HOLD_STEPS,
            )
    for task in TASKS:
        for variant, kwargs in VARIANTS.items():
            new = env_id(task, variant)
            if new not in gym.registry:
                gym.register(
                    id=new,
                    entry_point="envs.metaworld_env:MetaWorldEnv",
                    kwargs=dict(task=task, **kwargs),
                    max_episode_steps=MAX_EPISODE_STEPS,
                )
    for old, new in deprecated_ids().items():
        if old not in gym.registry:
            spec = gym.registry[new]
            gym.register(
                id=old,
                entry_point="envs.registry:make_deprecated",
                kwargs=dict(replacement=new, **spec.kwargs),
                max_episode_steps=MAX_EPISODE_STEPS,
            )


def registered_ids() -> list[str]:
    """Our current ids (the deprecated ones left out)."""
    old = deprecated_ids()
    return sorted(i for i in gym.registry if i.startswith(NAMESPACE + "/") and i not in old)
