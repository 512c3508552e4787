"""What generated code may contain: one plain function from a small whitelist of syntax.

Standard library only (the worker imports this file by path). Checking parses the source and
walks its syntax tree; it never compiles or runs anything, so checking hostile code is safe in
the host process.
"""

from __future__ import annotations

import ast
from collections import deque

SAFE_BUILTIN_NAMES = (
    "len",
    "any",
    "all",
    "min",
    "max",
    "abs",
    "bool",
    "int",
    "float",
    "str",
    "set",
    "frozenset",
    "list",
    "tuple",
    "dict",
    "sorted",
    "round",
    "isinstance",
    "True",
    "False",
    "None",
)
SAFE_METHODS = {
    "get",
    "items",
    "keys",
    "values",
    "startswith",
    "endswith",
    "lower",
    "upper",
    "strip",
    "split",
    "join",
    "count",
    "index",
}  # not str.format: "{0.__class__}" reaches attributes at run time
ALLOWED_NODES = (
    ast.Module,
    ast.FunctionDef,
    ast.arguments,
    ast.arg,
    ast.Return,
    ast.If,
    ast.For,
    ast.Break,
    ast.Continue,
    ast.Pass,
    ast.Assign,
    ast.AugAssign,
    ast.Expr,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Name,
    ast.Load,
    ast.Store,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Dict,
    ast.Set,
    ast.Subscript,
    ast.Slice,
    ast.Attribute,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.comprehension,
    ast.JoinedStr,
    ast.FormattedValue,
)
MAX_SOURCE_CHARS = 20_000
MAX_NODES = 5_000
MAX_REQUEST = 64 * 1024 * 1024  # bytes of one request to a worker; the host splits batches to stay under it
MAX_ANSWER = 8 * 1024 * 1024  # bytes of one call's answer; larger is a bad result, not a timeout


class RejectedCode(ValueError):
    """The code uses something outside the whitelist (the host turns this into ``UnsafeCodeError``)."""


def parse_checked(source: str) -> ast.FunctionDef:
    """Parse and validate; the single function definition, or ``RejectedCode`` saying why not."""
    if not isinstance(source, str):
        raise RejectedCode(f"code must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise RejectedCode(f"code is {len(source)} characters, more than {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise RejectedCode(f"syntax error: {err.msg} (line {err.lineno})") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as err:  # absurd nesting or input
        raise RejectedCode(f"code cannot be parsed: {type(err).__name__}") from None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(tree.body) != 1 or len(functions) != 1:
        raise RejectedCode("code must be exactly one function definition and nothing else")
    func = functions[0]
    if func.decorator_list:
        raise RejectedCode("decorators are not allowed")
    args = func.args
    if args.defaults or any(d is not None for d in args.kw_defaults):
        raise RejectedCode("default argument values are not allowed (they would run when the function is defined)")
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        raise RejectedCode("only plain positional parameters are allowed")
    if func.returns is not None or any(a.annotation is not None for a in args.args):
        raise RejectedCode("annotations are not allowed (they would run when the function is defined)")
    count = 0
    todo = deque([(tree, "?")])  # breadth first, as ast.walk; operators have no line of their own: their parent's
    while todo:
        node, line = todo.popleft()
        count += 1
        if count > MAX_NODES:
            raise RejectedCode(f"code has more than {MAX_NODES} syntax nodes")
        line = getattr(node, "lineno", line)
        check_node(node, func, line)
        todo.extend((child, line) for child in ast.iter_child_nodes(node))
    return func


def check_node(node: ast.AST, func: ast.FunctionDef, line: int | str = "?") -> None:
    where = f"(line {line})"
    if not isinstance(node, ALLOWED_NODES):
        raise RejectedCode(f"{type(node).__name__} is not allowed {where}")
    if isinstance(node, ast.FunctionDef) and node is not func:
        raise RejectedCode("nested functions are not allowed")
    if isinstance(node, ast.Name) and node.id.startswith("_"):
        raise RejectedCode(f"name {node.id!r} is not allowed (leading underscore)")
    if isinstance(node, ast.arg) and node.arg.startswith("_"):
        raise RejectedCode(f"argument {node.arg!r} is not allowed (leading underscore)")
    bound = (
        node.arg
        if isinstance(node, ast.arg)
        else node.id
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
        else None
    )
    if bound is not None and (bound in SAFE_BUILTIN_NAMES or bound == func.name):
        # rebinding 'len = f' would make 'len(x)' a recursive call that the check above cannot see
        raise RejectedCode(f"name {bound!r} cannot be rebound {where}")
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise RejectedCode(f"attribute {node.attr!r} is not allowed (leading underscore)")
        if node.attr not in SAFE_METHODS:
            raise RejectedCode(f"attribute {node.attr!r} is not allowed; only {sorted(SAFE_METHODS)}")
    if isinstance(node, ast.Call):
        target = node.func
        if isinstance(target, ast.Name):
            if target.id == func.name:
                raise RejectedCode("recursion is not allowed")
            if target.id not in SAFE_BUILTIN_NAMES:
                raise RejectedCode(f"call to {target.id!r} is not allowed")
        elif not isinstance(target, ast.Attribute):
            raise RejectedCode("only calls to whitelisted builtins and methods are allowed")
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > 2000:
        raise RejectedCode("string constant too long")
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) > 10**18:
        raise RejectedCode("integer constant too large")
