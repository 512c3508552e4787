"""Manipulation environments, registered with Gymnasium on import.

``import envs`` then ``gym.make("embodied/reach-v3")``, or without the import
``gym.make("envs:embodied/reach-v3")`` (Gymnasium imports the module named before the colon).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose a backend

from envs.registry import drawer_block_ids, metaworld_ids, point_hold_ids, register_all, registered_ids

register_all()

__all__ = ["drawer_block_ids", "metaworld_ids", "point_hold_ids", "register_all", "registered_ids"]
