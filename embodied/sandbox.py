"""Run LLM-written code safely: parse, check against a whitelist, run restricted with a budget.

Never ``exec`` generated code as it is. ``compile_function(source)`` accepts one plain function
built from a small whitelist of syntax (no imports, no ``while``, no ``global``, no lambdas, no
names or attributes with a leading underscore, calls only to whitelisted builtins and to a few
read-only methods), executes its definition with an empty ``__builtins__``, and returns a wrapper
that runs it under a tracer: every executed opcode counts against a budget and a wall-clock
deadline, so a runaway loop is stopped. Any violation raises ``UnsafeCodeError`` (rejected before
running) or ``RuleTimeout`` / ``RuleRuntimeError`` (stopped while running).
"""

from __future__ import annotations

import ast
import sys
import time
from typing import Any, Callable

SAFE_BUILTINS = {
    "len": len, "any": any, "all": all, "min": min, "max": max, "abs": abs, "bool": bool, "int": int,
    "float": float, "str": str, "set": set, "frozenset": frozenset, "list": list, "tuple": tuple, "dict": dict,
    "sorted": sorted, "round": round, "isinstance": isinstance, "True": True, "False": False, "None": None,
}
SAFE_METHODS = {"get", "items", "keys", "values", "startswith", "endswith", "lower", "upper", "strip", "split",
                "join", "count", "index"}  # not str.format: "{0.__class__}" reaches attributes at run time
ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.If, ast.For, ast.Break, ast.Continue,
    ast.Pass, ast.Assign, ast.AugAssign, ast.Expr, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
    ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Compare, ast.Eq, ast.NotEq, ast.Lt,
    ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot, ast.IfExp, ast.Call, ast.keyword, ast.Name,
    ast.Load, ast.Store, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Subscript, ast.Slice,
    ast.Attribute, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.JoinedStr,
    ast.FormattedValue,
)


class UnsafeCodeError(ValueError):
    """The code uses something outside the whitelist; it was never run."""


class RuleTimeout(RuntimeError):
    """The code ran past its opcode budget or time limit and was stopped."""


class RuleRuntimeError(RuntimeError):
    """The code raised while running."""


def check_source(source: str, max_chars: int = 20_000) -> ast.FunctionDef:
    """Parse and validate; returns the single function definition or raises ``UnsafeCodeError``."""
    if len(source) > max_chars:
        raise UnsafeCodeError(f"code is {len(source)} characters, more than {max_chars}")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise UnsafeCodeError(f"syntax error: {err.msg} (line {err.lineno})") from err
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(tree.body) != 1 or len(functions) != 1:
        raise UnsafeCodeError("code must be exactly one function definition and nothing else")
    func = functions[0]
    if func.decorator_list or func.returns is not None and not isinstance(func.returns, (ast.Name, ast.Constant)):
        raise UnsafeCodeError("decorators are not allowed")
    local_names = {a.arg for a in func.args.args} | {func.name}
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            raise UnsafeCodeError(f"{type(node).__name__} is not allowed (line {getattr(node, 'lineno', '?')})")
        if isinstance(node, ast.FunctionDef) and node is not func:
            raise UnsafeCodeError("nested functions are not allowed")
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise UnsafeCodeError(f"name {node.id!r} is not allowed (leading underscore)")
            if isinstance(node.ctx, ast.Store):
                local_names.add(node.id)
        if isinstance(node, ast.arg) and node.arg.startswith("_"):
            raise UnsafeCodeError(f"argument {node.arg!r} is not allowed (leading underscore)")
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise UnsafeCodeError(f"attribute {node.attr!r} is not allowed (leading underscore)")
            if node.attr not in SAFE_METHODS:
                raise UnsafeCodeError(f"attribute {node.attr!r} is not allowed; only {sorted(SAFE_METHODS)}")
        if isinstance(node, ast.Call):
            target = node.func
            if isinstance(target, ast.Name):
                if target.id == func.name:
                    raise UnsafeCodeError("recursion is not allowed")
                if target.id not in SAFE_BUILTINS:
                    raise UnsafeCodeError(f"call to {target.id!r} is not allowed")
            elif not isinstance(target, ast.Attribute):
                raise UnsafeCodeError("only calls to whitelisted builtins and methods are allowed")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > 2000:
            raise UnsafeCodeError("string constant too long")
    return func


class _Budget:
    def __init__(self, max_ops: int, seconds: float):
        self.remaining = max_ops
        self.deadline = time.perf_counter() + seconds

    def trace(self, frame, event, arg):
        if frame.f_code.co_filename != "<rule>":
            return None  # only the rule's own frames are counted
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.remaining -= 1
            if self.remaining <= 0 or (self.remaining % 256 == 0 and time.perf_counter() > self.deadline):
                raise RuleTimeout("rule exceeded its execution budget")
        return self.trace


def compile_function(source: str, max_ops: int = 100_000, seconds: float = 0.5) -> Callable[..., Any]:
    """A callable running the checked function under an opcode budget and a time limit."""
    func_def = check_source(source)
    namespace: dict[str, Any] = {"__builtins__": dict(SAFE_BUILTINS)}
    exec(compile(ast.Module(body=[func_def], type_ignores=[]), "<rule>", "exec"), namespace)  # checked AST only
    function = namespace[func_def.name]

    def run(*args, **kwargs):
        budget = _Budget(max_ops, seconds)
        previous = sys.gettrace()
        sys.settrace(budget.trace)
        try:
            return function(*args, **kwargs)
        except RuleTimeout:
            raise
        except Exception as err:  # the rule's own bug: reported, never propagated as itself
            raise RuleRuntimeError(f"{type(err).__name__}: {err}") from err
        finally:
            sys.settrace(previous)

    run.__name__ = func_def.name
    run.source = source  # type: ignore[attr-defined]
    return run
