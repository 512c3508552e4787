"""The symbolic layer over the drawer-block scene: predicates computed from the simulator, and
skills as parameterised actions executed by closed-loop controllers in the real MuJoCo env.

Each skill drives the low-level env through ``env.step`` and reports success by its
post-condition (``grasp(block)`` succeeded iff the block is now held, ``pull(handle)`` iff the
drawer is now open, ...), so failures come from physics, not from a table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.drawer_block import DRAWER_CLOSED, DRAWER_OPEN, REACH, DrawerBlockEnv

SAFE_Z = 0.28
SKILLS: tuple[str, ...] = (
    "move_to(block)",
    "move_to(handle)",
    "move_to(drawer)",
    "move_to(goal)",
    "grasp(block)",
    "grasp(handle)",
    "release()",
    "pull(handle)",
    "push(handle)",
)
GOALS = {
    "stow": "put the blue block into the drawer and close the drawer",
    "retrieve": "take the blue block out of the drawer and put it on the green goal mark",
    "tidy": "put the blue block on the green goal mark and close the drawer",
}


def predicates(env: DrawerBlockEnv) -> dict[str, bool]:
    tip = env.tip()
    over_drawer = env.drawer_inside() + np.array([0, -0.03, 0])
    return {
        "gripper_empty": not (env.holding("block") or env.holding("handle")),
        "holding_block": env.holding("block"),
        "holding_handle": env.holding("handle"),
        "near_block": bool(np.linalg.norm(tip - (env.block() + [0, 0, 0.025])) < 0.04),
        "near_handle": bool(np.linalg.norm(tip - env.handle()) < 0.04),
        "over_drawer": bool(np.linalg.norm(tip[:2] - over_drawer[:2]) < 0.04),
        "over_goal": bool(np.linalg.norm(tip[:2] - env.goal()[:2]) < 0.04),
        "drawer_open": env.drawer_opening() > DRAWER_OPEN,
        "drawer_closed": env.drawer_opening() < DRAWER_CLOSED,
        "block_in_drawer": env.block_in_drawer(),
        "block_on_goal": env.block_on_goal(),
    }


def describe(state: dict[str, bool]) -> str:
    """Predicates as text for the LLM: the true ones, then the false ones."""
    true = [k for k, v in state.items() if v]
    false = [k for k, v in state.items() if not v]
    return f"true: {', '.join(true) or 'nothing'}; false: {', '.join(false)}"


@dataclass
class SkillResult:
    success: bool
    steps: int
    frames: list


class SkillExecutor:
    """Runs skills on a ``DrawerBlockEnv`` (pass the raw env, or ``gym_env.unwrapped``)."""

    def __init__(self, env: DrawerBlockEnv, record: bool = False, max_steps: int = 120):
        self.env, self.record, self.max_steps = env, record, max_steps

    def _drive(self, target: np.ndarray, grip: float, tol: float = 0.01, max_steps: int | None = None) -> int:
        steps = 0
        for _ in range(max_steps or self.max_steps):
            error = target - self.env.data.mocap_pos[0]
            if np.linalg.norm(error) < tol:
                break
            self._step(np.concatenate([np.clip(error / 0.02, -1, 1), [grip]]))
            steps += 1
        for _ in range(10):  # let the gripper settle on the mocap
            self._step(np.array([0, 0, 0, grip]))
            steps += 1
        return steps

    def _step(self, action: np.ndarray) -> None:
        self.env.step(action)
        if self.record:
            self.frames.append(self.env.render())

    def _grip(self) -> float:
        return 1.0 if (self.env.holding("block") or self.env.holding("handle")) else -1.0

    def _tip_to_mocap(self) -> np.ndarray:
        return self.env.data.mocap_pos[0] - self.env.tip()

    def _target(self, name: str) -> np.ndarray:
        env = self.env
        if name == "block":
            return env.block() + [0, 0, 0.03]
        if name == "handle":
            return env.handle()
        if name == "drawer":
            return env.drawer_inside() + [0, -0.03, 0.2]
        if name == "goal":
            return env.goal() + [0, 0, 0.1]
        raise ValueError(f"unknown target {name!r}")

    def execute(self, skill: str) -> SkillResult:
        if skill not in SKILLS:
            raise ValueError(f"unknown skill {skill!r}; known: {SKILLS}")
        self.frames = []
        env, grip = self.env, self._grip()
        name, arg = skill.split("(")[0], skill[skill.index("(") + 1 : -1]
        steps = 0
        if name == "move_to":
            target_tip = self._target(arg)
            offset = self._tip_to_mocap()
            up = env.data.mocap_pos[0].copy()
            up[2] = max(up[2], SAFE_Z)
            steps += self._drive(up, grip)
            above = target_tip + offset
            steps += self._drive(np.array([above[0], above[1], max(above[2], SAFE_Z)]), grip)
            steps += self._drive(above, grip)
            success = bool(np.linalg.norm(env.tip() - self._target(arg)) < 0.03)
        elif name == "grasp":
            was_empty = grip < 0
            point = env.block() + [0, 0, 0.025] if arg == "block" else env.handle()
            if np.linalg.norm(point - env.tip()) < REACH:  # the suction cup is put on the named object only
                for _ in range(5):
                    self._step(np.array([0, 0, 0, 1.0]))
                    steps += 1
            success = was_empty and env.holding(arg)  # grasping while already holding achieves nothing
        elif name == "release":
            was_holding = grip > 0
            for _ in range(25):
                self._step(np.array([0, 0, 0, -1.0]))
                steps += 1
            success = was_holding and not (env.holding("block") or env.holding("handle"))
        elif name in ("pull", "push"):
            direction = -1.0 if name == "pull" else 1.0
            distance = 0.19 if name == "pull" else 0.23  # pushing overshoots into the joint limit to close fully
            target = env.data.mocap_pos[0] + np.array([0, direction * distance, 0])
            steps += self._drive(target, grip, max_steps=60)
            success = env.drawer_opening() > DRAWER_OPEN if name == "pull" else env.drawer_opening() < DRAWER_CLOSED
        else:  # pragma: no cover - SKILLS and this dispatch are kept in step
            raise AssertionError(skill)
        return SkillResult(bool(success), steps, self.frames)


SCRIPTED_PLANS = {
    "stow": [
        "move_to(handle)",
        "grasp(handle)",
        "pull(handle)",
        "release()",
        "move_to(block)",
        "grasp(block)",
        "move_to(drawer)",
        "release()",
        "move_to(handle)",
        "grasp(handle)",
        "push(handle)",
        "release()",
    ],
    "retrieve": [
        "move_to(handle)",
        "grasp(handle)",
        "pull(handle)",
        "release()",
        "move_to(block)",
        "grasp(block)",
        "move_to(goal)",
        "release()",
    ],
    "tidy": [
        "move_to(block)",
        "grasp(block)",
        "move_to(goal)",
        "release()",
        "move_to(handle)",
        "grasp(handle)",
        "push(handle)",
        "release()",
    ],
}
