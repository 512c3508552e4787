"""Run LLM-written code safely: checked in the host, executed only in a worker process.

``compile_function(source)`` parses the source and checks it against a whitelist (one plain
function; no imports, ``while``, lambdas, default values, annotations, underscore names, or
calls outside a few builtins and read-only methods) without compiling or running anything. The
returned ``SandboxedFunction`` runs in a warm worker process (``pool.py``, ``worker.py``) with an
address-space limit (256 MB), an opcode budget and time limit per call, a CPU-time backstop, and
a wall-clock deadline after which the worker is killed and replaced. Arguments cross as copies
of plain data and results are checked as plain data (type, size, depth) before they come back.
``run_batch`` evaluates many (function, arguments) pairs in one round trip.

Every failure is a ``SandboxError``: ``UnsafeCodeError`` (rejected, never ran), ``RuleTimeout``,
``RuleMemoryError``, ``RuleRuntimeError`` (the code raised), ``SandboxBadResult``,
``SandboxCrashed`` (the worker died some other way).

What it does not promise: protection against a bug in CPython itself that the whitelisted
operations could reach; the worker runs as the same OS user, without a seccomp filter or a
separate filesystem namespace (it has no way to call ``open`` or import anything).
"""

from __future__ import annotations

from typing import Any, Sequence

from embodied.sandbox.policy import RejectedCode, parse_checked
from embodied.sandbox.pool import Outcome, WorkerPool, default_pool, function_id


class SandboxError(RuntimeError):
    """Anything that went wrong with sandboxed code."""


class UnsafeCodeError(SandboxError, ValueError):
    """The code uses something outside the whitelist; it was never run."""


class RuleTimeout(SandboxError):
    """The code ran past its opcode budget, time limit or deadline and was stopped."""


class RuleMemoryError(SandboxError):
    """The code needed more memory than the worker may use."""


class RuleRuntimeError(SandboxError):
    """The code raised while running."""


class SandboxBadResult(SandboxError):
    """The code returned something that is not plain data within the limits, or of the wrong shape."""


class SandboxCrashed(SandboxError):
    """The worker process died while running the code."""


ERRORS: dict[str, type[SandboxError]] = {
    "rejected": UnsafeCodeError,
    "timeout": RuleTimeout,
    "memory": RuleMemoryError,
    "raised": RuleRuntimeError,
    "bad_result": SandboxBadResult,
    "crashed": SandboxCrashed,
}


def check_source(source: str) -> str:
    """The name of the single function ``source`` defines; ``UnsafeCodeError`` if it is not allowed."""
    try:
        return parse_checked(source).name
    except RejectedCode as err:
        raise UnsafeCodeError(str(err)) from None


class SandboxedFunction:
    """A checked function that runs in a sandbox worker. Call it like the function itself."""

    def __init__(self, source: str, max_ops: int = 100_000, seconds: float = 0.5, pool: WorkerPool | None = None):
        self.__name__ = check_source(source)
        self.source, self.max_ops, self.seconds = source, max_ops, seconds
        self.id = function_id(source)
        self.pool = pool

    def __call__(self, *args: Any) -> Any:
        return run_batch([(self, args)])[0].unwrap()

    def __repr__(self) -> str:
        return f"SandboxedFunction({self.__name__})"


def raise_for(outcome: Outcome) -> Any:
    """The outcome's value, or its error as the matching ``SandboxError``."""
    if outcome.error is None:
        return outcome.value
    raise ERRORS.get(outcome.error, SandboxCrashed)(outcome.message)


Outcome.unwrap = raise_for  # type: ignore[attr-defined]


def run_batch(calls: Sequence[tuple[SandboxedFunction, tuple]], batch_seconds: float | None = None) -> list[Outcome]:
    """Evaluate every (function, args) in as few worker round trips as fit; ``Outcome`` per call, errors included.

    All functions of one batch share the first one's pool and limits. The batch has a total deadline
    (``batch_seconds``, default ``pool.batch_deadline``): calls not run by then are timeouts.
    """
    if not calls:
        return []
    first = calls[0][0]
    pool = first.pool or default_pool()
    sources = {f.id: f.source for f, _ in calls}
    return pool.run(sources, [(f.id, tuple(args)) for f, args in calls], first.max_ops, first.seconds, batch_seconds)


def compile_function(source: str, max_ops: int = 100_000, seconds: float = 0.5) -> SandboxedFunction:
    """A callable running the checked function in a sandbox worker (see module docstring)."""
    return SandboxedFunction(source, max_ops=max_ops, seconds=seconds)


__all__ = [
    "ERRORS",
    "Outcome",
    "RuleMemoryError",
    "RuleRuntimeError",
    "RuleTimeout",
    "SandboxBadResult",
    "SandboxCrashed",
    "SandboxError",
    "SandboxedFunction",
    "UnsafeCodeError",
    "WorkerPool",
    "check_source",
    "compile_function",
    "raise_for",
    "run_batch",
]
