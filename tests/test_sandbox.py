import time

import pytest

from embodied.sandbox import RuleRuntimeError, RuleTimeout, UnsafeCodeError, compile_function

GOOD = """
def rule(state, action, graphs):
    if action.get("skill") == "grasp" and not state.get("gripper_open"):
        return ("the gripper is closed", False, "release first")
    holding = [o for o, v in state.get("grasped", {}).items() if v]
    return (f"holding {len(holding)}", True, "")
"""


def test_a_well_formed_rule_runs():
    rule = compile_function(GOOD)
    assert rule({"gripper_open": False}, {"skill": "grasp"}, {}) == ("the gripper is closed", False, "release first")
    assert rule({"gripper_open": True, "grasped": {"a": True, "b": False}}, {"skill": "grasp"}, {})[1] is True


@pytest.mark.parametrize(
    "source, message",
    [
        ("import os\ndef rule(s, a, g):\n    return 1", "exactly one function"),
        ("def rule(s, a, g):\n    import os\n    return os.listdir('/')", "Import"),
        ("def rule(s, a, g):\n    return ().__class__.__bases__[0].__subclasses__()", "underscore"),
        ("def rule(s, a, g):\n    return open('/etc/passwd').read()", "'open'|'read'"),
        ("def rule(s, a, g):\n    return open('/etc/passwd')", "call to 'open'"),
        ("def rule(s, a, g):\n    return eval('1+1')", "call to 'eval'"),
        ("def rule(s, a, g):\n    return getattr(s, 'x')", "call to 'getattr'"),
        ("def rule(s, a, g):\n    while True:\n        pass", "While"),
        ("def rule(s, a, g):\n    return rule(s, a, g)", "recursion"),
        ("def rule(s, a, g):\n    f = lambda: 1\n    return f()", "Lambda"),
        ("def rule(s, a, g):\n    global x\n    return 1", "Global"),
        ("def rule(s, a, g):\n    return __import__('os')", "__import__"),
        ("def rule(s, a, g):\n    return s.__dict__", "underscore"),
        (
            "def rule(s, a, g):\n    return 'a' * 10**10",
            r"Mult is not allowed \(line 2\)",
        ),  # operators: the parent's line
        ("def rule(s, a, g):\n    x = 1\n    x <<= 99", r"LShift is not allowed \(line 3\)"),
        ("def rule(s, a, g):\n    return g.system('rm -rf /')", "attribute 'system'"),
        ("def rule(s, a, g)\n    return 1", "syntax error"),
    ],
)
def test_hostile_code_is_refused_before_running(source, message):
    with pytest.raises(UnsafeCodeError, match=message):
        compile_function(source)


def test_runaway_loops_are_stopped_by_the_budget():
    source = """
def rule(state, action, graphs):
    total = 0
    for a in state:
        for b in state:
            for c in state:
                total = total + 1
    return ("", True, "")
"""
    rule = compile_function(source, max_ops=50_000, seconds=5.0)
    start = time.perf_counter()
    with pytest.raises(RuleTimeout):
        rule(list(range(1000)), {}, {})
    assert time.perf_counter() - start < 5.0
    assert rule(list(range(3)), {}, {}) == ("", True, "")


def test_time_limit_applies_too():
    source = """
def rule(state, action, graphs):
    n = 0
    for x in state:
        n = n + 1
    return n
"""
    rule = compile_function(
        source.replace("        n = n + 1", "        for y in state:\n            n = n + 1"),
        max_ops=10**12,
        seconds=0.05,
    )
    with pytest.raises(RuleTimeout):
        rule(list(range(10**4)), {}, {})


def test_errors_inside_the_rule_are_wrapped():
    rule = compile_function("def rule(s, a, g):\n    return s['missing']")
    with pytest.raises(RuleRuntimeError, match="KeyError"):
        rule({}, {}, {})


def test_only_safe_builtins_exist_in_the_worker():
    rule = compile_function("def rule(s, a, g):\n    return len(s)")
    assert rule([1, 2], {}, {}) == 2
    probe = compile_function("def rule(s, a, g):\n    return open")  # passes the check (a name), fails at run time
    with pytest.raises(RuleRuntimeError, match="NameError"):
        probe({}, {}, {})


# --- the worker process: what an in-process checker cannot stop -------------------------------


from embodied.sandbox import (  # noqa: E402
    RuleMemoryError,
    SandboxBadResult,
    SandboxError,
    WorkerPool,
    run_batch,
)
from embodied.sandbox.policy import RejectedCode, parse_checked  # noqa: E402

EIGHTY = "[" + ",".join(["0"] * 80) + "]"


def doubling(tail: str) -> str:
    """Nested lists that share references: 2^80 paths, built in 80 steps."""
    return (
        f"def rule(s, a, g):\n    x = [1]\n    y = [1]\n    for i in {EIGHTY}:\n"
        f"        x = [x, x]\n        y = [y, y]\n    {tail}\n"
    )


@pytest.mark.parametrize("tail", ["return x == y", "return len(str(x))", "return (x == y, True, '')"])
def test_exponential_c_work_is_killed_by_the_deadline_and_the_host_goes_on(tail):
    rule = compile_function(doubling(tail), seconds=0.3)
    start = time.perf_counter()
    with pytest.raises(RuleTimeout):
        rule({}, {}, {})
    assert time.perf_counter() - start < 5
    assert compile_function("def rule(s, a, g):\n    return 7")({}, {}, {}) == 7  # a fresh worker took over


@pytest.mark.parametrize("expr", ["'%2000000000d' % 1", "f'{1:>2000000000}'", "'%0999999999d' % 7"])
def test_huge_allocations_hit_the_memory_cap(expr):
    rule = compile_function(f"def rule(s, a, g):\n    return {expr}")
    with pytest.raises(RuleMemoryError):
        rule({}, {}, {})


def test_rules_cannot_change_the_callers_objects():
    rule = compile_function("def rule(s, a, g):\n    s['moved'] = True\n    a['args'][0] = 9\n    return s")
    state, action = {"x": 1}, {"args": [0]}
    assert rule(state, action, {}) == {"x": 1, "moved": True}
    assert state == {"x": 1} and action == {"args": [0]}


@pytest.mark.parametrize(
    "tail, kind",
    [
        ("return x", SandboxBadResult),  # 2^80 leaves: refused by depth before it is ever walked
        ("return [1, 2] == [1, 2] and {1: 2}.keys()", SandboxBadResult),  # not plain data
    ],
)
def test_results_are_validated_in_the_worker(tail, kind):
    rule = compile_function(doubling(tail))
    with pytest.raises(kind):
        rule({}, {}, {})


def test_default_arguments_and_annotations_are_refused_without_running_them():
    for source in [
        "def rule(s, a, g=print('ran')):\n    return 1",
        "def rule(s, a, g=[0] * 10):\n    return 1",
        "def rule(s, a, g: print('ran')):\n    return 1",
        "def rule(s, a, *, g=1):\n    return 1",
    ]:
        with pytest.raises(UnsafeCodeError):
            compile_function(source)


@pytest.mark.parametrize(
    "source",
    [
        "def rule(s, a, g):\n    return " + "(" * 5000 + "1" + ")" * 5000,
        "def rule(s, a, g):\n    return " + "-" * 100_000 + "1",
        "def rule(s, a, g):\n    return 1 / 0",
        "x" * 30_000,
    ],
)
def test_compile_problems_are_the_sandboxs_error_not_raw_builtins(source):
    try:
        compile_function(source)({}, {}, {})
    except SandboxError:
        pass  # UnsafeCodeError at the check, or RuleRuntimeError for 1/0 at run time


def test_every_failure_is_one_exception_family():
    for cls in (UnsafeCodeError, RuleTimeout, RuleMemoryError, RuleRuntimeError, SandboxBadResult):
        assert issubclass(cls, SandboxError)


def test_arguments_must_be_plain_data():
    rule = compile_function("def rule(s, a, g):\n    return 1")
    with pytest.raises(TypeError, match="plain data"):
        rule(object(), {}, {})


def test_a_batch_runs_in_one_worker_and_one_bad_call_does_not_spoil_the_rest():
    good = compile_function("def rule(s, a, g):\n    return s.get('n')")
    bad = compile_function(doubling("return x == y"), seconds=0.2)
    outcomes = run_batch([(good, ({"n": 1}, {}, {})), (bad, ({}, {}, {})), (good, ({"n": 3}, {}, {}))])
    assert [o.error for o in outcomes] == [None, "timeout", None]
    assert outcomes[0].value == 1 and outcomes[2].value == 3


def test_the_host_parses_but_never_runs_rule_code(tmp_path):
    from agents.walle.world_model import NeuroSymbolicWorldModel

    marker = tmp_path / "ran"
    with pytest.raises(RejectedCode):
        parse_checked(f"def rule(s, a, g=open({str(marker)!r}, 'w')):\n    return 1")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "evil.py").write_text(f"def evil(s, a, g=open({str(marker)!r}, 'w')):\n    return 1\n")
    with pytest.raises(UnsafeCodeError, match="evil.py"):
        NeuroSymbolicWorldModel.load(tmp_path / "rules")
    assert not marker.exists()


def test_workers_have_an_address_space_limit():
    pool = WorkerPool(size=1, memory_mb=64)
    from embodied.sandbox import SandboxedFunction

    rule = SandboxedFunction("def rule(s, a, g):\n    return len(str(s))", pool=pool)
    big = SandboxedFunction("def rule(s, a, g):\n    return len('%0100000000d' % 1)", pool=pool)  # 100 MB > 64 MB
    assert rule([1], {}, {}) == 3
    with pytest.raises(RuleMemoryError):
        big({}, {}, {})
    pool.close()
