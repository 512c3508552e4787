"""Write files so that a crash never leaves a partial file behind: temp file + rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from embodied.errors import EmbodiedError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the parent directory of ``path`` and check it is writable, with a clear error.

    Only the directory is resolved, never ``path`` itself: a file that is a link (or a loop of links) is
    replaced by the rename, not followed to wherever it points."""
    parent = parent_dir(path)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmbodiedError(f"cannot create directory {parent}: {err.strerror}") from err
    probe_writable(parent)
    return parent


def check_writable_dir(path: str | os.PathLike) -> None:
    """Check, creating nothing, that ``path``'s parent directory can be made and written: its nearest existing
    ancestor is a writable directory. For checks before the work: a command refused later (an unknown env, a
    policy file that does not load) leaves no empty directory behind; the write itself makes the directory."""
    parent = parent_dir(path)
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise EmbodiedError(f"cannot create directory {parent}: {existing} is not a directory")
    probe_writable(existing)


def parent_dir(path: str | os.PathLike) -> Path:
    try:
        return Path(path).expanduser().absolute().parent.resolve()
    except (RuntimeError, OSError) as err:  # a loop of links among the parents
        raise EmbodiedError(f"cannot use the directory of {path}: {err}") from None


def probe_writable(directory: Path) -> None:
    """A real probe: ``os.access`` says yes to root on a read-only or pseudo file system (/proc)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise EmbodiedError(f"output directory {directory} is not writable: {err.strerror}") from None


# A write that failed for want of space or permission on the machine (one error line), not for a bug.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def free_bytes(directory: Path) -> int:
    """Bytes this user may still write on ``directory``'s file system (root may also use the blocks reserved
    for it)."""
    stat = os.statvfs(directory)
    return (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) * stat.f_frsize


def disk_full(directory: Path, margin: int = 1 << 20) -> bool:
    """Whether ``directory``'s file system has less than ``margin`` bytes left: for writers that report a full
    disk only as their own failure (ffmpeg)."""
    try:
        return free_bytes(directory) < margin
    except OSError:
        return False


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. The temporary
    name keeps the suffix, so writers that choose a format by extension (ffmpeg) still work.
    """
    target = Path(path).expanduser()
    made = missing_dirs(target.parent)
    try:
        parent = ensure_writable_dir(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=parent)
    except (OSError, EmbodiedError):
        remove_empty(made)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; the result gets the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        remove_empty(made)
        if isinstance(err, OSError) and err.errno in WRITE_FAILURES and err.filename is None:  # write() names none
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise


TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")  # atomic_path's: .NAME.XXXXXXXX.tmp[.suffix]


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove, under ``directory``, the temp files of atomic writes that a killed process left (a checkpoint's can
    hold gigabytes of replay). Only for a directory this process owns (a run's, under its lock): another writer's
    temp file would be removed mid-write. Returns what was removed."""
    removed = []
    for root, _, files in os.walk(directory):
        for name in files:
            if TEMP_NAME.match(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def missing_dirs(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, deepest first: what ``mkdir(parents=True)`` will make,
    for ``remove_empty`` to take away if the write they were made for fails."""
    return [d for d in [directory, *directory.parents] if not d.exists()]


def remove_empty(directories: list[Path]) -> None:
    """Remove the directories a failed write made for its file (deepest first), as long as they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return
