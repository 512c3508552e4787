"""A 30-second diagnostic task for learned-reward RL, shaped like a Meta-World one.

A 2-D hand moves (0.2 per step) from near (-0.5, -0.5) to a goal at (0.5, 0.5) and must stay there; two of the
four action dimensions do nothing (like the gripper on a pushing task); the reward is a function of the state
after the step, -max(d - 0.1, 0), flat inside the goal region; success is d < 0.15; 30-step episodes.
``embodied/point-hold-v0`` adds ten random per-episode features to the observation that do not matter (like
object placements that the task does not depend on); ``embodied/point-hold-clean-v0`` has none. A SAC oracle
learns either within ~1000 steps, so the pair tells apart what a learned reward adds (``docs/agents/parl.md``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.actions import check_reset, checked_action
from envs.rendering import check_frame_size

MAX_EPISODE_STEPS = 30
SPEED = 0.2  # how far the hand moves per step at full action
START = (-0.5, -0.5)  # the hand's start, up to +-0.1 per axis
VARIANTS = {"point-hold-v0": 10, "point-hold-clean-v0": 0}  # id (without namespace) -> irrelevant features
MAX_NUISANCE = 10_000  # features: 10**12 asked numpy for 931 GiB building the observation space


class PointHoldEnv(gym.Env):
    """Move the hand to a fixed goal and keep it there; ``nuisance`` irrelevant per-episode features.

    ``render_mode="rgb_array"`` draws the square from above (goal region green, hand red), so videos and
    ``embodied video`` work as on the other ids."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    goal = np.array([0.5, 0.5], np.float32)

    def __init__(
        self,
        nuisance: int = 10,
        render_mode: str | None = None,
        render_width: int = 64,
        render_height: int = 64,
        camera: str | None = None,
    ):
        if camera not in (None, "top"):  # one view, from above; named so that --camera works as on the other ids
            raise ValueError(f"unknown camera {camera!r}; choose one of top")
        if (
            not isinstance(nuisance, (int, np.integer))
            or isinstance(nuisance, bool)
            or not 0 <= nuisance <= MAX_NUISANCE
        ):
            raise ValueError(f"nuisance must be an integer in [0, {MAX_NUISANCE}], got {nuisance!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        check_frame_size(render_width=render_width, render_height=render_height)
        self.nuisance, self.render_mode, self.camera = nuisance, render_mode, camera or "top"
        self.render_width, self.render_height = int(render_width), int(render_height)
        self.observation_space = gym.spaces.Box(-1, 1, (2 + nuisance,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.hand, self.features]).astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._was_reset = True
        self.hand = (np.array(START) + self.np_random.uniform(-0.1, 0.1, 2)).astype(np.float32)
        self.features = self.np_random.uniform(-1, 1, self.nuisance).astype(np.float32)
        return self._obs(), {"success": 0.0, "is_success": False}

    def render(self) -> np.ndarray | None:
        """The square [-1, 1]^2 seen from above: ``uint8 (render_height, render_width, 3)``; None unless made with
        ``render_mode="rgb_array"`` (Gymnasium's rule, as the other envs)."""
        if self.render_mode != "rgb_array":
            return None
        ys, xs = np.mgrid[0 : self.render_height, 0 : self.render_width]
        x = (xs + 0.5) / self.render_width * 2 - 1
        y = 1 - (ys + 0.5) / self.render_height * 2
        frame = np.full((self.render_height, self.render_width, 3), 235, np.uint8)
        frame[np.hypot(x - self.goal[0], y - self.goal[1]) < 0.15] = (120, 200, 120)
        frame[np.hypot(x - self.hand[0], y - self.hand[1]) < 0.06] = (210, 50, 50)
        return frame

    def step(self, action):
        check_reset(self)
        self.hand = move(self.hand, checked_action(action))
        distance = float(np.linalg.norm(self.hand - self.goal))
        success = float(distance < 0.15)
        return self._obs(), -max(distance - 0.1, 0.0), False, False, {"success": success, "is_success": bool(success)}

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action: straight to the goal at full speed, then stay (the unused dimensions 0)."""
        toward = np.clip((self.goal - self.hand) / SPEED, -1, 1)
        return np.concatenate([toward, np.zeros(2)]).astype(np.float32)


def move(hand: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The hand after one step of ``action`` (its first two dimensions; broadcasts over leading axes)."""
    return np.clip(hand + SPEED * np.clip(action[..., :2], -1, 1), -1, 1).astype(np.float32)


def reward_optimal_path(
    reward, features: np.ndarray | None = None, gamma: float = 0.9, steps: int = MAX_EPISODE_STEPS
) -> np.ndarray:
    """Hand positions ``(steps, 2)`` from ``START`` under the policy that maximises ``reward``.

    What a learner that optimises a learned reward converges to, computed exactly instead of by RL: value
    iteration on the lattice of spacing 0.1 that the hand stays on with moves of 0.2 * {-1, -0.5, 0, 0.5, 1}
    per axis, the unused action dimensions in {-1, 0, 1} (a reward of the action may pay for them).
    ``reward(obs (N, D), action (N, 4)) -> (N,)`` is applied to the state before the step, as PARL's loop
    relabels its transitions; ``features`` are the per-episode features of the observation (none by default).
    """
    features = np.zeros(0, np.float32) if features is None else np.asarray(features, np.float32)
    axis = np.round(np.linspace(-1, 1, 21), 6)
    hands = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    moves, unused = np.linspace(-1, 1, 5), np.array([-1.0, 0.0, 1.0])
    actions = np.stack(np.meshgrid(moves, moves, unused, unused, indexing="ij"), -1).reshape(-1, 4).astype(np.float32)
    obs = np.concatenate([hands, np.broadcast_to(features, (len(hands), len(features)))], 1)
    r = np.asarray(reward(np.repeat(obs, len(actions), 0), np.tile(actions, (len(hands), 1))), np.float64)
    r = r.reshape(len(hands), len(actions))

    def index(xy: np.ndarray) -> np.ndarray:  # lattice index of hand positions (..., 2)
        cell = np.rint((xy + 1) / 0.1).astype(int)
        return cell[..., 0] * len(axis) + cell[..., 1]

    after = index(move(hands[:, None], actions[None]))  # lattice index after each (hand, action)
    value = np.zeros(len(hands))
    for _ in range(1000):
        new = (r + gamma * value[after]).max(1)
        done = np.abs(new - value).max() < 1e-8
        value = new
        if done:
            break
    policy = (r + gamma * value[after]).argmax(1)
    state, path = int(index(np.array(START))), []
    for _ in range(steps):
        state = after[state, policy[state]]
        path.append(hands[state])
    return np.stack(path)
