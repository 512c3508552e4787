import itertools

import pytest

from agents.walle.rules import (
    Rule,
    Transition,
    UnsafeCodeError,
    consistent,
    greedy_cover,
    learn_rules,
    mispredicted,
    world_model_predicts_success,
)


def _log():
    """Transitions from a world where grasp fails unless the gripper is open and the hand is near
    the block, and open_drawer fails while holding something."""
    out = []
    for gripper_open, near, holding, skill in itertools.product(
        [True, False], [True, False], [True, False], ["grasp", "open_drawer", "move_to"]
    ):
        state = {"gripper_open": gripper_open, "near_block": near, "holding": holding}
        if skill == "grasp":
            success = gripper_open and near
        elif skill == "open_drawer":
            success = not holding
        else:
            success = True
        out.append(Transition(state, {"skill": skill, "args": []}, success))
    return out


def test_learning_recovers_the_planted_preconditions():
    log = _log()
    assert mispredicted([], log), "with no rules every failure is mispredicted"
    rules = learn_rules([], log)
    names = {r.name for r in rules}
    assert names == {
        "grasp_fails_when_not_gripper_open",
        "grasp_fails_when_not_near_block",
        "open_drawer_fails_when_holding",
    }
    assert mispredicted(rules, log) == []
    assert learn_rules(rules, log) == rules, "nothing left to learn"


def test_rules_that_contradict_successes_or_crash_are_dropped():
    log = _log()
    wrong = Rule.from_source(
        "wrong",
        "def wrong(state, action, graphs):\n"
        "    if action.get('skill') == 'move_to':\n        return ('no', False, '')\n"
        "    return ('', True, '')\n",
    )
    crashing = Rule.from_source("crashing", "def crashing(state, action, graphs):\n    return state['missing']\n")
    assert not consistent(wrong, log) and not consistent(crashing, log)
    kept = learn_rules([wrong, crashing], log)
    assert {r.name for r in kept}.isdisjoint({"wrong", "crashing"})
    assert world_model_predicts_success(
        kept, Transition({"gripper_open": True, "near_block": True, "holding": False}, {"skill": "grasp"}, True)
    )


def test_greedy_coverage_picks_the_minimal_set_on_a_constructed_case():
    failures = [Transition({"i": i}, {"skill": "x"}, False) for i in range(6)]

    def covering(name, items):
        return Rule.from_source(
            name,
            f"def {name}(state, action, graphs):\n"
            f"    if state.get('i') in {sorted(items)!r}:\n        return ('f', False, '')\n"
            f"    return ('', True, '')\n",
        )

    # the two-rule cover {0,1,2} + {3,4,5} is optimal; smaller pieces would need three or more
    rules = [
        covering("a", {0, 1}),
        covering("b", {0, 1, 2}),
        covering("c", {3, 4, 5}),
        covering("d", {2, 3}),
        covering("e", {4}),
    ]
    assert [r.name for r in greedy_cover(rules, failures)] == ["b", "c"]


def test_generated_rules_go_through_the_sandbox():
    with pytest.raises(UnsafeCodeError):
        Rule.from_source("evil", "def evil(state, action, graphs):\n    import os\n    return ('', True, '')\n")
