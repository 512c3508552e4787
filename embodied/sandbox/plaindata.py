"""Plain data across the sandbox boundary: a bounded, typed JSON encoding (no pickle).

Only ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple``, ``dict``, ``set`` and
``frozenset`` cross. ``encode`` walks the value once and refuses anything deeper, larger or of
another type, so a rule cannot hand back a structure that is expensive for the host to touch
(a shared-reference tree with 2^100 paths, a 10^8-character string, an object with methods).
Standard library only: the worker imports this file by path, without the ``embodied`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class PlainDataError(ValueError):
    """The value is not plain data within the limits."""


@dataclass(frozen=True)
class Limits:
    max_depth: int = 32
    max_nodes: int = 100_000
    max_chars: int = 1_000_000  # summed over all strings
    max_int_digits: int = 100


def encode(value, limits: Limits = Limits()):
    """A JSON-serialisable copy of ``value``: lists as arrays, other containers tagged objects."""
    budget = {"nodes": limits.max_nodes, "chars": limits.max_chars}

    def walk(v, depth):
        if depth > limits.max_depth:
            raise PlainDataError(f"nested deeper than {limits.max_depth}")
        budget["nodes"] -= 1
        if budget["nodes"] < 0:
            raise PlainDataError(f"more than {limits.max_nodes} elements")
        if v is None or v is True or v is False:
            return v
        kind = type(v)
        if kind is int:
            if v.bit_length() > limits.max_int_digits * 3.33:
                raise PlainDataError(f"integer with more than {limits.max_int_digits} digits")
            return v
        if kind is float:
            return v if math.isfinite(v) else {"x": repr(v)}
        if kind is str:
            budget["chars"] -= len(v)
            if budget["chars"] < 0:
                raise PlainDataError(f"more than {limits.max_chars} characters of text")
            return v
        if kind is list:
            return [walk(x, depth + 1) for x in v]
        if kind is tuple:
            return {"t": [walk(x, depth + 1) for x in v]}
        if kind is set:
            return {"s": [walk(x, depth + 1) for x in v]}
        if kind is frozenset:
            return {"f": [walk(x, depth + 1) for x in v]}
        if kind is dict:
            return {"d": [[walk(k, depth + 1), walk(x, depth + 1)] for k, x in v.items()]}
        raise PlainDataError(f"a value of type {kind.__name__} is not plain data")

    return walk(value, 0)


def decode(data, limits: Limits = Limits()):
    """The value ``encode`` encoded; refuses malformed input with ``PlainDataError``."""
    budget = [limits.max_nodes]

    def walk(d, depth):
        if depth > limits.max_depth:
            raise PlainDataError(f"nested deeper than {limits.max_depth}")
        budget[0] -= 1
        if budget[0] < 0:
            raise PlainDataError(f"more than {limits.max_nodes} elements")
        if d is None or isinstance(d, (bool, int, float, str)):
            return d
        if isinstance(d, list):
            return [walk(x, depth + 1) for x in d]
        if isinstance(d, dict) and len(d) == 1:
            ((tag, body),) = d.items()
            try:
                if tag == "x" and body in ("nan", "inf", "-inf"):
                    return float(body)
                if tag in ("t", "s", "f") and isinstance(body, list):
                    items = [walk(x, depth + 1) for x in body]
                    return tuple(items) if tag == "t" else set(items) if tag == "s" else frozenset(items)
                if tag == "d" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
                    return {walk(k, depth + 1): walk(v, depth + 1) for k, v in body}
            except TypeError as err:  # unhashable key or set element
                raise PlainDataError(f"malformed container: {err}") from None
        raise PlainDataError(f"malformed plain data: {str(d)[:80]!r}")

    return walk(data, 0)
