"""Rollout videos: H.264 mp4 through imageio-ffmpeg, with captions and an optional grid."""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from embodied.atomic import atomic_path, disk_full
from embodied.errors import EmbodiedError
from embodied.policies import Policy, start_episode

_FONTS: dict[int, ImageFont.ImageFont] = {}


def _font(size: int):
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band at the top of ``frame`` ``(H, W, 3)`` uint8, shrunk to fit its width."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    width = frame.shape[1] - 4
    size = max(8, frame.shape[0] // 16)
    while size > 6 and draw.textlength(text, font=_font(size)) > width:
        size -= 1
    while len(text) > 1 and draw.textlength(text, font=_font(size)) > width:
        text = text[:-1]  # a frame too narrow even for the smallest font: cut, never overflow
    left, top, right, bottom = draw.textbbox((2, 1), text, font=_font(size))
    draw.rectangle([0, 0, frame.shape[1], bottom + 2], fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255), font=_font(size))
    return np.asarray(image)


def pad_to_16(frame: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` with black to multiples of 16 (H.264 macroblocks), so no encoder resizes it."""
    h, w = frame.shape[:2]
    ph, pw = -h % 16, -w % 16
    return np.pad(frame, ((0, ph), (0, pw), (0, 0))) if ph or pw else frame


def record_episode(
    env: gym.Env, policy: Policy, seed: int, max_steps: int | None = None, annotate: bool = True
) -> tuple[list[np.ndarray], float, bool]:
    """Frames of one episode (``env`` needs ``render_mode="rgb_array"``), its return and success."""
    obs, _ = env.reset(seed=seed)
    start_episode(policy)
    frames = [env.render()]
    total, success, t, done = 0.0, False, 0, False
    if annotate:
        frames[0] = caption(frames[0], "t=0")
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        t += 1
        total += float(reward)
        success = success or bool(info.get("success", False))
        done = terminated or truncated or (max_steps is not None and t >= max_steps)
        frame = env.render()
        if annotate:
            frame = caption(frame, f"t={t} r={reward:.2f} R={total:.0f}{' success' if success else ''}")
        frames.append(frame)
    return frames, total, success


def tile(episodes: Sequence[Sequence[np.ndarray]], columns: int | None = None) -> list[np.ndarray]:
    """Lay several episodes out in a grid; shorter ones hold their last frame."""
    return list(tiles(episodes, columns))


def tiles(episodes: Sequence[Sequence[np.ndarray]], columns: int | None = None) -> Iterator[np.ndarray]:
    """``tile``'s frames one at a time (the grid video is not held twice)."""
    n = len(episodes)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    length = max(len(e) for e in episodes)
    h, w, c = episodes[0][0].shape
    for t in range(length):
        canvas = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
        for i, ep in enumerate(episodes):
            r, col = divmod(i, columns)
            canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = ep[min(t, len(ep) - 1)]
        yield canvas


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = 30) -> Path:
    """Encode ``frames`` ``(H, W, 3)`` uint8 as H.264 (yuv420p, plays everywhere), atomically; ``frames`` may be a
    generator, encoded as it yields (a long video is never held in memory)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to write")
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7, pixelformat="yuv420p", macro_block_size=16
        )
        try:
            for frame in itertools.chain([first], frames):
                writer.append_data(np.ascontiguousarray(pad_to_16(frame)))
            writer.close()
        except BaseException as err:
            with contextlib.suppress(Exception):  # ffmpeg may have died: closing fails again
                writer.close()
            if isinstance(err, OSError):  # imageio-ffmpeg reports any end of ffmpeg as a broken pipe
                if disk_full(tmp.parent):  # while the partial file still holds its space
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
                raise EmbodiedError(f"ffmpeg stopped before {path} was written (its messages are above)") from None
            raise
    return Path(path)
