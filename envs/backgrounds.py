"""Procedural moving backgrounds for distractor environments.

Natural images have a power spectrum falling roughly as 1/f^2 (amplitude 1/f). A random-phase
field with that spectrum looks like clouds, foliage or water; drifting its phases and translating
it over time gives a natural-looking video. Generated from a seed, so nothing is downloaded and
every episode can get a new, reproducible background.
"""

from __future__ import annotations

import numpy as np


class NoiseVideo:
    """An endless seeded video of coloured 1/f noise: ``frame(t)`` -> ``(H, W, 3)`` uint8.

    Args:
        height, width: frame size in pixels.
        rng: source of randomness (the env's ``np_random``), drawn once at construction.
        alpha: spectral exponent of the amplitude (1.0 is natural-image-like; larger is smoother).
        speed: how fast the texture changes (phase drift in radians per step at the lowest frequency).
    """

    def __init__(self, height: int, width: int, rng: np.random.Generator, alpha: float = 1.2, speed: float = 0.15):
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.fftfreq(width)[None, :]
        freq = np.sqrt(fx**2 + fy**2)
        freq[0, 0] = np.inf
        amplitude = freq ** (-alpha)
        self._amplitude = np.stack([amplitude] * 3)  # three independent fields, mixed into colour below
        self._phase0 = rng.uniform(0, 2 * np.pi, size=(3, height, width))
        self._omega = rng.normal(0, speed, size=(3, height, width))
        velocity = rng.normal(0, 0.6, size=2)  # pixels per step: the whole texture drifts
        self._shift = 2 * np.pi * (fy * velocity[0] + fx * velocity[1])
        # mostly shared brightness with some colour: channels of natural images are correlated
        self._mix = 0.8 * np.ones((3, 3)) / np.sqrt(3) + 0.5 * rng.normal(0, 1, size=(3, 3))
        self._base = rng.uniform(60, 200, size=3)
        self._scale = 1.0
        self._scale = 55.0 / (self._fields(0).std() + 1e-8)

    def _fields(self, t: float) -> np.ndarray:
        phase = self._phase0 + t * (self._omega + self._shift)
        return np.fft.ifft2(self._amplitude * np.exp(1j * phase)).real

    def frame(self, t: int) -> np.ndarray:
        fields = self._fields(t) * self._scale  # (3, H, W)
        rgb = np.tensordot(self._mix, fields, axes=1) + self._base[:, None, None]
        return np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0)


class ShapesVideo:
    """Textured shapes drifting and bouncing over a plain ground: a background that is not noise-like.

    Each of ``count`` discs and rectangles has its own colour, size, stripe texture (angle, period) and
    velocity; positions bounce off the frame's edges (a triangle wave of time), so ``frame(t)`` is a
    function of ``t`` alone and frames are reproducible in any order.
    """

    def __init__(self, height: int, width: int, rng: np.random.Generator, count: int = 6, speed: float = 0.8):
        self.height, self.width = height, width
        self._ground = rng.uniform(40, 215, size=3)
        scale = min(height, width)
        self._radius = rng.uniform(0.08, 0.22, size=count) * scale
        self._is_disc = rng.random(count) < 0.5
        self._start = rng.uniform(0, 1, size=(count, 2)) * np.array([height, width])
        self._velocity = rng.normal(0, speed, size=(count, 2)) * scale / 64  # pixels per step at any frame size
        self._colors = rng.uniform(0, 255, size=(count, 2, 3))  # two colours per shape, alternating in stripes
        angle = rng.uniform(0, np.pi, size=count)
        self._stripe = np.stack([np.sin(angle), np.cos(angle)], 1) * 2 * np.pi / rng.uniform(3, 10, size=(count, 1))
        self._ys, self._xs = np.mgrid[0:height, 0:width].astype(np.float32)

    def _centers(self, t: float) -> np.ndarray:
        size = np.array([self.height, self.width], dtype=np.float64)
        travelled = np.mod(self._start + t * self._velocity, 2 * size)
        return np.where(travelled < size, travelled, 2 * size - travelled)  # bounce: reflect at the edges

    def frame(self, t: int) -> np.ndarray:
        rgb = np.empty((self.height, self.width, 3), dtype=np.float32)
        rgb[:] = self._ground
        for i, (cy, cx) in enumerate(self._centers(t)):
            dy, dx = self._ys - cy, self._xs - cx
            r = self._radius[i]
            inside = (dy**2 + dx**2 <= r**2) if self._is_disc[i] else (np.abs(dy) <= r) & (np.abs(dx) <= 0.7 * r)
            stripes = np.sin(dy * self._stripe[i, 0] + dx * self._stripe[i, 1]) > 0
            rgb[inside] = np.where(stripes[inside][:, None], self._colors[i, 0], self._colors[i, 1])
        return rgb.astype(np.uint8)
