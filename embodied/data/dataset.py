"""Trajectory datasets on disk: HDF5 laid out like Minari's format.

Why this format: Minari is the Farama standard for offline RL data and its files are plain HDF5
(one group ``episode_<id>`` per episode holding ``observations``, ``actions``, ``rewards``,
``terminations``, ``truncations`` and an ``infos`` group). HDF5 reads one episode without
loading the rest (lazy), is readable from any language, and is not a pickle (loading it cannot
run code). We write one self-contained file with the dataset metadata as root attributes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import gymnasium as gym
import h5py
import numpy as np

from embodied.atomic import atomic_path
from embodied.data.episode import Episode
from embodied.errors import EmbodiedError

FORMAT = "embodied-minari-hdf5"
FORMAT_VERSION = 1


def space_to_json(space: gym.Space) -> dict:
    """A JSON description of a Box or Dict space (as Minari serialises them)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                "low": np.asarray(space.low).tolist(), "high": np.asarray(space.high).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_json(v) for k, v in space.spaces.items()}}
    raise TypeError(f"cannot serialise space of type {type(space).__name__}")


def write_dataset(path: str | os.PathLike, episodes: Sequence[Episode], env_id: str,
                  observation_space: gym.Space, action_space: gym.Space, metadata: dict | None = None) -> Path:
    """Write ``episodes`` to ``path`` atomically (a crash leaves no partial file)."""
    if not episodes:
        raise EmbodiedError("refusing to write an empty dataset (0 episodes)")
    for i, episode in enumerate(episodes):
        try:
            episode.validate()
        except ValueError as err:
            raise EmbodiedError(f"episode {i} is malformed: {err}") from err
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["env_id"] = env_id
            f.attrs["total_episodes"] = len(episodes)
            f.attrs["total_steps"] = int(sum(len(e) for e in episodes))
            f.attrs["observation_space"] = json.dumps(space_to_json(observation_space))
            f.attrs["action_space"] = json.dumps(space_to_json(action_space))
            f.attrs["metadata"] = json.dumps(metadata or {})
            for i, episode in enumerate(episodes):
                _write_episode(f.create_group(f"episode_{i}"), i, episode)
    return Path(path)


def _write_episode(group: h5py.Group, index: int, episode: Episode) -> None:
    group.attrs["id"] = index
    group.attrs["total_steps"] = len(episode)
    group.attrs["seed"] = -1 if episode.seed is None else int(episode.seed)
    compression = dict(compression="gzip", compression_opts=4)
    if isinstance(episode.observations, dict):
        obs_group = group.create_group("observations")
        for key, value in episode.observations.items():
            obs_group.create_dataset(key, data=value, **compression)
    else:
        group.create_dataset("observations", data=episode.observations, **compression)
    group.create_dataset("actions", data=np.asarray(episode.actions, dtype=np.float32))
    group.create_dataset("rewards", data=np.asarray(episode.rewards, dtype=np.float32))
    group.create_dataset("terminations", data=np.asarray(episode.terminations, dtype=bool))
    group.create_dataset("truncations", data=np.asarray(episode.truncations, dtype=bool))
    infos = group.create_group("infos")
    for key, value in episode.infos.items():
        infos.create_dataset(key, data=np.asarray(value))


class Dataset:
    """A dataset file, read lazily: ``len(ds)``, ``ds[i]`` -> Episode, iteration, ``ds.load()``.

    Raises ``EmbodiedError`` when the file is missing, not HDF5, not in our format, of another
    version, or (with ``env_id``) recorded on a different environment.
    """

    def __init__(self, path: str | os.PathLike, env_id: str | None = None):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise EmbodiedError(f"dataset file not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise EmbodiedError(f"{self.path} is not a readable HDF5 dataset (corrupt or truncated?): {err}") from err
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            self.close()
            raise EmbodiedError(f"{self.path} is not an embodied dataset (format attribute {attrs.get('format')!r})")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            self.close()
            raise EmbodiedError(f"{self.path} has format version {attrs.get('format_version')}, expected {FORMAT_VERSION}")
        self.env_id: str = str(attrs["env_id"])
        if env_id is not None and env_id != self.env_id:
            self.close()
            raise EmbodiedError(f"{self.path} was recorded on {self.env_id!r}, not {env_id!r}")
        self.metadata: dict = json.loads(attrs["metadata"])
        self.observation_space: dict = json.loads(attrs["observation_space"])
        self.action_space: dict = json.loads(attrs["action_space"])
        self.total_steps = int(attrs["total_steps"])
        self._n = int(attrs["total_episodes"])
        missing = [i for i in range(self._n) if f"episode_{i}" not in self._file]
        if missing:
            self.close()
            raise EmbodiedError(f"{self.path} is corrupt: episodes {missing[:5]} are missing")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Episode:
        if not -self._n <= index < self._n:
            raise IndexError(f"episode {index} out of range (dataset has {self._n})")
        group = self._file[f"episode_{index % self._n}"]
        try:
            obs = group["observations"]
            observations = {k: v[()] for k, v in obs.items()} if isinstance(obs, h5py.Group) else obs[()]
            episode = Episode(
                observations=observations,
                actions=group["actions"][()],
                rewards=group["rewards"][()],
                terminations=group["terminations"][()],
                truncations=group["truncations"][()],
                infos={k: v[()] for k, v in group["infos"].items()},
                seed=None if group.attrs["seed"] < 0 else int(group.attrs["seed"]),
            )
            episode.validate()
        except (KeyError, OSError, ValueError) as err:
            raise EmbodiedError(f"{self.path}: episode {index} is corrupt: {err}") from err
        return episode

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(self._n))

    def load(self) -> list[Episode]:
        """Every episode, in memory."""
        return list(self)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_episodes(path: str | os.PathLike, env_id: str | None = None) -> list[Episode]:
    """Read a whole dataset file into memory."""
    with Dataset(path, env_id=env_id) as ds:
        return ds.load()
