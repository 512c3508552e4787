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

WORKER = Path(__file__).with_name("worker.py")
HEADER = struct.Struct("<I")
MAX_ANSWER = 8 * 1024 * 1024


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
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={},
            close_fds=True, start_new_session=True)  # its own session: a terminal's Ctrl-C is the host's alone
        self.known: set[str] = set()
        self.buffer = b""

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.proc.stdin.write(HEADER.pack(len(body)) + body)
        self.proc.stdin.flush()

    def receive(self, deadline: float) -> dict | None:
        """The next answer, or None when the deadline passes or the worker dies or misbehaves."""
        header = self._read(HEADER.size, deadline)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_ANSWER:
            return None
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

    def _take(self) -> Worker:
        self._available.acquire()
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Worker(self.memory_bytes)

    def _give(self, worker: Worker | None) -> None:
        with self._lock:
            if worker is not None:
                self._idle.append(worker)
        self._available.release()

    def run(self, sources: dict[str, str], calls: list[tuple[str, tuple]], max_ops: int, seconds: float) -> list[Outcome]:
        """Run ``calls`` (function id, argument tuple) in one worker; one ``Outcome`` per call, in order.

        ``sources`` maps every id in ``calls`` to its (already checked) source. Each call has
        ``seconds`` of wall clock (plus a small margin for the round trip) before its worker is killed.
        """
        outcomes: list[Outcome] = []
        encoded = []
        for fid, args in calls:
            try:
                encoded.append([fid, plaindata.encode(list(args))])
            except plaindata.PlainDataError as err:
                raise TypeError(f"sandbox arguments must be plain data: {err}") from None
        todo = list(range(len(calls)))
        while todo:
            worker = self._take()
            try:
                if len(worker.known) > self.max_functions:
                    worker.kill()
                    worker = Worker(self.memory_bytes)
                needed = {calls[i][0] for i in todo} - worker.known
                try:
                    worker.send({"functions": {f: sources[f] for f in needed}, "calls": [encoded[i] for i in todo],
                                 "max_ops": max_ops, "seconds": seconds})
                except (BrokenPipeError, OSError):
                    worker.kill()
                    worker = None
                    self.restarts += 1
                    continue
                worker.known |= needed
                done = 0
                for i in todo:
                    answer = worker.receive(time.monotonic() + seconds + 0.5)
                    if answer is None:
                        reason = worker.died_of()
                        worker.kill()
                        worker = None
                        self.restarts += 1
                        kind = "timeout" if reason in ("did not answer in time", "ran out of CPU time") else "crashed"
                        outcomes.append(Outcome(error=kind, message=f"the sandbox worker {reason}; it was replaced"))
                        done += 1
                        break
                    outcomes.append(self._outcome(answer))
                    done += 1
                todo = todo[done:]
            finally:
                self._give(worker)
        return outcomes

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
