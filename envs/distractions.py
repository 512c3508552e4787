"""Task-irrelevant variation along the axes the field measures, at a difficulty in [0, 1].

Following the Distracting Control Suite (Stone et al. 2021), each axis is a set of parameters drawn
uniformly at every episode within a range that grows linearly with the difficulty, and (where the
axis moves) a bounded random walk at every environment step:

``background``  the floor, table and walls replaced by a moving video (``noise``: 1/f noise,
                ``shapes``: textured shapes drifting over a plain ground), blended over the scene
                with weight = difficulty (1: replaced outright)
``color``       RGB offsets of the robot, the objects and the scene (table, floor, walls), up to
                +-0.5 * difficulty in each channel, walking every step
``camera``      the camera moved (up to 6 cm) and turned (up to 0.2 rad about each axis) times the
                difficulty, walking every step
``lighting``    diffuse intensity (x0.2-1.8), ambient level and the direction of every light, times the
                difficulty, fixed within an episode

Only what is drawn changes: colours, lights and the camera are edited in the renderer's scene after
MuJoCo has built it, never in the model, so state, physics and reward are those of the plain task.
The randomness is a generator of its own (seeded from the env's seed), so the task's sampling is
the plain env's too. At difficulty 0 nothing is applied: frames equal the plain pixel env's.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from PIL import Image

from envs.backgrounds import NoiseVideo, ShapesVideo

AXES = ("background", "color", "camera", "lighting")
BACKGROUNDS = {"noise": NoiseVideo, "shapes": ShapesVideo}
COLOR_GROUPS = ("robot", "objects", "scene")
MAX_COLOR_DELTA = 0.5  # RGB in [0, 1]; DCS's hardest colour setting is of this order
MAX_CAMERA_SHIFT = 0.06  # metres, each axis of the camera frame
MAX_CAMERA_TURN = 0.2  # radians about each axis of the camera frame
MAX_LIGHT_GAIN = 0.8  # diffuse intensity factor in [1 - 0.8, 1 + 0.8]
MAX_AMBIENT_SHIFT = 0.3
MAX_LIGHT_TURN = 0.6  # radians


@dataclass(frozen=True)
class _Walk:
    """A parameter vector in [-1, 1]^k: uniform at reset, a clipped Gaussian walk of ``step_std`` per step;
    its value at difficulty 1 is the vector times ``scale`` (one number per entry, in physical units)."""

    scale: tuple[float, ...]
    step_std: float

    @property
    def size(self) -> int:
        return len(self.scale)


_WALKS = {
    "color": _Walk((MAX_COLOR_DELTA,) * 3 * len(COLOR_GROUPS), 0.03),  # RGB offset of each group
    "camera": _Walk((MAX_CAMERA_SHIFT,) * 3 + (MAX_CAMERA_TURN,) * 3, 0.03),  # shift xyz, turn about 3 axes
    "lighting": _Walk((MAX_LIGHT_GAIN, MAX_AMBIENT_SHIFT, MAX_LIGHT_TURN, MAX_LIGHT_TURN), 0.0),
}


def check_options(axes=None, difficulty: float | None = None, background: str | None = None):
    """The checks every distractor option gets (the env's, and a config's before a run starts); ``None`` is the
    default (the background video at difficulty 1). Returns the axes in canonical order, the difficulty as a
    float and the background family."""
    axes = ("background",) if axes is None else axes
    difficulty = 1.0 if difficulty is None else difficulty
    background = "noise" if background is None else background
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {', '.join(BACKGROUNDS)}")
    return parse_axes(axes), float(difficulty), background


def parse_axes(axes) -> tuple[str, ...]:
    """``("background", "color")``, a list, or ``"background,color"`` -> a checked tuple in canonical order."""
    if isinstance(axes, str):
        axes = [a.strip() for a in axes.split(",") if a.strip()]
    axes = tuple(axes)
    unknown = [a for a in axes if a not in AXES]
    if unknown or not axes:
        raise ValueError(f"distraction axes must be a non-empty subset of {', '.join(AXES)}; got {axes!r}")
    return tuple(a for a in AXES if a in axes)


class Distractions:
    """The distractions of one env: drawn at ``reset``, advanced by ``step``, applied when rendering.

    Args:
        model: the task's MuJoCo model (read for body names, never written).
        axes: which axes vary (see the module docstring); None: the background alone.
        difficulty: in [0, 1]; 0 applies nothing; None: 1.
        background: the video family of the ``background`` axis, ``noise`` or ``shapes``; None: noise.
        height, width: size of the background video (the observation size).
        background_bodies: ids of the bodies the background replaces (and ``EMPTY``).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        axes,
        difficulty: float | None,
        background: str | None,
        height: int,
        width: int,
        background_bodies: np.ndarray,
    ):
        self.axes, self.difficulty, self.background = check_options(axes, difficulty, background)
        self.height, self.width = height, width
        self.background_bodies = background_bodies
        self._geom_group = _geom_groups(model, background_bodies)
        self._video = None
        self._params: dict[str, np.ndarray] = {}
        self._rng: np.random.Generator | None = None
        self.t = 0

    @property
    def active(self) -> bool:
        return self.difficulty > 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.t = 0
        if "background" in self.axes:
            self._video = BACKGROUNDS[self.background](self.height, self.width, rng)
        self._params = {axis: rng.uniform(-1, 1, walk.size) for axis, walk in _WALKS.items() if axis in self.axes}

    def step(self) -> None:
        self.t += 1
        for axis, unit in self._params.items():
            std = _WALKS[axis].step_std
            if std > 0:
                np.clip(unit + self._rng.normal(0, std, unit.shape), -1, 1, out=unit)

    # ------------------------------------------------------------ what is applied
    def background_frame(self, height: int, width: int) -> np.ndarray | None:
        """The background video's current frame (``None`` without the axis)."""
        if self._video is None or not self.active:
            return None
        frame = self._video.frame(self.t)
        if frame.shape[:2] != (height, width):
            frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
        return frame

    def composite(self, frame: np.ndarray, body_ids: np.ndarray, background: np.ndarray) -> np.ndarray:
        """Blend ``background`` over the pixels that show a background body, with weight = difficulty."""
        mask = np.isin(body_ids, self.background_bodies)
        if self.difficulty >= 1.0:
            frame[mask] = background[mask]
        else:
            mixed = (1 - self.difficulty) * frame[mask] + self.difficulty * background[mask].astype(np.float32)
            frame[mask] = np.round(mixed).astype(np.uint8)
        return frame

    def edits_scene(self) -> bool:
        return self.active and any(axis in self._params for axis in ("color", "camera", "lighting"))

    def edit_scene(self, scene: mujoco.MjvScene) -> None:
        """Colours, lights and camera of a scene MuJoCo has just built (``FastRenderer``'s scene hook)."""
        if "color" in self._params:
            self._edit_colors(scene)
        if "camera" in self._params:
            self._edit_camera(scene)
        if "lighting" in self._params:
            self._edit_lights(scene)

    def edit_camera(self, scene: mujoco.MjvScene) -> None:
        """Only the camera: what segmentation rendering (the background mask) needs."""
        if "camera" in self._params:
            self._edit_camera(scene)

    def params(self) -> dict[str, np.ndarray]:
        """The current value of each axis's parameters, in physical units (what a latent probe predicts).

        ``background``: mean RGB of the four quadrants of the background frame times the difficulty (12);
        ``color``: RGB offsets of robot, objects, scene (9); ``camera``: shift xyz (m) and turn about
        right/up/forward (rad) (6); ``lighting``: gain - 1, ambient shift, two turn angles (rad) (4).
        """
        out = {}
        if "background" in self.axes:
            frame = self._video.frame(self.t).astype(np.float32) / 255.0
            h, w = frame.shape[0] // 2, frame.shape[1] // 2
            quadrants = [frame[:h, :w], frame[:h, w:], frame[h:, :w], frame[h:, w:]]
            out["background"] = self.difficulty * np.concatenate([q.mean((0, 1)) for q in quadrants])
        for axis in self._params:
            out[axis] = self._value(axis)
        return {k: v.astype(np.float32) for k, v in out.items()}

    def _value(self, axis: str) -> np.ndarray:
        """An axis's parameters in physical units: its [-1, 1] vector times its scale and the difficulty."""
        return self.difficulty * np.asarray(_WALKS[axis].scale) * self._params[axis]

    def _edit_colors(self, scene: mujoco.MjvScene) -> None:
        offsets = self._value("color").reshape(len(COLOR_GROUPS), 3)
        for i in range(scene.ngeom):
            geom = scene.geoms[i]
            if geom.objtype != mujoco.mjtObj.mjOBJ_GEOM or geom.objid < 0:
                continue
            rgba = geom.rgba
            rgba[:3] = np.clip(rgba[:3] + offsets[self._geom_group[geom.objid]], 0.0, 1.0)

    def _edit_camera(self, scene: mujoco.MjvScene) -> None:
        value = self._value("camera")
        shift, turn = value[:3], value[3:]
        for cam in scene.camera:
            forward, up = np.array(cam.forward, dtype=np.float64), np.array(cam.up, dtype=np.float64)
            right = np.cross(forward, up)
            rotation = _rotation(right, turn[0]) @ _rotation(up, turn[1]) @ _rotation(forward, turn[2])
            cam.pos[:] = np.array(cam.pos) + shift[0] * right + shift[1] * up + shift[2] * forward
            cam.forward[:] = rotation @ forward
            cam.up[:] = rotation @ up

    def _edit_lights(self, scene: mujoco.MjvScene) -> None:
        gain_change, ambient_shift, turn_x, turn_y = self._value("lighting")
        gain = 1.0 + gain_change
        rotation = _rotation(np.array([1.0, 0, 0]), turn_x) @ _rotation(np.array([0, 1.0, 0]), turn_y)
        for i in range(scene.nlight):
            light = scene.lights[i]
            light.diffuse[:] = np.clip(np.array(light.diffuse) * gain, 0, 1)
            light.ambient[:] = np.clip(np.array(light.ambient) + ambient_shift, 0, 1)
            light.dir[:] = rotation @ np.array(light.dir)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit ``axis`` (Rodrigues)."""
    axis = axis / (np.linalg.norm(axis) + 1e-12)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _geom_groups(model: mujoco.MjModel, background_bodies: np.ndarray) -> np.ndarray:
    """Index into ``COLOR_GROUPS`` for every geom: under the robot's ``base`` body, a background body, or else."""
    robot_root = next((i for i in range(model.nbody) if model.body(i).name == "base"), None)
    group = np.full(model.nbody, COLOR_GROUPS.index("objects"), dtype=np.int64)
    for body in range(model.nbody):
        ancestor = body
        while ancestor > 0 and ancestor != robot_root:
            ancestor = model.body_parentid[ancestor]
        if robot_root is not None and ancestor == robot_root or model.body(body).name == "mocap":
            group[body] = COLOR_GROUPS.index("robot")
        elif body in background_bodies:
            group[body] = COLOR_GROUPS.index("scene")
    return group[model.geom_bodyid]
