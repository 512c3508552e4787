"""Episodes as the flat transition arrays offline-RL libraries take (d3rlpy's ``MDPDataset``, CORL, ...).

Minari 0.5 episodes hold T + 1 observations (the last one after the final step) and T actions;
d3rlpy's own ``get_minari`` shifts them by one step per episode after the first, pairing each
action with the wrong observation. Converting explicitly keeps ``(s_t, a_t, r_t)`` together:

    import d3rlpy
    from embodied.data import load_episodes, to_transitions
    arrays = to_transitions(load_episodes("~/.minari/datasets/embodied/reach-v3/expert-v0"))
    dataset = d3rlpy.dataset.MDPDataset(arrays["observations"], arrays["actions"], arrays["rewards"],
                                        arrays["terminals"], timeouts=arrays["timeouts"])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from embodied.data.episode import Episode


def to_transitions(episodes: Sequence[Episode]) -> dict[str, np.ndarray]:
    """Concatenated ``observations (N, ...)`` (s_t, the final observation of each episode dropped),
    ``actions (N, A)``, ``rewards (N,)``, ``terminals (N,)`` and ``timeouts (N,)`` (1 at the last step of
    an episode that was cut, not ended), plus ``next_observations (N, ...)`` (s_{t+1}); N = total steps."""
    if not episodes:
        raise ValueError("no episodes to convert")
    if any(isinstance(e.observations, dict) for e in episodes):
        raise ValueError("Dict observations: convert one key at a time (e.g. episode.observations['state'])")
    obs = np.concatenate([e.observations[:-1] for e in episodes])
    nxt = np.concatenate([e.observations[1:] for e in episodes])
    terminals = np.concatenate([np.asarray(e.terminations, np.float32) for e in episodes])
    timeouts = np.concatenate([np.asarray(e.truncations, np.float32) for e in episodes])
    for e, end in zip(episodes, np.cumsum([len(e.actions) for e in episodes]) - 1):
        if not (e.terminations[-1] or e.truncations[-1]):  # a cut-off episode: its last step is a timeout
            timeouts[end] = 1.0
    return {
        "observations": obs,
        "actions": np.concatenate([e.actions for e in episodes]),
        "rewards": np.concatenate([e.rewards for e in episodes]).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
        "next_observations": nxt,
    }
