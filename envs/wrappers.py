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
        # An env with an ``observe`` switch (MetaWorldEnv) skips rendering the observations this wrapper
        # drops; if the episode ends on such a step, that step's observation is rendered after all.
        inner = self._deferrable_env()
        total = 0.0
        for i in range(self.repeat):
            last = i == self.repeat - 1
            if inner is not None:
                inner.observe = last
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            finally:
                if inner is not None:
                    inner.observe = True
            total += float(reward)
            if terminated or truncated:
                if inner is not None and not last:
                    obs = inner.observation()
                break
        return obs, total, terminated, truncated, info

    def _deferrable_env(self):
        """The innermost env if it can skip observations and no wrapper between changes them, else None."""
        env = self.env
        while isinstance(env, gym.Wrapper):
            if isinstance(env, gym.ObservationWrapper):
                return None
            env = env.env
        return env if hasattr(env, "observe") and hasattr(env, "observation") else None
