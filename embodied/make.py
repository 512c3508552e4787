"""Create registered environments with errors a user can act on."""

from __future__ import annotations

import difflib

import gymnasium as gym

from embodied.errors import EmbodiedError


TASK_FIELDS = ("task", "source_task", "target_task")  # config fields naming a Meta-World task: embodied/<task>


def close_tasks(name: str, cutoff: float = 0.6) -> list[str]:
    """Our ids closest to ``name`` (given with or without ``embodied/``), without the prefix: what a typo meant."""
    from envs.registry import registered_ids

    tasks = [i.removeprefix("embodied/") for i in registered_ids()]
    return difflib.get_close_matches(name.removeprefix("embodied/"), tasks, n=3, cutoff=cutoff)


def suggest(env_id: str) -> str:
    """A hint for an unknown id: our own ids first (``reach-v3`` means ``embodied/reach-v3``, not Reacher)."""
    if not env_id.startswith("embodied/") and f"embodied/{env_id}" in gym.registry:
        return f"; did you mean embodied/{env_id}?"
    close = [f"embodied/{t}" for t in close_tasks(env_id)] or difflib.get_close_matches(env_id, list(gym.registry), n=3)
    return f"; did you mean {', '.join(close)}?" if close else "; run `embodied envs` to list them"


def task_name(value: str, option: str = "--task") -> str:
    """A task option's value as the agents use it (``reach-v3``), accepting the id ``embodied envs`` prints
    (``embodied/reach-v3``); an unknown task is one clear error, before any run directory exists."""
    import envs  # noqa: F401

    name = value[len("embodied/") :] if value.startswith("embodied/") else value
    if f"embodied/{name}" not in gym.registry:
        close = close_tasks(name)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else "; `embodied envs` lists them (a task is an id without its embodied/ prefix)"
        )
        raise EmbodiedError(f"{option} {value!r}: no such task{hint}")
    return name


def check_state_task(task: str, option: str, agent: str) -> None:
    """``ValueError`` where ``task`` (a registered name) observes pixels: ``agent`` learns from state vectors, and a
    pixel id failed deep in its networks or segments after the run directory was made."""
    import envs  # noqa: F401

    kwargs = gym.spec(f"embodied/{task}").kwargs if f"embodied/{task}" in gym.registry else {}
    if kwargs.get("obs_type", "state") != "state":
        raise ValueError(
            f"{option} {task}: {agent} learns from state observations and {task}'s are {kwargs['obs_type']}; "
            f"use {kwargs['task']}"
        )


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` for our ids (and any other registered id), turning failures into one clear line."""
    import envs  # noqa: F401  (registers the embodied/* ids)

    if env_id not in gym.registry:
        raise EmbodiedError(f"unknown environment id {env_id!r}{suggest(env_id)}")
    try:
        return gym.make(env_id, **kwargs)
    except (TypeError, ValueError) as err:
        raise EmbodiedError(f"cannot create {env_id} with {kwargs}: {err}") from err
