"""Create registered environments with errors a user can act on."""

from __future__ import annotations

import difflib

import gymnasium as gym

from embodied.errors import EmbodiedError


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` for our ids (and any other registered id), turning failures into one clear line."""
    import envs  # noqa: F401  (registers the embodied/* ids)

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `embodied envs` to list them"
        raise EmbodiedError(f"unknown environment id {env_id!r}{hint}")
    try:
        return gym.make(env_id, **kwargs)
    except (TypeError, ValueError) as err:
        raise EmbodiedError(f"cannot create {env_id} with {kwargs}: {err}") from err
