"""Meta-World's scripted expert policies, usable on any variant of our environments (and point-hold's)."""

from __future__ import annotations

import warnings
from typing import Callable

import gymnasium as gym
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

# Meta-World's experts warn at every step that their gains exceed the action range; we clip anyway.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")


def has_scripted_expert(env_id: str) -> bool:
    """Whether ``scripted_expert`` works on the registered ``env_id``, read from its registration (nothing is
    built): Meta-World tasks (any observation variant) and point-hold."""
    from gymnasium.envs.registration import load_env_creator

    from envs.metaworld_env import MetaWorldEnv
    from envs.point_hold import PointHoldEnv

    spec = gym.spec(env_id)
    if "replacement" in spec.kwargs:  # a deprecated id: the one it stands for
        spec = gym.spec(spec.kwargs["replacement"])
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    if creator is PointHoldEnv:
        return True
    return creator is MetaWorldEnv and spec.kwargs.get("task") in ENV_POLICY_MAP


def scripted_expert(env: gym.Env) -> Callable[[object], np.ndarray]:
    """A policy ``obs -> action`` that runs the task's hand-written expert.

    The expert reads the 39-d simulator state, which the env keeps as ``last_state`` whatever its
    observation type (so it works on pixel and distractor variants too). On point-hold the expert goes
    straight to the goal and stays there.
    """
    from envs.point_hold import PointHoldEnv

    base = env.unwrapped
    if isinstance(base, PointHoldEnv):
        return lambda _obs: base.expert_action()
    task = getattr(base, "task", None)
    if task not in ENV_POLICY_MAP:
        raise ValueError(f"no scripted expert for env {env.spec.id if env.spec else env!r}")
    expert = ENV_POLICY_MAP[task]()

    def act(_obs) -> np.ndarray:
        action = expert.get_action(base.last_state.astype(np.float64))
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


def scripted_plan(env: gym.Env) -> Callable[[object], np.ndarray]:
    """A policy ``obs -> action`` for the drawer-block tasks: the task's scripted skill plan.

    The skills are closed-loop controllers that step an env themselves, so the plan runs on a
    private copy of the live simulator state and its low-level actions are replayed one per call.
    MuJoCo is deterministic, so the live env follows the copy; if an observation ever differs from
    the one the copy predicted (a reset, or anything else), the plan is made again from the live
    state. Once the task is solved it holds still, as a policy scored at an episode's last step must.
    """
    import copy

    from envs.drawer_block import DrawerBlockEnv
    from envs.symbolic import SCRIPTED_PLANS, SkillExecutor

    base = env.unwrapped
    if not isinstance(base, DrawerBlockEnv):
        raise ValueError(f"no scripted plan for env {env.spec.id if env.spec else env!r}")
    shadow = DrawerBlockEnv(base.task)
    queue: list[tuple[np.ndarray, np.ndarray]] = []  # (action, observation it leads to)
    expected: list[np.ndarray | None] = [None]

    def plan() -> None:
        shadow.data = copy.copy(base.data)  # MjData's copy is mj_copyData: the complete simulator state
        shadow._was_reset = True  # its state is the live env's, which was reset
        recorded: list[tuple[np.ndarray, np.ndarray]] = []
        step = shadow.step

        def recording_step(action):
            out = step(action)
            recorded.append((np.asarray(action, np.float32), out[0]))
            return out

        shadow.step = recording_step
        try:
            executor = SkillExecutor(shadow)
            for skill in SCRIPTED_PLANS[base.task]:
                executor.execute(skill)
        finally:
            del shadow.step
        queue[:] = recorded

    def act(obs) -> np.ndarray:
        if expected[0] is None and base.solved():  # the plan is done (or nothing was needed): hold still
            return np.zeros(4, np.float32)
        if expected[0] is None or not np.allclose(obs, expected[0], atol=1e-5):
            plan()  # a plan that ended unsolved, or one the live env left, is made again
        if not queue:
            expected[0] = None
            return np.zeros(4, np.float32)
        action, expected[0] = queue.pop(0)
        return action

    return act
