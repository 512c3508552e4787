"""The sandbox worker: a separate Python process that runs checked functions under OS limits.

Started by ``embodied.sandbox.pool`` as ``python -I -S -B worker.py MEMORY_BYTES`` with an empty
environment; imports only the standard library and its two sibling files (by path). It applies
an address-space limit before reading any request, re-checks every source it is given, compiles
it with no builtins but a safe few, and answers requests on stdin/stdout as length-prefixed JSON:

    request   {"functions": {id: source}, "calls": [[id, [args...]], ...], "max_ops": n, "seconds": s}
    response  one message per call: {"ok": value} or {"error": kind, "message": text}

Each call runs under an opcode budget and a time limit (a tracer), and under an ``RLIMIT_CPU``
backstop; arguments arrive as fresh copies and results are checked as plain data here, before
they leave. Whatever a call does to the worker, the host's deadline kills and replaces it.
"""

import builtins
import json
import os
import resource
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plaindata  # noqa: E402
import policy  # noqa: E402

SAFE_BUILTINS = {name: getattr(builtins, name) for name in policy.SAFE_BUILTIN_NAMES}
HEADER = struct.Struct("<I")
MAX_REQUEST, MAX_ANSWER = policy.MAX_REQUEST, policy.MAX_ANSWER


class Timeout(Exception):
    pass


class Budget:
    def __init__(self, max_ops, seconds):
        self.remaining = max_ops
        self.deadline = time.perf_counter() + seconds

    def trace(self, frame, event, arg):
        if frame.f_code.co_filename != "<rule>":
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.remaining -= 1
            if self.remaining <= 0 or (self.remaining % 256 == 0 and time.perf_counter() > self.deadline):
                raise Timeout()
        return self.trace


def compile_checked(source):
    func_def = policy.parse_checked(source)
    import ast

    module = ast.Module(body=[func_def], type_ignores=[])
    namespace = {"__builtins__": dict(SAFE_BUILTINS)}
    exec(compile(module, "<rule>", "exec"), namespace)  # defines the function; no defaults, no decorators
    return namespace[func_def.name]


def run_call(function, args, max_ops, seconds):
    budget = Budget(max_ops, seconds)
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used + seconds + 2)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    sys.settrace(budget.trace)
    try:
        value = function(*args)
    finally:
        sys.settrace(None)
    return {"ok": plaindata.encode(value)}


def answer(functions, call, max_ops, seconds):
    fid, raw_args = call
    try:
        function = functions[fid]
        if isinstance(function, Exception):
            return {"error": "rejected", "message": str(function)}
        args = plaindata.decode(raw_args)
        return run_call(function, args, max_ops, seconds)
    except Timeout:
        return {"error": "timeout", "message": "exceeded its execution budget"}
    except MemoryError:
        return {"error": "memory", "message": "exceeded the worker's memory limit"}
    except RecursionError:
        return {"error": "raised", "message": "RecursionError: nested too deeply"}
    except plaindata.PlainDataError as err:
        return {"error": "bad_result", "message": str(err)}
    except Exception as err:  # the function's own bug
        try:
            text = str(err)[:300]
        except Exception:
            text = "?"
        return {"error": "raised", "message": f"{type(err).__name__}: {text}"}


def read_message(stream):
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_REQUEST:
        raise SystemExit(3)
    return json.loads(stream.read(size))


def write_message(stream, message):
    try:
        body = json.dumps(message).encode()
    except (MemoryError, ValueError, RecursionError):
        body = json.dumps({"error": "bad_result", "message": "result could not be encoded"}).encode()
    if len(body) > MAX_ANSWER:
        body = json.dumps({"error": "bad_result", "message": f"result is over {MAX_ANSWER} bytes"}).encode()
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def main():
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 256 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.setrecursionlimit(200)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing the worker prints can corrupt the protocol
    functions = {}
    while True:
        request = read_message(stdin)
        if request is None:
            return
        for fid, source in request.get("functions", {}).items():
            try:
                functions[fid] = compile_checked(source)
            except policy.RejectedCode as err:
                functions[fid] = err
            except (MemoryError, RecursionError, ValueError, SyntaxError, OverflowError) as err:
                functions[fid] = policy.RejectedCode(f"code cannot be compiled: {type(err).__name__}")
        for call in request["calls"]:
            write_message(stdout, answer(functions, call, request["max_ops"], request["seconds"]))


if __name__ == "__main__":
    main()
