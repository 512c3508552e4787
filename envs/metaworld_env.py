"""Meta-World v3 tasks as well-behaved Gymnasium environments: state, pixels, distractors.

Fixes what the raw Meta-World env gets wrong for learning code: ``reset(seed=...)`` is honoured
(object and goal positions are re-sampled from the seeded generator at every reset),
observations lie inside their declared spaces, ``info["success"]`` and ``info["is_success"]``
are both set, and pixel observations are rendered fast (no shadows, no multisampling).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from envs.actions import check_reset, checked_action
from envs.distractions import Distractions
from envs.rendering import CAMERAS, EMPTY, FastRenderer, check_frame_size, state_without_renderers

TASKS: tuple[str, ...] = tuple(sorted(ALL_V3_ENVIRONMENTS))
OBS_TYPES = ("state", "pixels", "pixels+state")
STATE_DIM = 39
STATE_BOUND = 10.0  # metres / unit quaternions / gripper in [-1, 1]: nothing real leaves +-10
MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length for every v3 task
CORNER2_CLOSE_POS = (0.75, 0.075, 0.7)  # Meta-World's is (1.3, -0.2, 1.1): the arm would be ~15 pixels tall
BACKGROUND_BODIES = ("world", "tablelink", "RetainingWall")  # what the distractor video replaces
# Meta-World draws the goal as a red sphere of radius 0.01-0.02 m: 1-3 pixels of a 64x64 frame, next to a
# red arm, so a pixel agent can hardly see where to go. Drawn with the 0.05 m success radius of reach and
# push, in green, it covers 15-21 pixels. A site is only drawn: the state, physics and reward are unchanged.
GOAL_MARKER_RADIUS = 0.05
GOAL_MARKER_RGBA = (0.1, 0.85, 0.1, 1.0)


def observation_space(obs_type: str = "state", width: int = 64, height: int = 64) -> spaces.Space:
    """The observation space of a variant, known without building the simulator."""
    state_space = spaces.Box(-STATE_BOUND, STATE_BOUND, shape=(STATE_DIM,), dtype=np.float32)
    pixel_space = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
    if obs_type == "state":
        return state_space
    if obs_type == "pixels":
        return pixel_space
    return spaces.Dict({"pixels": pixel_space, "state": state_space})


def action_space() -> spaces.Box:
    """End-effector xyz displacement and gripper effort, each in [-1, 1]."""
    return spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task.

    Args:
        task: Meta-World task name, e.g. ``"reach-v3"``.
        obs_type: ``"state"`` (39-d float32), ``"pixels"`` (uint8 ``(H, W, 3)``), or
            ``"pixels+state"`` (Dict with keys ``pixels`` and ``state``).
        width, height: pixel observation size.
        camera: one of ``envs.rendering.CAMERAS``.
        distractor: vary what is seen along ``axes`` (see ``envs.distractions``), new draws every episode
            from a generator seeded by ``reset(seed=...)``. Task, state and reward are unchanged.
        axes: the distraction axes, a subset of ``background``, ``color``, ``camera``, ``lighting`` (a tuple
            or a comma-separated string); the default is the background video alone.
        difficulty: in [0, 1], how far each axis departs from the plain frame (0: not at all).
        background: the background video family, ``noise`` (1/f noise) or ``shapes`` (drifting shapes).
        render_mode: ``"rgb_array"`` for ``render()`` (videos), at ``render_width x render_height``.
        terminate_on_success: end the episode (``terminated=True``) once the task succeeds.
        sticky_success: ``info["is_success"]`` stays True for the rest of the episode once the task has
            succeeded, so that Stable-Baselines3's Monitor and EvalCallback, which read it at the last step,
            count success as Meta-World's evaluation does (at any step). ``info["success"]`` is always the
            current step's.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        task: str,
        obs_type: str = "state",
        width: int = 64,
        height: int = 64,
        camera: str = "corner2",
        distractor: bool = False,
        axes=None,
        difficulty: float | None = None,
        background: str | None = None,
        render_mode: str | None = None,
        render_width: int = 256,
        render_height: int = 256,
        terminate_on_success: bool = False,
        sticky_success: bool = False,
    ):
        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; known: {', '.join(TASKS)}")
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown obs_type {obs_type!r}; choose one of {', '.join(OBS_TYPES)}")
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; choose one of {', '.join(CAMERAS)}")
        check_frame_size(width=width, height=height, render_width=render_width, render_height=render_height)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; only 'rgb_array'")
        if distractor and obs_type == "state":
            raise ValueError("distractor=True needs a pixel obs_type ('pixels' or 'pixels+state')")
        if not distractor and (axes, difficulty, background) != (None, None, None):
            raise ValueError(
                "axes, difficulty and background are options of the distractor envs (embodied/<task>-distractor-v3)"
            )

        self.task = task
        self.obs_type = obs_type
        self.width, self.height, self.camera = int(width), int(height), camera
        self.distractor = distractor
        self.render_mode = render_mode
        self.render_width, self.render_height = int(render_width), int(render_height)
        self.terminate_on_success = terminate_on_success
        self.sticky_success = sticky_success
        self._succeeded = False

        self._mw = self._make_inner(task)
        if camera == "corner2":  # moved closer, as TD-MPC(2) and MWM do: the arm and goal fill a 64x64 frame
            self._mw.model.cam_pos[self._mw.model.camera("corner2").id] = CORNER2_CLOSE_POS
        _enlarge_goal_marker(self._mw.model)
        self._step_count = 0
        self.last_state = np.zeros(STATE_DIM, dtype=np.float32)
        # False: step() skips rendering and returns the last observation again (ActionRepeat sets it for
        # the steps whose observation it drops: half the renders at action repeat 2, same observations)
        self.observe = True
        self._last_obs = None
        self._obs_renderer: FastRenderer | None = None
        self._video_renderer: FastRenderer | None = None
        background_bodies = np.array(
            [self._mw.model.body(name).id for name in BACKGROUND_BODIES if _has_body(self._mw.model, name)] + [EMPTY]
        )
        self.distractions = None
        if distractor:
            self.distractions = Distractions(
                self._mw.model, axes, difficulty, background, self.height, self.width, background_bodies
            )
        self._distraction_rng: np.random.Generator | None = None

        self.observation_space = observation_space(obs_type, self.width, self.height)
        self.action_space = action_space()

    @staticmethod
    def _make_inner(task: str):
        env = ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False  # the goal is part of the 39-d observation (as in MT1)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True  # object/goal positions come from env.np_random, which we seed
        env._set_task_called = True
        env.max_path_length = 10**9  # the TimeLimit wrapper truncates; Meta-World would raise past 500
        if "sawyer_observation_space" in env.__dict__:
            del env.sawyer_observation_space  # cached while partially observable
        return env

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._was_reset = True
        self._mw.np_random = self.np_random  # object/goal sampling follows our seed
        state, _ = self._mw.reset()
        if self.obs_type != "state":
            # Meta-World moves goal sites without it: a stale first frame
            mujoco.mj_forward(self._mw.model, self._mw.data)
        self._step_count = 0
        if self.distractions is not None:
            # a generator of its own: the task's draws stay the plain env's
            if seed is not None or self._distraction_rng is None:
                self._distraction_rng = np.random.default_rng(None if seed is None else [seed, 0xD157])
            self.distractions.reset(self._distraction_rng)
        self._succeeded = False
        return self._observation(state), {"success": False, "is_success": False}

    def step(self, action):
        check_reset(self)
        state, reward, _, _, mw_info = self._mw.step(checked_action(action))
        self._step_count += 1
        if self.distractions is not None:
            self.distractions.step()
        success = bool(mw_info.get("success", 0.0))
        info = {k: float(v) for k, v in mw_info.items() if k != "success"}
        self._succeeded = self._succeeded or success
        info["success"] = success
        info["is_success"] = self._succeeded if self.sticky_success else success
        terminated = self.terminate_on_success and success
        return self._observation(state), float(reward), terminated, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._video_renderer is None:
            self._video_renderer = FastRenderer(self._mw.model, self.render_width, self.render_height, self.camera)
        return self._distracted(self._video_renderer)

    def close(self):
        for renderer in (self._obs_renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._obs_renderer = self._video_renderer = None

    def __getstate__(self):
        """For pickling and ``copy.deepcopy``: the simulator exactly as it is, renderers left out. Meta-World's
        own pickling rebuilds its model from the XML and restores only qpos and qvel, so a copy lost the mocap
        target, the controls, the welds' data and what reset and this class wrote into the model (the camera,
        the goal marker), and moved differently from the original; its ``__dict__`` is carried instead."""
        state = state_without_renderers(self)
        inner = self._mw.__dict__.copy()
        views = _views_of_simulator(inner, self._mw.data)
        for name in views:
            inner[name] = None
        state["_mw"] = (type(self._mw), inner, views)
        return state

    def __setstate__(self, state):
        inner_class, inner, views = state.pop("_mw")
        self.__dict__.update(state)
        self._mw = inner_class.__new__(inner_class)
        self._mw.__dict__.update(inner)
        for name, (field, start, shape) in views.items():
            flat = getattr(self._mw.data, field).reshape(-1)  # a view: MuJoCo's arrays are contiguous
            self._mw.__dict__[name] = flat[start : start + int(np.prod(shape))].reshape(shape)

    # ----------------------------------------------------------------- internals
    @property
    def unwrapped_metaworld(self):
        """The underlying Meta-World env (for scripted experts and the symbolic layer)."""
        return self._mw

    def _observation(self, state: np.ndarray):
        state = np.clip(state, -STATE_BOUND, STATE_BOUND).astype(np.float32)  # inside the declared space
        self.last_state = state  # what scripted experts read, whatever the observation type
        if self.obs_type == "state":
            return state
        if not self.observe and self._last_obs is not None:  # a copy: checkers want a new object per step
            return self._last_obs.copy()
        pixels = self._pixels()
        self._last_obs = pixels if self.obs_type == "pixels" else {"pixels": pixels, "state": state}
        return self._last_obs

    def observation(self):
        """The observation of the current state (what step() would have returned with ``observe`` on)."""
        return self._observation(self.last_state)

    def clean_pixels(self) -> np.ndarray:
        """The current pixel observation without the distractor background (what the ``pixels`` variant
        shows in this state): paired with the distracted observation, it is RePo's calibration signal.
        A simulator privilege; a real camera has no such pair."""
        if self.obs_type == "state":
            raise ValueError("clean_pixels needs a pixel obs_type ('pixels' or 'pixels+state')")
        return self._observation_renderer().rgb(self._mw.data)

    def distraction_params(self) -> dict[str, np.ndarray]:
        """The current parameters of each distraction axis (``Distractions.params``); empty without distractions."""
        return {} if self.distractions is None else self.distractions.params()

    def _observation_renderer(self) -> FastRenderer:
        if self._obs_renderer is None:
            self._obs_renderer = FastRenderer(self._mw.model, self.width, self.height, self.camera)
        return self._obs_renderer

    def _pixels(self) -> np.ndarray:
        return self._distracted(self._observation_renderer())

    def _distracted(self, renderer: FastRenderer) -> np.ndarray:
        """A frame with the distractions applied (the plain frame without them)."""
        distractions = self.distractions
        if distractions is None or not distractions.active:
            return renderer.rgb(self._mw.data)
        frame = renderer.rgb(self._mw.data, distractions.edit_scene if distractions.edits_scene() else None)
        background = distractions.background_frame(renderer.height, renderer.width)
        if background is not None:
            body_ids = renderer.body_ids(self._mw.data, distractions.edit_camera)
            frame = distractions.composite(frame, body_ids, background)
        return frame


def _views_of_simulator(attributes: dict, data: mujoco.MjData) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """Attributes that are views of the simulator's arrays, as (array, first element, shape): a copy of the env
    must keep them views. Meta-World's ``get_body_com`` returns a row of ``data.xpos``, and twelve tasks keep one
    as their "initial" pad positions, which therefore follow the pads and enter the reward; a copy holding a
    frozen array paid a different reward from the second step on."""
    fields = {name: getattr(data, name) for name in dir(data) if not name.startswith("_")}
    fields = {name: array for name, array in fields.items() if isinstance(array, np.ndarray) and array.size}
    views = {}
    for name, value in attributes.items():
        if not isinstance(value, np.ndarray) or not value.flags.c_contiguous:
            continue
        for field, array in fields.items():
            if value.dtype == array.dtype and np.shares_memory(value, array):
                offset = value.__array_interface__["data"][0] - array.__array_interface__["data"][0]
                views[name] = (field, offset // array.itemsize, value.shape)
                break
    return views


def _enlarge_goal_marker(model: mujoco.MjModel) -> None:
    """Draw a visible goal site at ``GOAL_MARKER_RADIUS`` in ``GOAL_MARKER_RGBA`` (a hidden one stays hidden)."""
    try:
        site = model.site("goal").id
    except KeyError:
        return
    if model.site_rgba[site][3] > 0:
        model.site_size[site][0] = max(model.site_size[site][0], GOAL_MARKER_RADIUS)
        model.site_rgba[site] = GOAL_MARKER_RGBA


def _has_body(model, name: str) -> bool:
    try:
        model.body(name)
        return True
    except KeyError:
        return False
