"""Small Gymnasium wrappers used by the agents."""

from __future__ import annotations

import gymnasium as gym


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards (as Dreamer/RePo do: action repeat 2)."""

    def __init__(self, env: gym.Env, repeat: int):
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
