"""Goals as data: a registered task name or ``START:GOAL``.

``START`` names an initial layout (``block-on-table`` or ``block-in-drawer``, each followed by
``-drawer-open`` or ``-drawer-closed``); ``GOAL`` joins predicates with ``+``, each optionally
prefixed by ``!`` for "false". ``stow``, ``retrieve`` and ``tidy`` are shorthands for the three
registered tasks, e.g. ``tidy`` = ``block-on-table-drawer-open:block_on_goal+drawer_closed+!holding_handle``.
New goals need no code: the planner searches the learned model for any conjunction of predicates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from envs.drawer_block import LAYOUTS, TASK_LAYOUTS

PREDICATES = (
    "gripper_empty",
    "holding_block",
    "holding_handle",
    "near_block",
    "near_handle",
    "over_drawer",
    "over_goal",
    "drawer_open",
    "drawer_closed",
    "block_in_drawer",
    "block_on_goal",
)
TASK_GOALS = {
    "stow": "block_in_drawer+drawer_closed+!holding_handle",
    "retrieve": "block_on_goal",
    "tidy": "block_on_goal+drawer_closed+!holding_handle",
}


@dataclass(frozen=True)
class Goal:
    name: str  # as given: a task name or the spec itself
    layout: str
    conditions: tuple[tuple[str, bool], ...]  # (predicate, required value)

    def satisfied(self, state: dict[str, bool]) -> bool:
        return all(bool(state.get(p)) == v for p, v in self.conditions)

    def text(self) -> str:
        return " and ".join(p.replace("_", " ") if v else "not " + p.replace("_", " ") for p, v in self.conditions)

    @property
    def base_task(self) -> str:
        """The registered task whose env this goal runs in (the layout overrides its start)."""
        return self.name if self.name in TASK_GOALS else "stow"


def parse_goal(spec: str) -> Goal:
    """A ``Goal`` from a task name or ``START:GOAL``; ``ValueError`` naming what is wrong."""
    spec = spec.strip()
    if spec in TASK_GOALS:
        return Goal(spec, TASK_LAYOUTS[spec], parse_conditions(TASK_GOALS[spec]))
    start, sep, goal = spec.partition(":")
    if not sep:
        raise ValueError(
            f"task {spec!r}: use one of {', '.join(TASK_GOALS)} or START:GOAL (e.g. "
            "block-on-table-drawer-closed:block_in_drawer+drawer_closed)"
        )
    if start not in LAYOUTS:
        raise ValueError(f"task {spec!r}: unknown start {start!r}; choose one of {', '.join(LAYOUTS)}")
    return Goal(spec, start, parse_conditions(goal))


def parse_conditions(goal: str) -> tuple[tuple[str, bool], ...]:
    conditions = []
    for term in goal.split("+"):
        term = term.strip()
        negated = term.startswith("!")
        name = term[1:] if negated else term
        if name not in PREDICATES:
            raise ValueError(f"goal term {term!r}: unknown predicate; predicates: {', '.join(PREDICATES)}")
        if any(p == name for p, _ in conditions):
            raise ValueError(f"goal names {name!r} twice")
        conditions.append((name, not negated))
    if not conditions:
        raise ValueError("empty goal")
    if not any(all(state[p] == v for p, v in conditions) for state in POSSIBLE_STATES):
        raise ValueError(
            f"goal {goal!r} asks for what no state is: the predicates' definitions exclude it "
            "(drawer_open and drawer_closed, gripper_empty and holding something, holding block and handle, "
            "a held block in the drawer or on the goal); the planner would search until its decision limit"
        )
    return tuple(conditions)


def definitionally_possible(state: dict[str, bool]) -> bool:
    """What the predicates' definitions (``envs/symbolic.py``) allow, geometry aside: the gripper is empty exactly
    when it holds nothing and holds one thing at a time (a grasp while holding does nothing), the drawer is not
    open and closed at once, and a held block is in neither place."""
    return (
        state["gripper_empty"] == (not (state["holding_block"] or state["holding_handle"]))
        and not (state["holding_block"] and state["holding_handle"])
        and not (state["drawer_open"] and state["drawer_closed"])
        and not (state["holding_block"] and (state["block_in_drawer"] or state["block_on_goal"]))
    )


POSSIBLE_STATES = [
    state
    for values in itertools.product((False, True), repeat=len(PREDICATES))
    if definitionally_possible(state := dict(zip(PREDICATES, values)))
]
