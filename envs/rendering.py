"""Fast offscreen rendering of a MuJoCo scene for training observations.

Meta-World's default visual settings (4096 shadow map, 4x multisampling) cost ~160 ms a frame
on a CPU; with shadows, reflections, skybox and multisampling off a 64x64 frame costs a few ms.
Meta-World's cameras are mounted upside down, so every frame is flipped vertically.
"""

from __future__ import annotations

import atexit
import math
import os
import weakref

import mujoco
import numpy as np

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
MAX_FRAME_SIZE = 4096  # pixels a side: 100000 failed inside EGL (an incomplete framebuffer) or asked numpy for 28 GiB
EMPTY, SITE = -1, -2  # body_ids() at pixels that show no geom: nothing at all, or a site (marker)
_SLOW_FLAGS = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX)


def check_frame_size(**sides) -> None:
    """Refuse a frame side that is not a whole number of pixels in [1, MAX_FRAME_SIZE]: a float was truncated
    (``render_width=2.5`` drew 2 pixels), ``True`` read as 1, and a huge side failed inside EGL or numpy."""
    for name, value in sides.items():
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and int(value) == value and 0 < value <= MAX_FRAME_SIZE):
            raise ValueError(f"{name} must be an integer in [1, {MAX_FRAME_SIZE}], got {value!r}")


def check_camera(model: mujoco.MjModel, camera: str) -> None:
    """Refuse a camera the model does not have, naming those it has."""
    names = [model.camera(i).name for i in range(model.ncam)]
    if camera not in names:
        raise ValueError(f"unknown camera {camera!r}; choose one of {', '.join(names)}")


_LIVE: "weakref.WeakSet[FastRenderer]" = weakref.WeakSet()
_MADE_A_CONTEXT = False  # this process has made a GL context (closing it does not undo what EGL set up)
_FORKED_AFTER_RENDERING = False  # set in a child forked from a process that had made a context


def _after_fork_in_child() -> None:
    # A process forked after EGL (Mesa) made a context hangs in the next context it makes (its driver threads
    # are not copied), and the contexts it inherited belong to the parent: forget them, refuse new ones. It hangs
    # as well when the parent had closed every context before the fork: the display and driver state stay.
    global _FORKED_AFTER_RENDERING
    if _MADE_A_CONTEXT and os.environ.get("MUJOCO_GL", "egl") == "egl":
        _FORKED_AFTER_RENDERING = True
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all() -> None:
    # MuJoCo's EGL module terminates the display at exit; contexts freed after that raise noisy
    # errors. Registered after the first context exists, so it runs before MuJoCo's own handler.
    for renderer in list(_LIVE):
        renderer.close()


def state_without_renderers(obj) -> dict:
    """``obj.__dict__`` for pickling and ``copy.deepcopy``, each renderer replaced by None: a GL context cannot be
    copied, and an env makes its renderers again on the next frame it draws."""
    return {key: None if isinstance(value, FastRenderer) else value for key, value in obj.__dict__.items()}


def make_model_fast(model: mujoco.MjModel) -> None:
    """Turn off the costly render quality settings of ``model`` (in place)."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0


class FastRenderer:
    """RGB (and optionally per-pixel body ids) of one camera at a fixed size.

    ``rgb()`` returns ``(H, W, 3)`` uint8; ``body_ids()`` returns ``(H, W)`` int32: the body of the
    geom seen, ``SITE`` where a site (a marker such as the goal) is seen, ``EMPTY`` where nothing is.
    """

    def __init__(self, model: mujoco.MjModel, width: int, height: int, camera: str, flip: bool = True):
        check_camera(model, camera)
        check_frame_size(width=width, height=height)
        if _FORKED_AFTER_RENDERING:
            raise RuntimeError(
                "this process was forked from one that had already rendered with EGL, and a new EGL context would "
                "hang here; start worker processes with 'spawn' (gym.make_vec(..., vector_kwargs={'context': "
                "'spawn'}), multiprocessing.get_context('spawn'))"
            )
        make_model_fast(model)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.model = model
        self.camera = camera
        self.width, self.height = width, height
        self._flip = flip  # Meta-World's cameras are mounted upside down; scenes of ours are not
        global _MADE_A_CONTEXT
        _MADE_A_CONTEXT = True  # before the attempt: a context that failed half-made has touched EGL too
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        if not _LIVE:
            atexit.register(_close_all)
        _LIVE.add(self)

    def _update(self, data: mujoco.MjData, scene_hook=None) -> None:
        self._renderer.update_scene(data, camera=self.camera)
        for flag in _SLOW_FLAGS:
            self._renderer.scene.flags[flag] = False
        if scene_hook is not None:
            scene_hook(self._renderer.scene)

    def rgb(self, data: mujoco.MjData, scene_hook=None) -> np.ndarray:
        """The frame; ``scene_hook(scene)``, if given, edits what is drawn (colours, lights, camera) first."""
        self._update(data, scene_hook)
        frame = self._renderer.render()
        return frame[::-1].copy() if self._flip else frame

    def body_ids(self, data: mujoco.MjData, scene_hook=None) -> np.ndarray:
        """Body id seen at each pixel (``SITE`` for a site, ``EMPTY`` for nothing), from segmentation rendering."""
        self._renderer.enable_segmentation_rendering()
        try:
            self._update(data, scene_hook)
            seg = self._renderer.render()
            seg = seg[::-1] if self._flip else seg
        finally:
            self._renderer.disable_segmentation_rendering()
        geom = seg[..., 0]
        is_geom = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & (geom >= 0)
        bodies = np.full(geom.shape, EMPTY, dtype=np.int32)
        bodies[is_geom] = self.model.geom_bodyid[geom[is_geom]]
        bodies[seg[..., 1] == mujoco.mjtObj.mjOBJ_SITE] = SITE
        return bodies

    def close(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            except Exception:  # a context already torn down by the driver: nothing left to free
                pass
            self._renderer = None
