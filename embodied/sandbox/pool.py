"""Host side of the sandbox: warm worker processes, one round trip per batch of calls.

A ``WorkerPool`` keeps ``size`` workers (``worker.py``) alive. ``run(calls)`` sends a batch to a
free worker and reads one answer per call, each within a wall-clock deadline; a worker that
misses it, dies, or answers garbage is killed and replaced, and the rest of the batch goes to
the fresh one. Sources are sent to a worker once and compiled there; the host only parses them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from embodied.sandbox import plaindata
from embodied.sandbox.policy import MAX_ANSWER, MAX_REQUEST

WORKER = Path(__file__).with_name("worker.py")
HEADER = struct.Struct("<I")
TOO_LARGE = object()  # what Worker.receive returns for an answer over MAX_ANSWER
BATCH_SECONDS = 10.0  # default deadline of a whole batch beyond its first call's limit


def batch_deadline(seconds: float, calls: int) -> float:
    """Seconds a batch of ``calls`` may take in all: one call's limit plus ``BATCH_SECONDS``
    (honest rules take microseconds; N hostile ones must not cost N times the limit)."""
    return seconds + 0.5 + BATCH_SECONDS


@dataclass(frozen=True)
class Outcome:
    """One call's answer: ``value`` when ``error`` is None, else the error kind and message."""

    value: object = None
    error: str | None = None  # rejected | timeout | memory | raised | bad_result | crashed
    message: str = ""


def function_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


class Worker:
    """One sandbox process and the function ids it has compiled."""

    def __init__(self, memory_bytes: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(WORKER), str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},
            close_fds=True,
            start_new_session=True,
        )  # its own session: a terminal's Ctrl-C is the host's alone
        self.known: set[str] = set()
        self.buffer = b""

    def send_raw(self, functions: dict[str, str], encoded_calls: list[bytes], max_ops: int, seconds: float) -> None:
        """One request: the calls arrive already JSON-encoded (``[id, args]`` each)."""
        head = json.dumps({"functions": functions, "max_ops": max_ops, "seconds": seconds})[:-1].encode()
        body = head + b', "calls": [' + b",".join(encoded_calls) + b"]}"
        if len(body) > MAX_REQUEST:  # run() keeps requests under the limit; this is the last guard
            raise ValueError(f"request of {len(body)} bytes over the {MAX_REQUEST}-byte limit")
        self.proc.stdin.write(HEADER.pack(len(body)) + body)
        self.proc.stdin.flush()

    def receive(self, deadline: float) -> dict | object | None:
        """The next answer; ``TOO_LARGE`` for one over ``MAX_ANSWER`` bytes; None when the deadline passes or
        the worker dies or misbehaves."""
        header = self._read(HEADER.size, deadline)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_ANSWER:
            return TOO_LARGE
        body = self._read(size, deadline)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def _read(self, n: int, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, max(65536, n - len(self.buffer)))
            if not chunk:
                return None  # the worker died
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc.wait()

    def died_of(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "did not answer in time"
        if code < 0:
            name = signal.Signals(-code).name
            return {"SIGXCPU": "ran out of CPU time", "SIGKILL": "was killed", "SIGSEGV": "crashed"}.get(name, name)
        return f"exited with status {code}"


class WorkerPool:
    """Warm sandbox workers. ``memory_mb``: address-space cap of each worker."""

    def __init__(self, size: int = 1, memory_mb: int = 256, max_functions: int = 5000):
        self.size, self.memory_bytes, self.max_functions = size, memory_mb * 1024 * 1024, max_functions
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._available = threading.Semaphore(size)
        self.restarts = 0

    def _take(self, deadline: float) -> Worker | None:
        """A free worker, or None if none frees up before ``deadline``."""
        if not self._available.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return None
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return Worker(self.memory_bytes)
        except BaseException:
            self._available.release()
            raise

    def _give(self, worker: Worker | None) -> None:
        with self._lock:
            if worker is not None:
                self._idle.append(worker)
        self._available.release()

    def run(
        self,
        sources: dict[str, str],
        calls: list[tuple[str, tuple]],
        max_ops: int,
        seconds: float,
        batch_seconds: float | None = None,
    ) -> list[Outcome]:
        """Run ``calls`` (function id, argument tuple) in one worker; one ``Outcome`` per call, in order.

        ``sources`` maps every id in ``calls`` to its (already checked) source. Each call has
        ``seconds`` of wall clock (plus a small margin for the round trip) before its worker is killed,
        and the whole batch ``batch_seconds`` (default ``batch_deadline``), waiting for a free worker
        included: calls still to run when it passes are timeouts, so hostile calls cannot hold a slot
        for N times the limit. Requests are split to stay under ``MAX_REQUEST`` bytes; a single call
        too large to send fails at once (``rejected``), never reaching a worker.
        """
        deadline = time.monotonic() + (batch_deadline(seconds, len(calls)) if batch_seconds is None else batch_seconds)
        outcomes: list[Outcome | None] = [None] * len(calls)
        encoded: dict[int, bytes] = {}
        for i, (fid, args) in enumerate(calls):
            try:
                encoded[i] = json.dumps([fid, plaindata.encode(list(args))]).encode()
            except plaindata.PlainDataError as err:
                raise TypeError(f"sandbox arguments must be plain data: {err}") from None
            room = MAX_REQUEST - len(sources[fid].encode()) - 4096
            if len(encoded[i]) > room:
                outcomes[i] = Outcome(
                    error="rejected",
                    message=f"the call's arguments are {len(encoded[i])} bytes, "
                    f"over the {MAX_REQUEST}-byte request limit of the sandbox",
                )
        todo = [i for i in range(len(calls)) if outcomes[i] is None]
        while todo:
            worker = self._take(deadline)
            if worker is None:  # no worker freed up before the batch's deadline
                for i in todo:
                    outcomes[i] = Outcome(
                        error="timeout", message="no sandbox worker was free before the batch's deadline"
                    )
                break
            try:
                if len(worker.known) > self.max_functions:
                    worker.kill()
                    worker = Worker(self.memory_bytes)
                chunk, needed, size = [], set(), 256
                for i in todo:  # as many calls as fit in one request (at least one: each fits alone)
                    fid = calls[i][0]
                    extra = (
                        len(encoded[i])
                        + 1
                        + (len(sources[fid].encode()) + 64 if fid not in worker.known and fid not in needed else 0)
                    )
                    if chunk and size + extra > MAX_REQUEST:
                        break
                    chunk.append(i)
                    size += extra
                    needed.add(fid)
                needed -= worker.known
                try:
                    worker.send_raw({f: sources[f] for f in needed}, [encoded[i] for i in chunk], max_ops, seconds)
                except (BrokenPipeError, OSError):
                    reason = worker.died_of()
                    worker.kill()
                    worker = None
                    self.restarts += 1
                    outcomes[chunk[0]] = Outcome(
                        error="crashed",
                        message=f"the sandbox worker {reason} before the request was sent; it was replaced",
                    )
                    todo = todo[1:]  # never the same request again: each pass settles at least one call
                    continue
                worker.known |= needed
                done = 0
                for i in chunk:
                    if time.monotonic() >= deadline:
                        break
                    answer = worker.receive(min(time.monotonic() + seconds + 0.5, deadline))
                    if answer is TOO_LARGE:
                        worker.kill()
                        worker = None
                        self.restarts += 1
                        outcomes[i] = Outcome(error="bad_result", message=f"the answer is over {MAX_ANSWER} bytes")
                        done += 1
                        break
                    if answer is None:
                        reason = worker.died_of()
                        worker.kill()
                        worker = None
                        self.restarts += 1
                        kind = "timeout" if reason in ("did not answer in time", "ran out of CPU time") else "crashed"
                        outcomes[i] = Outcome(error=kind, message=f"the sandbox worker {reason}; it was replaced")
                        done += 1
                        break
                    outcomes[i] = self._outcome(answer)
                    done += 1
                if worker is not None and done < len(chunk):  # the batch's deadline cut the chunk short
                    worker.kill()
                    worker = None
                    self.restarts += 1
                todo = todo[done:]
                if todo and time.monotonic() >= deadline:
                    for i in todo:
                        outcomes[i] = Outcome(
                            error="timeout", message="the batch's deadline passed before this call ran"
                        )
                    todo = []
            finally:
                self._give(worker)
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _outcome(answer: dict) -> Outcome:
        if not isinstance(answer, dict):
            return Outcome(error="bad_result", message="malformed answer from the worker")
        if "ok" in answer:
            try:
                return Outcome(value=plaindata.decode(answer["ok"]))
            except plaindata.PlainDataError as err:
                return Outcome(error="bad_result", message=str(err))
        return Outcome(error=str(answer.get("error", "crashed")), message=str(answer.get("message", ""))[:500])

    def close(self) -> None:
        with self._lock:
            for worker in self._idle:
                worker.kill()
            self._idle.clear()


_default: tuple[int, WorkerPool] | None = None


def default_pool() -> WorkerPool:
    """This process's shared pool (a forked child gets its own)."""
    global _default
    if _default is None or _default[0] != os.getpid():
        _default = (os.getpid(), WorkerPool())
        atexit.register(_default[1].close)
    return _default[1]
