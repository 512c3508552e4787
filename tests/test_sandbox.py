import time

import pytest

from embodied.sandbox import RuleRuntimeError, RuleTimeout, UnsafeCodeError, compile_function

GOOD = '''
def rule(state, action, graphs):
    if action.get("skill") == "grasp" and not state.get("gripper_open"):
        return ("the gripper is closed", False, "release first")
    holding = [o for o, v in state.get("grasped", {}).items() if v]
    return (f"holding {len(holding)}", True, "")
'''


def test_a_well_formed_rule_runs():
    rule = compile_function(GOOD)
    assert rule({"gripper_open": False}, {"skill": "grasp"}, {}) == ("the gripper is closed", False, "release first")
    assert rule({"gripper_open": True, "grasped": {"a": True, "b": False}}, {"skill": "grasp"}, {})[1] is True


@pytest.mark.parametrize("source, message", [
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
    ("def rule(s, a, g):\n    return 'a' * 10**10", "Mult"),
    ("def rule(s, a, g):\n    return g.system('rm -rf /')", "attribute 'system'"),
    ("def rule(s, a, g)\n    return 1", "syntax error"),
])
def test_hostile_code_is_refused_before_running(source, message):
    with pytest.raises(UnsafeCodeError, match=message):
        compile_function(source)


def test_runaway_loops_are_stopped_by_the_budget():
    source = '''
def rule(state, action, graphs):
    total = 0
    for a in state:
        for b in state:
            for c in state:
                total = total + 1
    return ("", True, "")
'''
    rule = compile_function(source, max_ops=50_000, seconds=5.0)
    start = time.perf_counter()
    with pytest.raises(RuleTimeout):
        rule(list(range(1000)), {}, {})
    assert time.perf_counter() - start < 5.0
    assert rule(list(range(3)), {}, {}) == ("", True, "")


def test_time_limit_applies_too():
    source = '''
def rule(state, action, graphs):
    n = 0
    for x in state:
        n = n + 1
    return n
'''
    rule = compile_function(source, max_ops=10**12, seconds=0.05)
    with pytest.raises(RuleTimeout):
        rule(range(10**9), {}, {})


def test_errors_inside_the_rule_are_wrapped():
    rule = compile_function("def rule(s, a, g):\n    return s['missing']")
    with pytest.raises(RuleRuntimeError, match="KeyError"):
        rule({}, {}, {})


def test_builtins_are_not_reachable():
    rule = compile_function("def rule(s, a, g):\n    return len(s)")
    assert rule([1, 2], {}, {}) == 2
    assert "open" not in rule.__closure__[0].cell_contents.__globals__["__builtins__"]
