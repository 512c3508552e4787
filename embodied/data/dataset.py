"""Trajectory datasets on disk: HDF5 laid out like Minari's format.

Why this format: Minari is the Farama standard for offline RL data and its files are plain HDF5
(one group ``episode_<id>`` per episode holding ``observations``, ``actions``, ``rewards``,
``terminations``, ``truncations`` and an ``infos`` group). HDF5 reads one episode without
loading the rest (lazy), is readable from any language, and is not a pickle (loading it cannot
run code). We write one self-contained file with the dataset metadata as root attributes.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import time
from pathlib import Path
from typing import Iterator, Sequence

import gymnasium as gym
import h5py
import numpy as np

from embodied.atomic import atomic_path
from embodied.data.episode import Episode, validate_episodes
from embodied.data.minari_format import is_minari_dir, minari_data_dir, read_minari_header
from embodied.errors import EmbodiedError, one_line
from embodied.safe_io import parse_json

FORMAT = "embodied-minari-hdf5"
FORMAT_VERSION = 1


def space_to_json(space: gym.Space) -> dict:
    """A JSON description of a Box or Dict space (as Minari serialises them; bounds the same everywhere, as an
    image's 0 and 255, as one number, which ``Box`` and the reader broadcast)."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "dtype": str(space.dtype),
            "shape": list(space.shape),
            "low": bound_to_json(space.low),
            "high": bound_to_json(space.high),
        }
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_json(v) for k, v in space.spaces.items()}}
    raise TypeError(f"cannot serialise space of type {type(space).__name__}")


def bound_to_json(values: np.ndarray) -> float | int | list:
    values = np.asarray(values)
    if values.size and np.all(values == values.flat[0]):
        return values.flat[0].item()
    return values.tolist()


MAX_HEADER_TEXT = 60_000  # bytes of one text attribute: HDF5 keeps it in the object header, which holds 64 KiB


def write_dataset(
    path: str | os.PathLike,
    episodes: Sequence[Episode],
    env_id: str,
    observation_space: gym.Space,
    action_space: gym.Space,
    metadata: dict | None = None,
) -> Path:
    """Write ``episodes`` to ``path`` atomically (a crash leaves no partial file).

    The file is built in memory and then written with plain writes: libhdf5 met a full disk with an error at every
    later call and at garbage collection (dozens of tracebacks, a segfault, the temp file left behind); a plain
    write fails once, with the ``OSError``, and ``atomic_path`` removes the temp file."""
    validate_episodes(episodes)
    image = io.BytesIO()
    with atomic_path(path) as tmp:
        with h5py.File(image, "w") as f:
            # strings as fixed-length bytes, kept in the object header: a variable-length string lives in
            # HDF5's global heap, and a damaged heap made libhdf5 loop forever reading it (found by fuzzing)
            def text(value: str) -> np.bytes_:
                data = value.encode("utf-8")
                if len(data) > MAX_HEADER_TEXT:  # h5py's OSError would say only "message is too large"
                    raise EmbodiedError(
                        f"a {len(data)}-byte description is more than the single-file format's header holds "
                        f"({MAX_HEADER_TEXT}); write a Minari folder instead (a path without .hdf5)"
                    )
                return np.bytes_(data)

            f.attrs["format"] = text(FORMAT)
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["env_id"] = text(env_id)
            f.attrs["total_episodes"] = len(episodes)
            f.attrs["total_steps"] = int(sum(len(e) for e in episodes))
            f.attrs["observation_space"] = text(json.dumps(space_to_json(observation_space)))
            f.attrs["action_space"] = text(json.dumps(space_to_json(action_space)))
            f.attrs["metadata"] = text(json.dumps(metadata or {}))
            for i, episode in enumerate(episodes):
                _write_episode(f.create_group(f"episode_{i}"), i, episode)
        with open(tmp, "wb") as out:
            out.write(image.getbuffer())
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


MAX_STEPS = 100_000_000  # steps a dataset may declare
MAX_ARRAY_BYTES = 2 * 1024**3  # one array read from disk
MAX_EPISODE_BYTES = 2 * 1024**3  # all arrays of one episode together (checked before any is read)
MAX_DATASET_BYTES = 8 * 1024**3  # all episodes that one load() reads into memory
MAX_INFLATION = 1100  # declared bytes per stored byte: deflate unpacks at most ~1032:1, so more is unwritten chunks


def declared_shapes(space: dict, what: str):
    """Per-step shape of a serialised Box space, or a dict of them for a Dict space."""
    if not isinstance(space, dict):
        raise ValueError(f"{what} space is not a JSON object")
    if space.get("type") == "Box":
        shape = space.get("shape")
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and 0 < d <= 1_000_000 for d in shape)
            or len(shape) > 4
        ):
            raise ValueError(f"{what} space has an invalid shape {shape!r}")
        return tuple(shape)
    if space.get("type") == "Dict" and isinstance(space.get("subspaces"), dict):
        return {k: declared_shapes(v, what) for k, v in space["subspaces"].items()}
    raise ValueError(f"{what} space has an unsupported type {space.get('type')!r}")


def box_bounds(space: dict, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` of a serialised Box space, or None where it declares none usable (then nothing is checked)."""
    if not isinstance(shape, tuple):
        return None
    try:
        low, high = (np.asarray(space[k], dtype=np.float64) for k in ("low", "high"))
    except (KeyError, TypeError, ValueError):
        return None
    if low.shape not in ((), shape) or high.shape not in ((), shape) or np.any(low > high):
        return None
    return low, high


def checked(group: h5py.Group, name: str, length: int | None, per_step: tuple | None):
    """``group[name]`` after refusing links to other files, external storage, virtual datasets,
    non-numeric types and shapes other than ``(length, *per_step)``; nothing is read here. Where ``length`` is
    given an array must be there; otherwise a group may be (an episode, its dict observations, its infos)."""
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{group.name!r} is a {type(group).__name__}, not a group")
    link = group.get(name, getlink=True)
    if link is None:
        raise KeyError(f"{name!r} is missing")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{name!r} is a link ({type(link).__name__}); links are refused")
    node = group[name]
    if isinstance(node, h5py.Group):
        if length is not None:
            raise ValueError(f"{name!r} is a group, not an array")
        return node
    if not isinstance(node, h5py.Dataset):  # e.g. a named datatype
        raise ValueError(f"{name!r} is a {type(node).__name__}, not an array")
    if node.is_virtual or node.external:
        raise ValueError(f"{name!r} uses external or virtual storage, which is refused")
    if node.dtype.kind not in "biuf":
        raise ValueError(f"{name!r} has non-numeric dtype {node.dtype}")
    if length is not None and (len(node.shape) == 0 or node.shape[0] != length):
        raise ValueError(f"{name!r} has shape {node.shape}, expected {length} rows")
    if per_step is not None and tuple(node.shape[1:]) != tuple(per_step):
        raise ValueError(f"{name!r} has shape {node.shape}, expected (T, *{tuple(per_step)})")
    declared = node.size * node.dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise ValueError(f"{name!r} would need {declared} bytes")
    stored = node.id.get_storage_size()
    if declared > MAX_INFLATION * stored + (1 << 16):  # HDF5 hands out fill values for chunks never written
        raise ValueError(
            f"{name!r} declares {declared} bytes but stores {stored}, more than compression can unpack "
            f"({MAX_INFLATION}:1): chunks never written"
        )
    return node


ATTRIBUTE_SECONDS = 10.0  # reading variable-length string attributes, in a child process


def read_attributes(obj: h5py.HLObject, path: Path) -> dict:
    """``obj``'s attributes. Fixed-size ones are read here; variable-length strings (older files of ours,
    other writers) live in HDF5's global heap, where a damaged file made libhdf5 loop forever, so they are
    read in a forked child that is killed after ``ATTRIBUTE_SECONDS``: a damaged file is one error."""
    plain, variable = {}, []
    for name in obj.attrs:
        dtype = obj.attrs.get_id(name).dtype  # the attribute's metadata only
        string = h5py.check_string_dtype(dtype)
        if dtype.kind == "O" or (string is not None and string.length is None):
            variable.append(name)
        else:
            plain[name] = obj.attrs[name]
    if not variable:
        return plain
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reopen the file, read the strings, send them back as text
        try:
            os.close(read_fd)
            with h5py.File(path, "r") as f:
                values = {k: str(f[obj.name].attrs[k]) for k in variable}
            data = memoryview(json.dumps(values).encode())
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks, deadline, finished = [], time.monotonic() + ATTRIBUTE_SECONDS, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:
            finished = True
            break
        chunks.append(chunk)
    os.close(read_fd)
    if not finished:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if not finished:
        raise ValueError(f"reading its string attributes did not finish within {ATTRIBUTE_SECONDS:.0f} s (damaged)")
    values = json.loads(b"".join(chunks) or b"{}")
    if set(values) != set(variable):
        raise ValueError("its string attributes could not be read (damaged)")
    return {**plain, **values}


def attr_text(value) -> str:
    """An HDF5 string attribute as text (h5py gives ``str`` or ``bytes``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"expected a string attribute, got {type(value).__name__}")
    return value


class Dataset:
    """A dataset file, read lazily: ``len(ds)``, ``ds[i]`` -> Episode, iteration, ``ds.load()``.

    Raises ``EmbodiedError`` when the file is missing, not HDF5, not in our format, of another
    version, or (with ``env_id``) recorded on a different environment.
    """

    def __init__(self, path: str | os.PathLike, env_id: str | None = None):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise EmbodiedError(f"dataset not found: {self.path}")
        self._minari = None
        self.bytes_read = 0  # declared bytes of the episodes read so far (capped by MAX_DATASET_BYTES)
        if self.path.is_dir():
            if not is_minari_dir(self.path):
                raise EmbodiedError(f"{self.path} is a folder but not a Minari dataset (no data/metadata.json)")
            self._minari = read_minari_header(self.path)
        data_file = minari_data_dir(self.path) / "main_data.hdf5" if self._minari else self.path
        try:
            self._file = h5py.File(data_file, "r")
        except OSError as err:
            raise EmbodiedError(
                f"{self.path} is not a readable HDF5 dataset (corrupt or truncated?): {one_line(err)}"
            ) from None
        try:
            self._read_header(env_id)
        except EmbodiedError:
            self.close()
            raise
        except (KeyError, TypeError, ValueError, OSError, OverflowError, RuntimeError) as err:  # ill-typed, corrupt
            self.close()
            raise EmbodiedError(f"{self.path} has a malformed header ({type(err).__name__}: {one_line(err)})") from None

    def _read_header(self, env_id: str | None) -> None:
        if self._minari is None:
            attrs = read_attributes(self._file, Path(self._file.filename))
        else:
            attrs = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in self._minari.items()},
            }
        attrs = {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in attrs.items()}
        if attrs.get("format") != FORMAT:
            raise EmbodiedError(f"{self.path} is not an embodied dataset (format attribute {attrs.get('format')!r})")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise EmbodiedError(
                f"{self.path} has format version {attrs.get('format_version')}, expected {FORMAT_VERSION}"
            )
        self.env_id: str = str(attrs["env_id"])
        if env_id is not None and env_id != self.env_id:
            raise EmbodiedError(f"{self.path} was recorded on {self.env_id!r}, not {env_id!r}")
        self.metadata: dict = parse_json(attr_text(attrs["metadata"]), f"{self.path} metadata")
        self.observation_space: dict = parse_json(
            attr_text(attrs["observation_space"]), f"{self.path} observation space"
        )
        self.action_space: dict = parse_json(attr_text(attrs["action_space"]), f"{self.path} action space")
        self.total_steps = int(attrs["total_steps"])
        self._n = int(attrs["total_episodes"])
        groups = len(self._file)
        if not 0 < self._n <= groups:  # checked before anything is allocated or iterated
            raise EmbodiedError(f"{self.path} declares {self._n} episodes but holds {groups} groups")
        if not 0 <= self.total_steps <= MAX_STEPS:
            raise EmbodiedError(f"{self.path} declares {self.total_steps} steps (at most {MAX_STEPS} are accepted)")
        self._obs_shape = declared_shapes(self.observation_space, "observation")
        self._act_shape = declared_shapes(self.action_space, "action")
        self._act_bounds = box_bounds(self.action_space, self._act_shape)
        missing = [i for i in range(self._n) if f"episode_{i}" not in self._file]
        if missing:
            raise EmbodiedError(f"{self.path} is corrupt: episodes {missing[:5]} are missing")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Episode:
        if not -self._n <= index < self._n:
            raise IndexError(f"episode {index} out of range (dataset has {self._n})")
        name = f"episode_{index % self._n}"
        try:
            group = self._file[name]
            steps = checked(self._file, name, None, None).attrs["total_steps"]
            steps = int(steps)
            if not 0 < steps <= self.total_steps:
                raise ValueError(f"declares {steps} steps")
            obs = checked(group, "observations", None, None)
            if isinstance(obs, h5py.Group):
                if not isinstance(self._obs_shape, dict) or set(obs) != set(self._obs_shape):
                    raise ValueError("observation keys differ from the declared observation space")
                obs_nodes = {k: checked(obs, k, steps + 1, self._obs_shape[k]) for k in obs}
            else:
                obs_nodes = checked(group, "observations", steps + 1, self._obs_shape)
            infos_group = checked(group, "infos", None, None)
            if not isinstance(infos_group, h5py.Group) or len(infos_group) > 64:
                raise ValueError("infos is not a small group")
            info_rows, skip = (steps + 1, 1) if self._minari else (steps, 0)  # Minari keeps the reset's info first
            nodes = {
                "actions": checked(group, "actions", steps, self._act_shape),
                "rewards": checked(group, "rewards", steps, ()),
                "terminations": checked(group, "terminations", steps, ()),
                "truncations": checked(group, "truncations", steps, ()),
            }
            info_nodes = {k: checked(infos_group, k, info_rows, None) for k in infos_group}
            every = [
                *(obs_nodes.values() if isinstance(obs_nodes, dict) else [obs_nodes]),
                *nodes.values(),
                *info_nodes.values(),
            ]
            declared = sum(int(n.size) * n.dtype.itemsize for n in every)  # a few-KB file may declare gigabytes
            if declared > MAX_EPISODE_BYTES:
                raise ValueError(f"its arrays would need {declared} bytes together (at most {MAX_EPISODE_BYTES})")
            self.bytes_read += declared
            if self.bytes_read > MAX_DATASET_BYTES:
                raise ValueError(
                    f"reading it would bring the dataset to {self.bytes_read} bytes in memory "
                    f"(at most {MAX_DATASET_BYTES})"
                )
            observations = {k: n[()] for k, n in obs_nodes.items()} if isinstance(obs_nodes, dict) else obs_nodes[()]
            episode = Episode(
                observations=observations,
                actions=nodes["actions"][()],
                rewards=nodes["rewards"][()],
                terminations=nodes["terminations"][()],
                truncations=nodes["truncations"][()],
                infos={k: n[()][skip:] for k, n in info_nodes.items()},
                seed=None
                if group.attrs.get("seed") is None or int(group.attrs["seed"]) < 0
                else int(group.attrs["seed"]),
            )
            episode.validate()
            if self._act_bounds is not None:  # collect clips; an action outside the space was not recorded by a policy
                low, high = self._act_bounds
                if np.any(episode.actions < low - 1e-6) or np.any(episode.actions > high + 1e-6):
                    raise ValueError(f"actions lie outside the declared action space [{low.min()}, {high.max()}]")
        except (KeyError, OSError, ValueError, TypeError, OverflowError, MemoryError, RuntimeError) as err:
            # RuntimeError: HDF5's own errors on a damaged file (bad symbol table, address overflow)
            raise EmbodiedError(f"{self.path}: episode {index} is corrupt or unsafe: {one_line(err)}") from None
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
