"""Gymnasium ids for every environment of the project.

``embodied/<task>``             Meta-World v3 task, 39-d state observations
``embodied/<task>-pixels``      the same task, uint8 64x64x3 images (kwargs: width, height, camera, obs_type)
``embodied/<task>-distractor``  pixels with a moving procedural background (for RePo)
``embodied/drawer-block-<stow|retrieve|tidy>-v0``  long-horizon tasks in a scene of ours (WALL-E)
"""

from __future__ import annotations

import gymnasium as gym

from envs.drawer_block import TASKS as DRAWER_BLOCK_TASKS
from envs.metaworld_env import MAX_EPISODE_STEPS, TASKS

NAMESPACE = "embodied"
VARIANTS = {
    "": dict(obs_type="state"),
    "-pixels": dict(obs_type="pixels"),
    "-distractor": dict(obs_type="pixels", distractor=True),
}


def metaworld_ids() -> list[str]:
    return [f"{NAMESPACE}/{task}{suffix}" for task in TASKS for suffix in VARIANTS]


def drawer_block_ids() -> list[str]:
    return [f"{NAMESPACE}/drawer-block-{task}-v0" for task in DRAWER_BLOCK_TASKS]


def register_all() -> None:
    """Register every id (idempotent: safe to call on every import)."""
    for task, env_id in zip(DRAWER_BLOCK_TASKS, drawer_block_ids()):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="envs.drawer_block:DrawerBlockEnv", kwargs=dict(task=task),
                         max_episode_steps=3000)
    for task in TASKS:
        for suffix, kwargs in VARIANTS.items():
            env_id = f"{NAMESPACE}/{task}{suffix}"
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point="envs.metaworld_env:MetaWorldEnv",
                kwargs=dict(task=task, **kwargs),
                max_episode_steps=MAX_EPISODE_STEPS,
            )


def registered_ids() -> list[str]:
    return sorted(env_id for env_id in gym.registry if env_id.startswith(NAMESPACE + "/"))
