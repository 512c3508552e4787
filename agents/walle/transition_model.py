"""WALL-E's learned transition model: what each skill does to the predicates, from logged transitions.

Two layers, both learned from ``(state, skill, next state)`` triples:
- **effect rules** (code): per skill, one sandboxed function ``effects_<skill>(state, action,
  graphs) -> next state``. For every predicate it is the simplest hypothesis that best fits the
  data, tried in order of simplicity: "unchanged", "becomes v", then "if q is w then (unchanged |
  becomes v) else (unchanged | becomes v)". They generalise to states never seen. The code is
  readable, saved as ``.py`` files, and runs only in the sandbox, like any rule an LLM writes.
- **observed outcomes** (knowledge-graph facts, plain data): for a (state, skill) already tried,
  the next state seen most often. They override the rules, so one surprising outcome is enough
  for the planner to stop repeating a move the rules mispredict.

``predict_many`` answers a whole search layer in one sandbox round trip.
"""

from __future__ import annotations

import json
import re

import numpy as np
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from agents.walle.rules import Rule, read_rule_file
from embodied.atomic import atomic_path
from embodied.safe_io import load_json
from embodied.sandbox import SandboxError, UnsafeCodeError, run_batch

Hypothesis = tuple  # ("same",) | ("const", v) | ("if", ((q, w), ...), then, else)


def state_key(state: dict[str, bool]) -> str:
    return ",".join(sorted(k for k, v in state.items() if v))


def _predict(h: Hypothesis, before: dict, p: str) -> bool:
    if h[0] == "same":
        return bool(before.get(p))
    if h[0] == "const":
        return h[1]
    holds = all(bool(before.get(q)) == w for q, w in h[1])
    return _predict(h[2] if holds else h[3], before, p)


LEAVES: tuple[Hypothesis, ...] = (("same",), ("const", True), ("const", False))


def fit_predicate(pairs: Sequence[tuple[dict, bool]], p: str, predicates: Sequence[str]) -> Hypothesis:
    """The hypothesis with the most correct predictions of ``after[p]``; among equals, the simplest.

    Hypotheses, simplest first: unchanged / becomes v; "if q is w then A else B"; "if q1 is w1
    and q2 is w2 then A else B" (A, B: unchanged or becomes True/False). Scored on all pairs at
    once with NumPy.
    """
    if not pairs:
        return ("same",)
    index = {q: i for i, q in enumerate(predicates)}
    before = np.array([[bool(b.get(q)) for q in predicates] for b, _ in pairs], dtype=bool)
    target = np.array([after for _, after in pairs], dtype=bool)
    same = before[:, index[p]] if p in index else np.zeros(len(pairs), bool)
    leaf_pred = {
        ("same",): same,
        ("const", True): np.ones(len(pairs), bool),
        ("const", False): np.zeros(len(pairs), bool),
    }
    leaf_ok = {h: (v == target) for h, v in leaf_pred.items()}
    best, best_score = ("same",), int(leaf_ok[("same",)].sum())
    for h in LEAVES[1:]:
        if int(leaf_ok[h].sum()) > best_score:
            best, best_score = h, int(leaf_ok[h].sum())
    literals = [(q, w) for q in predicates for w in (True, False)]
    conditions = [((lit,), (before[:, index[lit[0]]] == lit[1])) for lit in literals]
    conditions += [
        ((a, b), (before[:, index[a[0]]] == a[1]) & (before[:, index[b[0]]] == b[1]))
        for i, a in enumerate(literals)
        for b in literals[i + 1 :]
        if a[0] != b[0]
    ]
    for literals_, mask in conditions:
        for then in LEAVES:
            inside = int((leaf_ok[then] & mask).sum())
            for other in LEAVES:
                if other == then:
                    continue
                score = inside + int((leaf_ok[other] & ~mask).sum())
                if score > best_score:
                    best, best_score = ("if", literals_, then, other), score
    return best


def _leaf_code(h: Hypothesis, p: str, indent: str) -> list[str]:
    return [] if h[0] == "same" else [f"{indent}new[{p!r}] = {h[1]!r}"]


def rule_source(skill: str, hypotheses: dict[str, Hypothesis], count: int) -> tuple[str, str]:
    """(function name, readable code) of the effect rule of ``skill``."""
    name = "effects_" + re.sub(r"\W+", "_", skill).strip("_")
    lines = [f"def {name}(state, action, graphs):", "    new = dict(state)"]
    for p, h in sorted(hypotheses.items()):
        if h[0] == "if":
            then, other = _leaf_code(h[2], p, "        "), _leaf_code(h[3], p, "        ")
            test = " and ".join(f"bool(state.get({q!r})) == {w!r}" for q, w in h[1])
            lines.append(f"    if {test}:")
            lines += then or ["        pass"]
            if other:
                lines += ["    else:"] + other
        else:
            lines += _leaf_code(h, p, "    ")
    lines.append("    return new")
    return name, "\n".join(lines) + "\n"


class TransitionModel:
    """Effect rules (sandboxed code) + observed outcomes (facts). Unknown skills predict ``None``."""

    def __init__(self, rules: dict[str, Rule] | None = None, observed: dict | None = None, triples: list | None = None):
        self.rules: dict[str, Rule] = dict(rules or {})  # skill -> effect rule
        self.triples: list[tuple[dict, str, dict]] = list(triples or [])  # what the rules were fit on
        self.observed: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for key, by_skill in (observed or {}).items():
            for skill, outcomes in by_skill.items():
                self.observed[key][skill].update(outcomes)

    @classmethod
    def learn(cls, triples: Sequence[tuple[dict, str, dict]]) -> "TransitionModel":
        """Fit every skill seen in ``triples`` ``(state, skill, next_state)``."""
        observed: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for before, skill, after in triples:
            observed[state_key(before)][skill][state_key(after)] += 1
        model = cls(None, observed, list(triples))
        for skill in sorted({s for _, s, _ in triples}):
            model.refit(skill)
        return model

    def refit(self, skill: str) -> None:
        """Fit the effect rule of ``skill`` to every transition of it seen so far."""
        pairs = [(b, a) for b, s, a in self.triples if s == skill]
        if not pairs:
            return
        predicates = sorted({k for b, a in pairs for k in (*b, *a)})
        hypotheses = {p: fit_predicate([(b, bool(a.get(p))) for b, a in pairs], p, predicates) for p in predicates}
        name, source = rule_source(skill, hypotheses, len(pairs))
        self.rules[skill] = Rule.from_source(name, source, f"what {skill} does (learned from {len(pairs)} transitions)")

    def tried(self, state: dict[str, bool], skill: str) -> int:
        return sum(self.observed.get(state_key(state), {}).get(skill, Counter()).values())

    def predict_many(self, queries: Sequence[tuple[dict, str]]) -> list[dict[str, bool] | None]:
        """The next state for each (state, skill): an observed outcome, else the skill's rule, else None."""
        out: list[dict | None] = [None] * len(queries)
        to_run = []
        for i, (state, skill) in enumerate(queries):
            seen = self.observed.get(state_key(state), {}).get(skill)
            if seen:
                after = set(filter(None, seen.most_common(1)[0][0].split(",")))
                out[i] = {k: k in after for k in state}
            elif skill in self.rules:
                to_run.append(i)
        if to_run:
            outcomes = run_batch(
                [(self.rules[queries[i][1]].function, (queries[i][0], {"skill": queries[i][1]}, {})) for i in to_run]
            )
            for i, outcome in zip(to_run, outcomes):
                if outcome.error is None and isinstance(outcome.value, dict):
                    out[i] = {k: bool(outcome.value.get(k, False)) for k in queries[i][0]}
        return out

    def accuracy(self, triples: Sequence[tuple[dict, str, dict]], rules_only: bool = False) -> float:
        """Fraction of ``triples`` whose next state is predicted exactly."""
        model = TransitionModel(self.rules) if rules_only else self
        predicted = model.predict_many([(b, s) for b, s, _ in triples])
        return sum(p == {k: bool(a.get(k)) for k in b} for p, (b, s, a) in zip(predicted, triples)) / max(
            len(triples), 1
        )

    def save(self, directory: str | Path) -> None:
        """Each effect rule as a readable ``.py``; the observed outcomes as ``observed.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for skill, rule in self.rules.items():
            with atomic_path(directory / f"{rule.name}.py") as tmp:
                tmp.write_text(f"# {rule.description}\n# skill: {skill}\n{rule.source}")
        with atomic_path(directory / "observed.json") as tmp:
            tmp.write_text(
                json.dumps({k: {s: dict(c) for s, c in v.items()} for k, v in self.observed.items()}, indent=1)
            )

    @classmethod
    def load(cls, directory: str | Path) -> "TransitionModel":
        directory = Path(directory)
        rules = {}
        for path in sorted(directory.glob("effects_*.py")):
            lines = read_rule_file(path).splitlines()
            skill = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("# skill:")), None)
            if skill is None:
                raise UnsafeCodeError(f"{path} does not name its skill (# skill: ...)")
            source = "\n".join(line for line in lines if not line.startswith("#")) + "\n"
            description = lines[0].lstrip("# ") if lines and lines[0].startswith("#") else ""
            try:
                rules[skill] = Rule.from_source(path.stem, source, description)  # checked, never run here
            except UnsafeCodeError as err:
                raise UnsafeCodeError(f"rule file {path} refused: {err}") from None
        observed = {}
        if (directory / "observed.json").exists():
            observed = load_json(directory / "observed.json", what="observed outcomes")
            if not is_observed_outcomes(observed):
                raise ValueError(f"{directory / 'observed.json'} is not a JSON object of observed outcomes")
        return cls(rules, observed)


def is_observed_outcomes(data) -> bool:
    """``observed.json``'s shape: state key -> skill -> next-state key -> a count."""
    return isinstance(data, dict) and all(
        isinstance(by_skill, dict)
        and all(
            isinstance(outcomes, dict) and all(type(n) is int and n >= 0 for n in outcomes.values())
            for outcomes in by_skill.values()
        )
        for by_skill in data.values()
    )


__all__ = ["SandboxError", "TransitionModel", "fit_predicate", "rule_source", "state_key"]


def observe(model: TransitionModel, before: dict, skill: str, after: dict, predicted: dict | None) -> None:
    """Add one outcome to the observed facts at once; refit the skill's rule when it mispredicted."""
    model.observed[state_key(before)][skill][state_key(after)] += 1
    model.triples.append((before, skill, after))
    if predicted != after:
        model.refit(skill)


def rule_from_llm(llm, skill: str, triples: Sequence[tuple[dict, str, dict]], max_examples: int = 12) -> Rule | None:
    """Ask a (capable, served) LLM to write the effect rule of ``skill`` from logged examples.

    The reply's code goes through the same checks as every rule (whitelist in this process,
    execution only in the sandbox) and is kept only if it predicts the logged transitions of
    ``skill`` at least as well as the fitted rule would. Returns None when the LLM cannot
    (no code, refused code, or worse predictions).
    """
    examples = [(b, a) for b, s, a in triples if s == skill][:max_examples]
    if not examples:
        return None
    lines = [
        f"Write a Python function effects(state, action, graphs) that returns the predicates after the "
        f"robot skill {skill}, as a new dict. Use only dict(state), if, comparisons and assignments.",
        "Examples (before -> after, true predicates listed):",
    ]
    lines += [f"- {state_key(b) or 'nothing'} -> {state_key(a) or 'nothing'}" for b, a in examples]
    try:
        reply = llm.generate([{"role": "user", "content": "\n".join(lines)}], max_tokens=400)
    except Exception:  # an unreachable or broken server: fall back to the fitted rule
        return None
    match = re.search(r"```(?:python)?\n(.*?)```", reply, re.S)
    source = (match.group(1) if match else reply).strip() + "\n"
    name = "effects_" + re.sub(r"\W+", "_", skill).strip("_")
    source = re.sub(r"^def \w+\(", f"def {name}(", source, count=1)
    try:
        rule = Rule.from_source(name, source, f"what {skill} does (written by the LLM)")
    except UnsafeCodeError:
        return None
    skill_triples = [t for t in triples if t[1] == skill]
    fitted = TransitionModel.learn(skill_triples)
    written = TransitionModel({skill: rule})
    if written.accuracy(skill_triples) < fitted.accuracy(skill_triples, rules_only=True):
        return None
    return rule
