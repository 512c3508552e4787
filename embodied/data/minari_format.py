"""Datasets as real Minari datasets: written through Minari's own storage API, read with our checks.

A Minari dataset is a folder: ``<dir>/data/main_data.hdf5`` (one group per episode) and
``<dir>/data/metadata.json`` (spaces, env spec, totals). ``write_minari`` builds it with
``minari.dataset.minari_storage.MinariStorage`` (so ``minari.MinariDataset(<dir>/data)`` and
``minari.load_dataset`` open it) in a temporary folder and renames it into place. Reading goes
through ``embodied.data.Dataset``, which validates every attribute, shape and link before it
allocates anything (Minari's own loader does not).

Minari's infos have T + 1 rows (the reset's info first); ``Episode.infos`` have T (the steps'),
so the reset row is added on writing (zeros) and dropped on reading.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import gymnasium as gym
import numpy as np

from embodied.atomic import current_umask, ensure_writable_dir, free_bytes
from embodied.data.episode import Episode, validate_episodes
from embodied.errors import EmbodiedError
from embodied.safe_io import load_json


def is_minari_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "data" / "metadata.json").is_file() or (path / "metadata.json").is_file()


def minari_data_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``main_data.hdf5`` and ``metadata.json`` (the dataset folder or its ``data/``)."""
    path = Path(path)
    return path / "data" if (path / "data" / "metadata.json").is_file() else path


DATASET_ID = re.compile(r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*/[A-Za-z0-9_.:]+(-[A-Za-z0-9_.:]+)*-v\d+$")


def default_dataset_id(env_id: str, policy: str) -> str:
    """``embodied/<task>/<policy>-v0``: Minari's namespace/name-vN, from the env and what collected it."""
    task = env_id.split("/", 1)[-1]
    kind = policy if policy in ("scripted", "random") else "policy"
    name = {"scripted": "expert"}.get(kind, kind)
    return f"embodied/{re.sub(r'[^A-Za-z0-9_.:-]+', '-', task)}/{name}-v0"


def check_dataset_id(dataset_id: str) -> str:
    if not DATASET_ID.match(dataset_id):
        raise EmbodiedError(
            f"dataset id {dataset_id!r} is not Minari's namespace/name-vN (e.g. embodied/reach-v3/expert-v0)"
        )
    return dataset_id


def dataset_path(dataset_id: str, root: str | os.PathLike | None = None) -> Path:
    """Where ``minari.load_dataset(dataset_id)`` looks: ROOT/<namespace>/<name>-vN, ROOT from
    ``MINARI_DATASETS_PATH`` (else ``~/.minari/datasets``) when not given."""
    check_dataset_id(dataset_id)
    if root is None:
        root = os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets"
    return Path(root).expanduser() / dataset_id


def write_minari(
    path: str | os.PathLike,
    episodes: Sequence[Episode],
    env: gym.Env,
    metadata: dict | None = None,
    dataset_id: str | None = None,
) -> Path:
    """Write ``episodes`` recorded on ``env`` as a Minari dataset folder at ``path`` (replacing one there), with the
    metadata Minari's tools read (id, requirements for ``recover_environment()``, author, description)."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    validate_episodes(episodes)
    target = Path(path).expanduser()
    if target.exists() and not is_minari_dir(target) and (target.is_file() or any(target.iterdir())):
        raise EmbodiedError(f"{target} exists and is not a Minari dataset; refusing to replace it")
    parent = ensure_writable_dir(target)
    check_space_for(episodes, parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        # jpeg_encoding=False: Minari's default stores image observations as JPEG (lossy: a mean error of
        # 5.9/255 on our frames, and object arrays that no reader but Minari's own decodes)
        storage = MinariStorage.new(
            tmp / "data",
            observation_space=env.observation_space,
            action_space=env.action_space,
            env_spec=env.spec,
            jpeg_encoding=False,
        )
        env_id = env.spec.id if env.spec else "embodied/env"
        policy = str((metadata or {}).get("policy", "unknown"))
        storage.update_metadata(
            {
                "dataset_id": check_dataset_id(dataset_id or default_dataset_id(env_id, policy)),
                "minari_version": minari.__version__,
                "algorithm_name": policy,
                "author": {"embodied collect"},
                "requirements": ["embodied", "metaworld==3.1.1", "mujoco>=3.3"],
                "description": json.dumps(metadata or {}),
            }
        )
        buffers = []
        for i, e in enumerate(episodes):
            infos = {
                k: np.concatenate([np.zeros((1, *np.shape(v)[1:]), np.asarray(v).dtype), np.asarray(v)])
                for k, v in e.infos.items()
            }
            observations = (
                {k: np.asarray(v) for k, v in e.observations.items()}
                if isinstance(e.observations, dict)
                else list(e.observations)
            )  # a Dict space is stored as a group of arrays
            buffers.append(
                EpisodeBuffer(
                    id=i,
                    seed=e.seed,
                    observations=observations,
                    actions=list(np.asarray(e.actions, np.float32)),
                    rewards=list(np.asarray(e.rewards, np.float64)),
                    terminations=list(np.asarray(e.terminations, bool)),
                    truncations=list(np.asarray(e.truncations, bool)),
                    infos=infos,
                )
            )
        storage.update_episodes(buffers)
        compress_hdf5(tmp / "data" / "main_data.hdf5")
        mode = 0o777 & ~current_umask()
        os.chmod(tmp, mode)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=parent))
            os.replace(target, old / "d")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_space_for(episodes: Sequence[Episode], directory: Path) -> None:
    """Refuse to start a Minari write that its file system cannot hold: Minari writes the arrays raw (1.4x their
    size), then ``compress_hdf5`` writes a compressed copy beside them. libhdf5 meets a full disk with an error at
    every later call and at garbage collection, and crashed the process (a segfault that left the temp folder)."""
    raw = sum(
        sum(
            np.asarray(v).nbytes
            for v in (e.observations.values() if isinstance(e.observations, dict) else [e.observations])
        )
        + sum(np.asarray(a).nbytes for a in (e.actions, e.rewards, e.terminations, e.truncations))
        for e in episodes
    )
    need = 2 * int(1.4 * raw) + (1 << 20)
    free = free_bytes(directory)
    if need > free:
        raise EmbodiedError(
            f"writing {len(episodes)} episodes as a Minari dataset in {directory} needs about {need / 2**20:.1f} MiB "
            f"there, and its file system has {free / 2**20:.1f} MiB free"
        )


def compress_hdf5(path: Path, min_bytes: int = 1 << 16) -> None:
    """Rewrite an HDF5 file with gzip (level 4) on every dataset of at least ``min_bytes``: Minari 0.5 writes
    raw arrays (with JPEG off), 1.4x the frames' own size; HDF5 readers, Minari's included, decompress
    transparently. Groups, attributes, dtypes and shapes are kept as they are."""
    import h5py

    out = path.with_name(path.name + ".gz.tmp")

    def copy(src, dst) -> None:
        dst.attrs.update(dict(src.attrs))
        for name, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, dst.create_group(name))
            else:
                big = item.size * item.dtype.itemsize >= min_bytes and item.shape
                opts = dict(compression="gzip", compression_opts=4, chunks=True) if big else {}
                if item.maxshape != item.shape and not big:
                    opts = dict(chunks=item.chunks, maxshape=item.maxshape)
                ds = dst.create_dataset(name, data=item[()], dtype=item.dtype, **opts)
                ds.attrs.update(dict(item.attrs))

    with h5py.File(path, "r") as src, h5py.File(out, "w") as dst:
        copy(src, dst)
    os.replace(out, path)


def read_minari_header(path: Path) -> dict:
    """Minari's ``metadata.json``, with types checked: env id, spaces (our JSON form), totals."""
    data_dir = minari_data_dir(path)
    try:
        meta = load_json(data_dir / "metadata.json", what="Minari metadata")
        spec = json.loads(meta["env_spec"]) if isinstance(meta.get("env_spec"), str) else meta.get("env_spec") or {}
        header = {
            "env_id": str(spec.get("id", "")),
            "observation_space": json.loads(meta["observation_space"]),
            "action_space": json.loads(meta["action_space"]),
            "total_episodes": int(meta["total_episodes"]),
            "total_steps": int(meta["total_steps"]),
            "metadata": json.loads(meta.get("description") or "{}")
            if str(meta.get("description", "")).startswith("{")
            else {},
        }
    except EmbodiedError as err:
        raise EmbodiedError(f"{path} is not a readable Minari dataset: {err}") from None
    except (OSError, KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as err:
        raise EmbodiedError(
            f"{path} is not a readable Minari dataset (metadata.json: {type(err).__name__}: {err})"
        ) from None
    if meta.get("data_format", "hdf5") != "hdf5":
        raise EmbodiedError(f"{path}: only Minari's hdf5 data format is supported, not {meta.get('data_format')!r}")
    return header
