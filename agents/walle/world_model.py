"""WALL-E's neurosymbolic world model: action rules (checked code), a knowledge graph learned from
what skills achieved, and a scene graph built by program from the predicates."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from agents.walle.rules import Rule, Transition, checked_prediction, read_rule_file, rule_args
from embodied.atomic import atomic_path
from embodied.sandbox import SandboxError, UnsafeCodeError, run_batch


def scene_graph(state: dict[str, bool]) -> list[tuple[str, str, str]]:
    """(subject, relation, object) triples from the drawer-block predicates."""
    triples = []
    if state.get("holding_block"):
        triples.append(("gripper", "holds", "block"))
    if state.get("holding_handle"):
        triples.append(("gripper", "holds", "handle"))
    if state.get("block_in_drawer"):
        triples.append(("block", "inside", "drawer"))
    if state.get("block_on_goal"):
        triples.append(("block", "on", "goal"))
    triples.append(
        ("drawer", "is", "open" if state.get("drawer_open") else "closed" if state.get("drawer_closed") else "ajar")
    )
    for name in ("block", "handle"):
        if state.get(f"near_{name}"):
            triples.append(("gripper", "near", name))
    return triples


class KnowledgeGraph:
    """What each skill achieved when it succeeded: skill -> predicates it made true (with counts)."""

    def __init__(self):
        self.achieves: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def update(self, before: dict[str, bool], skill: str, after: dict[str, bool], success: bool) -> None:
        if success:
            for key, value in after.items():
                if value and not before.get(key, False):
                    self.achieves[skill][key] += 1

    def restore(self, achieves: dict) -> None:
        """Add counts as ``checkpoint`` wrote them (skill -> predicate -> count), checked: they come from a file."""
        if not isinstance(achieves, dict):
            raise ValueError(f"the knowledge graph is {type(achieves).__name__}, not skill -> predicate -> count")
        for skill, effects in achieves.items():
            if not isinstance(skill, str) or not isinstance(effects, dict):
                raise ValueError(f"the knowledge graph's entry {skill!r} is not a skill's effects")
            for key, count in effects.items():
                if not isinstance(key, str) or type(count) is not int or count < 0:
                    raise ValueError(f"the knowledge graph counts {key!r} after {skill!r} as {count!r}")
            self.achieves[skill].update(effects)

    def skills_achieving(self, predicate: str, value: bool = True) -> list[str]:
        """Skills seen to make ``predicate`` true (or, for ``value=False``, to make its negation true)."""
        if value:
            return sorted(
                (s for s, eff in self.achieves.items() if eff.get(predicate)),
                key=lambda s: -self.achieves[s][predicate],
            )
        opposite = {"gripper_empty": "holding_block", "drawer_closed": "drawer_open", "drawer_open": "drawer_closed"}
        return (
            self.skills_achieving(opposite.get(predicate, ""), True)
            if predicate in opposite
            else (["release()"] if predicate.startswith("holding_") else [])
        )


class NeuroSymbolicWorldModel:
    def __init__(self, rules: list[Rule] | None = None):
        self.rules = list(rules or [])
        self.knowledge = KnowledgeGraph()

    def check(self, state: dict[str, bool], skill: str) -> tuple[bool, str, str]:
        """(predicted success, feedback, suggestion) for executing ``skill`` in ``state``."""
        transition = Transition(state, {"skill": skill, "args": []}, True)
        if not self.rules:
            return True, "", ""
        outcomes = run_batch([(rule.function, rule_args(transition)) for rule in self.rules])  # one round trip
        for rule, outcome in zip(self.rules, outcomes):
            try:
                feedback, success, suggestion = checked_prediction(rule, outcome)
            except SandboxError:
                continue  # a misbehaving rule says nothing
            if not success:
                return False, feedback, self._concrete(suggestion)
        return True, "", ""

    def _concrete(self, suggestion: str) -> str:
        """Turn "make [not] P hold before S" into skills the knowledge graph says achieve it."""
        words = suggestion.split()
        if len(words) >= 2 and words[0] == "make":
            negate = words[1] == "not"
            predicate = words[2] if negate else words[1]
            skills = self.knowledge.skills_achieving(predicate, not negate)
            if skills:
                return f"{suggestion}: try {skills[0]}"
        return suggestion

    def save(self, directory: str | Path) -> None:
        """Each rule as a readable .py file, plus an index."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.py"):
            old.unlink()
        for rule in self.rules:
            with atomic_path(directory / f"{rule.name}.py") as tmp:
                tmp.write_text(f"# {rule.description}\n{rule.source}")

    @classmethod
    def load(cls, directory: str | Path) -> "NeuroSymbolicWorldModel":
        rules = []
        for path in sorted(Path(directory).glob("*.py")):
            text = read_rule_file(path)
            description = text.splitlines()[0].lstrip("# ") if text.startswith("#") else ""
            source = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
            try:
                rules.append(Rule.from_source(path.stem, source, description))  # checked here, never run here
            except UnsafeCodeError as err:
                raise UnsafeCodeError(f"rule file {path} refused: {err}") from None
        return cls(rules)
