"""A constructed task pair with a known answer, for CPA's tests and benchmarks: two tasks whose object
trajectories mirror each other's quality, the case that fools plain Gromov-Wasserstein."""

from __future__ import annotations

import numpy as np

from embodied.data.segments import Segments


def mirror_pair(rng, n=200, length=5, skew=(3, 4)):
    """Two Meta-World-shaped tasks whose object trajectories are a mirror image of each other's quality.

    Quality u in [0, 1] per segment; the object position moves along a line at ``u`` in the source
    and at ``1 - u`` in the target; quality is skewed low in the source and high in the target, so
    the position *distributions* coincide: plain GW's optimum maps position to position, which
    maps good source segments onto bad target ones. The arm, as in every task, moves calmly when
    the segment is good and flails when it is bad.
    """

    def task(quality, position):
        obs = np.zeros((n, length, 39), np.float32)
        obs[:, :, 4:18] = position[:, None, None] + 0.01 * rng.normal(size=(n, length, 14))
        flail = 1.0 - quality
        act = (
            rng.choice([-1.0, 1.0], size=(n, length, 4)) * flail[:, None, None] + 0.05 * rng.normal(size=(n, length, 4))
        ).astype(np.float32)
        rewards = np.repeat(quality[:, None], length, 1).astype(np.float32)
        return Segments(obs, act, rewards, np.zeros((n, length), bool), np.arange(n), np.zeros(n, int))

    q_src = rng.beta(*skew, size=n)
    q_tgt = rng.beta(*skew[::-1], size=n)
    return task(q_src, q_src), task(q_tgt, 1.0 - q_tgt)
