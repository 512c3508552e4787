"""Action rules of WALL-E's neurosymbolic world model, learned from logged transitions.

A rule is code ``rule(state, action, graphs) -> (feedback, success, suggestion)`` that says when
an action *fails*; it runs only through ``embodied.sandbox``. Learning (WALL-E 2.0, Sec. 3):
find transitions the current rules mispredict, propose candidate rules for them, drop candidates
that crash or predict failure on a transition that actually succeeded, and keep the smallest set
that explains the failures by greedy maximum coverage.

Candidates come from ``propose_precondition_rules``: every "skill S fails when predicate P is
(not) v" over the logged predicates, rendered as readable code. A large LLM could also write
rules freely (``from_source``); a 135M model cannot write code reliably, but it can rank
candidates by log-likelihood, which ``rank_with_llm`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from embodied.sandbox import SandboxBadResult, SandboxError, UnsafeCodeError, compile_function, raise_for, run_batch
from embodied.sandbox.policy import MAX_SOURCE_CHARS
from embodied.errors import EmbodiedError
from embodied.safe_io import read_text


def read_rule_file(path: Path) -> str:
    """The text of a saved rule file; one that is too large to be a rule, not a regular file (a link to a device)
    or not UTF-8 is refused by name before it is read."""
    try:
        return read_text(path, 4 * MAX_SOURCE_CHARS, "rule file")  # comments included; the code is checked again
    except EmbodiedError as err:
        raise UnsafeCodeError(str(err)) from None


@dataclass
class Transition:
    """``state``: predicate name -> bool; ``action``: {"skill": name, "args": [...]}; ``success``: what happened."""

    state: dict[str, Any]
    action: dict[str, Any]
    success: bool


@dataclass
class Rule:
    name: str
    source: str
    description: str = ""
    function: Any = field(default=None, repr=False)

    @classmethod
    def from_source(cls, name: str, source: str, description: str = "") -> "Rule":
        """Check (in this process, without running it); raises ``UnsafeCodeError`` outside the whitelist.

        The code itself only ever runs in a sandbox worker process.
        """
        return cls(name, source, description, compile_function(source))

    def predict(self, transition: Transition, graphs: dict | None = None) -> tuple[str, bool, str]:
        """(feedback, success, suggestion); raises a ``SandboxError`` if the code misbehaves."""
        return checked_prediction(self, run_batch([(self.function, rule_args(transition, graphs))])[0])


def rule_args(transition: Transition, graphs: dict | None = None) -> tuple:
    return (transition.state, transition.action, graphs or {})


def checked_prediction(rule: Rule, outcome) -> tuple[str, bool, str]:
    out = raise_for(outcome)
    if not (
        isinstance(out, tuple)
        and len(out) == 3
        and isinstance(out[1], bool)
        and isinstance(out[0], str)
        and isinstance(out[2], str)
    ):
        raise SandboxBadResult(f"rule {rule.name} returned {str(out)[:100]}, not (feedback, success, suggestion)")
    return out


def failure_matrix(
    rules: Sequence[Rule], transitions: Sequence[Transition], graphs: dict | None = None
) -> list[list[bool | None]]:
    """``[r][t]``: True when rule r predicts that transition t fails, None when it misbehaved.

    All rules on all transitions in one sandbox round trip.
    """
    if not rules or not transitions:
        return [[] for _ in rules]
    outcomes = run_batch([(r.function, rule_args(t, graphs)) for r in rules for t in transitions])
    matrix = []
    for i, rule in enumerate(rules):
        row = []
        for j in range(len(transitions)):
            try:
                row.append(not checked_prediction(rule, outcomes[i * len(transitions) + j])[1])
            except SandboxError:
                row.append(None)
        matrix.append(row)
    return matrix


def predicts_failure(rule: Rule, transition: Transition) -> bool | None:
    """True/False, or None when the rule crashed or ran too long (such a rule is dropped)."""
    return failure_matrix([rule], [transition])[0][0]


def world_model_predicts_success(rules: Sequence[Rule], transition: Transition) -> bool:
    """The action succeeds unless some rule says it fails."""
    return not any(row[0] for row in failure_matrix(rules, [transition]))


def mispredicted(rules: Sequence[Rule], transitions: Sequence[Transition]) -> list[Transition]:
    matrix = failure_matrix(rules, transitions)
    return [t for j, t in enumerate(transitions) if (not any(row[j] for row in matrix)) != t.success]


def propose_precondition_rules(transitions: Sequence[Transition]) -> list[Rule]:
    """One candidate per (skill, predicate, value): "skill fails when predicate == value"."""
    skills = sorted({t.action["skill"] for t in transitions})
    predicates = sorted({k for t in transitions for k, v in t.state.items() if isinstance(v, bool)})
    rules = []
    for skill in skills:
        for pred in predicates:
            for value in (True, False):
                name = re.sub(r"\W+", "_", f"{skill}_fails_when_{'' if value else 'not_'}{pred}").replace("__", "_")
                need = "not " if value else ""
                source = (
                    f"def {name}(state, action, graphs):\n"
                    f"    if action.get('skill') == {skill!r} and state.get({pred!r}) == {value!r}:\n"
                    f"        return ('{skill} failed because {pred} is {value}', False, "
                    f"'make {need}{pred} hold before {skill}')\n"
                    f"    return ('', True, '')\n"
                )
                rules.append(Rule.from_source(name, source, f"{skill} requires {pred} == {not value}"))
    return rules


def consistent(rule: Rule, transitions: Sequence[Transition]) -> bool:
    """A rule survives if it never crashes and never predicts failure for an observed success."""
    return consistent_row(failure_matrix([rule], transitions)[0], transitions)


def consistent_row(row: Sequence[bool | None], transitions: Sequence[Transition]) -> bool:
    return all(verdict is not None and not (verdict and t.success) for verdict, t in zip(row, transitions))


def greedy_cover(rules: Sequence[Rule], failures: Sequence[Transition]) -> list[Rule]:
    """Smallest set (greedy maximum coverage) of rules whose failure predictions cover ``failures``.

    Among rules covering equally many, the one earlier in ``rules`` wins, so an LLM's ranking of
    the candidates (``rank_with_llm``) decides between explanations the data cannot tell apart.
    """
    matrix = failure_matrix(rules, failures)
    covers = {r.name: {i for i, v in enumerate(row) if v} for r, row in zip(rules, matrix)}
    remaining, chosen = set(range(len(failures))), []
    by_name = {r.name: r for r in rules}
    while remaining:
        best = max(covers, key=lambda n: len(covers[n] & remaining), default=None)  # ties: the earlier candidate
        if best is None or not covers[best] & remaining:
            break  # what is left no candidate explains
        chosen.append(by_name[best])
        remaining -= covers.pop(best)
    return chosen


def learn_rules(
    current: Sequence[Rule], transitions: Sequence[Transition], candidates: Sequence[Rule] | None = None
) -> list[Rule]:
    """One learning iteration: keep consistent current rules, add the fewest new ones that explain
    the failures still mispredicted."""
    kept = [r for r, row in zip(current, failure_matrix(current, transitions)) if consistent_row(row, transitions)]
    failures = [t for t in mispredicted(kept, transitions) if not t.success]
    if not failures:
        return kept
    pool = [
        r
        for r in (candidates if candidates is not None else propose_precondition_rules(transitions))
        if r.name not in {k.name for k in kept}
    ]
    pool = [r for r, row in zip(pool, failure_matrix(pool, transitions)) if consistent_row(row, transitions)]
    return kept + greedy_cover(pool, failures)


def rank_with_llm(llm, rules: Sequence[Rule], context: str) -> list[Rule]:
    """Order candidate rules by how likely the LLM finds their description (deterministic)."""
    if not rules:
        return []
    messages = [
        {"role": "system", "content": "You know how robot manipulation skills can fail."},
        {"role": "user", "content": f"{context}\nWhich statement is true?"},
    ]
    scores = llm.score(messages, [r.description for r in rules])
    order = sorted(range(len(rules)), key=lambda i: -scores[i] / max(len(rules[i].description), 1))
    return [rules[i] for i in order]


__all__ = [
    "Rule",
    "Transition",
    "UnsafeCodeError",
    "consistent",
    "failure_matrix",
    "greedy_cover",
    "learn_rules",
    "mispredicted",
    "propose_precondition_rules",
    "rank_with_llm",
    "world_model_predicts_success",
]
