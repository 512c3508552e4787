"""A long-horizon tabletop scene of ours (assets/walle/drawer_block.xml): a drawer cabinet, a
block, a goal mark and a mocap-driven suction gripper that holds what it grasps by a weld.

Low-level control like Meta-World: action = (dx, dy, dz, grip) in [-1, 1]; grip > 0 grasps the
object under the tip (block or drawer handle) if it is within reach, grip <= 0 releases.
Observation: 14-d state (tip xyz, holding block, holding handle, block xyz, drawer opening,
handle xyz, goal xy). Three multi-step tasks share the scene:

``stow``      block on the table, drawer closed -> block in the drawer and the drawer closed
``retrieve``  block in the closed drawer        -> block on the goal mark
``tidy``      block on the table, drawer open   -> block on the goal mark and the drawer closed
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.actions import check_reset, checked_action
from envs.rendering import FastRenderer, check_camera, check_frame_size, state_without_renderers

ASSET = Path(__file__).resolve().parent.parent / "assets" / "walle" / "drawer_block.xml"
TASKS = ("stow", "retrieve", "tidy")
LAYOUTS = (
    "block-on-table-drawer-closed",
    "block-on-table-drawer-open",
    "block-in-drawer-drawer-closed",
    "block-in-drawer-drawer-open",
)
TASK_LAYOUTS = {"stow": LAYOUTS[0], "retrieve": LAYOUTS[2], "tidy": LAYOUTS[1]}
STEP = 0.02  # metres of mocap motion per unit action
SUBSTEPS = 10
REACH = 0.045  # suction range from the tip
HOLD_OFFSET = 0.06  # held object centre below the gripper body
WORKSPACE_LOW, WORKSPACE_HIGH = np.array([-0.45, -0.45, 0.03]), np.array([0.45, 0.4, 0.45])
DRAWER_OPEN, DRAWER_CLOSED = 0.12, 0.02


class DrawerBlockEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        task: str = "stow",
        render_mode: str | None = None,
        render_width: int = 256,
        render_height: int = 256,
        camera: str = "front",
        layout: str | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        check_frame_size(render_width=render_width, render_height=render_height)  # not first at render()
        self.task = task
        self.layout = layout or TASK_LAYOUTS[task]  # where the block and the drawer start
        self.render_mode, self.render_width, self.render_height, self.camera = (
            render_mode,
            render_width,
            render_height,
            camera,
        )
        self.model = mujoco.MjModel.from_xml_path(str(ASSET))
        check_camera(self.model, camera)  # not first at render()
        self.data = mujoco.MjData(self.model)
        self._eq = {name: self.model.equality(f"hold_{name}").id for name in ("block", "handle")}
        for eq in self._eq.values():
            self.model.eq_data[eq][3:6] = [0, 0, -HOLD_OFFSET]
            self.model.eq_data[eq][6:10] = [1, 0, 0, 0]
        self._block_qpos = self.model.joint("block").qposadr[0]
        self._gripper_qpos = self.model.joint("gripper").qposadr[0]
        self._drawer_qpos = self.model.joint("drawer_slide").qposadr[0]
        self.observation_space = spaces.Box(-2.0, 2.0, shape=(14,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._renderer: FastRenderer | None = None

    # ------------------------------------------------------------------ state access
    def tip(self) -> np.ndarray:
        return self.data.site("tip").xpos.copy()

    def block(self) -> np.ndarray:
        return self.data.body("block").xpos.copy()

    def handle(self) -> np.ndarray:
        return self.data.site("handle").xpos.copy()

    def drawer_inside(self) -> np.ndarray:
        return self.data.site("drawer_inside").xpos.copy()

    def goal(self) -> np.ndarray:
        return self.data.site("goal").xpos.copy()

    def drawer_opening(self) -> float:
        return float(self.data.qpos[self._drawer_qpos])

    def holding(self, name: str) -> bool:
        return bool(self.data.eq_active[self._eq[name]])

    def block_in_drawer(self) -> bool:
        rel = self.block() - self.drawer_inside()
        return bool(abs(rel[0]) < 0.1 and abs(rel[1]) < 0.1 and self.block()[2] < 0.09 and not self.holding("block"))

    def block_on_goal(self) -> bool:
        b = self.block()
        return bool(np.linalg.norm(b[:2] - self.goal()[:2]) < 0.05 and b[2] < 0.04 and not self.holding("block"))

    def solved(self) -> bool:
        closed = self.drawer_opening() < DRAWER_CLOSED
        if self.task == "stow":
            return self.block_in_drawer() and closed and not self.holding("handle")
        if self.task == "retrieve":
            return self.block_on_goal()
        return self.block_on_goal() and closed and not self.holding("handle")

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._was_reset = True
        mujoco.mj_resetData(self.model, self.data)
        for eq in self._eq.values():
            self.data.eq_active[eq] = 0
        rng = self.np_random
        gripper = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.3, -0.2), 0.3])
        self.data.mocap_pos[0] = gripper
        self.data.qpos[self._gripper_qpos : self._gripper_qpos + 3] = gripper
        self.data.qpos[self._drawer_qpos] = 0.17 if self.layout.endswith("drawer-open") else 0.0
        if self.layout.startswith("block-in-drawer"):
            mujoco.mj_forward(self.model, self.data)
            block = self.drawer_inside() + np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.08, -0.04), -0.02])
        else:
            block = np.array([rng.uniform(-0.3, -0.1), rng.uniform(-0.2, 0.0), 0.025])
        self.data.qpos[self._block_qpos : self._block_qpos + 3] = block
        self.data.qpos[self._block_qpos + 3 : self._block_qpos + 7] = [1, 0, 0, 0]
        mujoco.mj_forward(self.model, self.data)
        for _ in range(50):
            mujoco.mj_step(self.model, self.data)
        return self._obs(), {"success": self.solved()}

    def step(self, action):
        check_reset(self)
        action = checked_action(action, np.float64)
        target = np.clip(self.data.mocap_pos[0] + STEP * action[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        self.data.mocap_pos[0] = target
        if action[3] > 0:
            self._grasp()
        else:
            for eq in self._eq.values():
                self.data.eq_active[eq] = 0
        for _ in range(SUBSTEPS):
            mujoco.mj_step(self.model, self.data)
        success = self.solved()
        return self._obs(), float(success), False, False, {"success": success, "is_success": success}

    def _grasp(self) -> None:
        if any(self.data.eq_active[eq] for eq in self._eq.values()):
            return
        tip = self.tip()
        candidates = {"block": self.block() + [0, 0, 0.025], "handle": self.handle()}
        name, point = min(candidates.items(), key=lambda kv: np.linalg.norm(kv[1] - tip))
        if np.linalg.norm(point - tip) < REACH:
            self.data.eq_active[self._eq[name]] = 1

    def _obs(self) -> np.ndarray:
        return np.concatenate(
            [
                self.tip(),
                [self.holding("block"), self.holding("handle")],
                self.block(),
                [self.drawer_opening()],
                self.handle(),
                self.goal()[:2],
            ]
        ).astype(np.float32)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = FastRenderer(self.model, self.render_width, self.render_height, self.camera, flip=False)
        return self._renderer.rgb(self.data)

    def __getstate__(self):
        """For pickling and ``copy.deepcopy``: everything but the renderer (made again on the next frame)."""
        return state_without_renderers(self)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
