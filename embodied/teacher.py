"""A scripted preference teacher (B-Pref, Lee et al. 2021), shared by PEARL and PARL.

The preferred segment is the one with the larger true (discounted) return. Knobs model an
imperfect human: ``gamma < 1`` is myopic (later steps weigh more), ``equal_threshold`` calls
near-ties equal (label 0.5), ``flip_prob`` flips the answer at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Preferences:
    """Labelled pairs of segments: ``label[q]`` is P(segment ``first[q]`` is preferred to ``second[q]``)."""

    first: np.ndarray  # (Q,) int
    second: np.ndarray  # (Q,) int
    label: np.ndarray  # (Q,) float in [0, 1]

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, index) -> "Preferences":
        return Preferences(self.first[index], self.second[index], self.label[index])


def sample_pairs(num_segments: int, num_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_queries`` uniformly random pairs of distinct segment indices."""
    if num_segments < 2:
        raise ValueError(f"need at least 2 segments to form pairs, got {num_segments}")
    if num_queries <= 0:
        raise ValueError(f"number of queries must be positive, got {num_queries}")
    first = rng.integers(0, num_segments, size=num_queries)
    second = (first + rng.integers(1, num_segments, size=num_queries)) % num_segments
    return first, second


@dataclass
class ScriptedTeacher:
    gamma: float = 1.0  # myopia: weight gamma^(L-1-t) on step t
    equal_threshold: float = 0.0  # |return difference| at or below this -> 0.5
    flip_prob: float = 0.0  # probability of answering wrongly

    def __post_init__(self):
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.equal_threshold < 0:
            raise ValueError(f"equal_threshold must be >= 0, got {self.equal_threshold}")

    def returns(self, rewards: np.ndarray) -> np.ndarray:
        """Discounted segment returns, ``(N, L) -> (N,)``."""
        length = rewards.shape[1]
        weights = self.gamma ** np.arange(length - 1, -1, -1)
        return rewards @ weights

    def label(
        self, rewards: np.ndarray, first: np.ndarray, second: np.ndarray, rng: np.random.Generator | None = None
    ) -> Preferences:
        """Labels for the pairs ``(first[q], second[q])`` of segments with true rewards ``(N, L)``."""
        if np.any(~np.isfinite(rewards)):
            raise ValueError("segment rewards contain NaN or inf")
        ret = self.returns(rewards)
        diff = ret[first] - ret[second]
        label = (diff > 0).astype(np.float64)
        if self.flip_prob > 0:
            rng = rng or np.random.default_rng()
            flip = rng.random(len(label)) < self.flip_prob
            label[flip] = 1.0 - label[flip]
        label[np.abs(diff) <= self.equal_threshold] = 0.5
        return Preferences(np.asarray(first), np.asarray(second), label)


def check_teacher_options(config) -> None:
    """A config's ``teacher_gamma``, ``teacher_equal_threshold`` and ``teacher_flip_prob`` checked as the teacher
    will check them, but before a run starts and named as the options are."""
    try:
        ScriptedTeacher(config.teacher_gamma, config.teacher_equal_threshold, config.teacher_flip_prob)
    except ValueError as err:
        raise ValueError(f"teacher_{err}") from None
