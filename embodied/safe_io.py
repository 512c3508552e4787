"""Readers for files that may be hostile: sizes and nesting are checked before anything is parsed.

Every JSON or text file the project reads back (``config.json``, ``summary.json``, Minari's
``metadata.json``, ``metrics.jsonl`` lines, WALL-E's rule and observation files) goes through
these, so a huge file is refused by its size before it is read, deeply nested JSON is refused by
a linear scan before the recursive parser sees it, and ``RecursionError`` / ``MemoryError`` become
one ``EmbodiedError`` line instead of a traceback. ``json_text`` writes the JSON they read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from embodied.errors import EmbodiedError

MAX_JSON_BYTES = 16 * 2**20  # a config, summary or metadata file of ours is a few KB
MAX_JSON_DEPTH = 64  # ours nest at most 5 levels
MAX_TEXT_BYTES = 1 * 2**20  # a rule file of WALL-E's is a few hundred bytes
MAX_METRIC_LINE = 64 * 2**10  # one metrics.jsonl record is a few hundred bytes
MAX_METRICS_BYTES = 1 * 2**30  # a metrics.jsonl of a 1M-step run logging every step is ~100 MB


def file_size(path: str | os.PathLike, limit: int, what: str = "file") -> int:
    """The size of regular file ``path``; an ``EmbodiedError`` if it is missing, not a file, or over ``limit``."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise EmbodiedError(f"cannot read {what} {path}: {err.strerror}") from None
    if not path.is_file():
        raise EmbodiedError(f"{what} {path} is not a regular file")
    if st.st_size > limit:
        raise EmbodiedError(f"{what} {path} is {st.st_size} bytes, over the limit of {limit}; refusing to read it")
    return st.st_size


def read_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """UTF-8 text of ``path``, at most ``limit`` bytes (checked before reading, and while reading)."""
    file_size(path, limit, what)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except OSError as err:
        raise EmbodiedError(f"cannot read {what} {path}: {err.strerror}") from None
    if len(data) > limit:
        raise EmbodiedError(f"{what} {path} is over the limit of {limit} bytes; refusing to read it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EmbodiedError(f"{what} {path} is not UTF-8 text") from None


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with the nesting checked first; bad JSON is an ``EmbodiedError`` naming ``where``."""
    if json_depth(text) > max_depth:
        raise EmbodiedError(f"{where} nests JSON deeper than {max_depth} levels; refusing to parse it")
    try:
        return json.loads(text)
    except (ValueError, RecursionError, MemoryError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise EmbodiedError(f"{where} is not valid JSON: {reason}") from None


def load_json(
    path: str | os.PathLike, limit: int = MAX_JSON_BYTES, what: str = "JSON file", max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """The JSON value in ``path``: size, encoding and nesting checked before parsing."""
    return parse_json(read_text(path, limit, what), f"{what} {path}", max_depth)


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` whose output every JSON parser reads: a NaN or infinite float (a metric with nothing to
    measure) is written as null, where Python would write the bare ``NaN`` that JSON does not have."""

    def finite(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, Mapping):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False, **kwargs)
