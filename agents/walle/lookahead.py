"""MPC with lookahead in the learned transition model (receding horizon), and exploration.

At each decision: breadth-first search over skill sequences in the learned model, from the
current predicate state to any state that satisfies the goal (each search layer is one sandbox
round trip); execute the first skill of the shortest plan; observe; add the outcome to the
model; search again. The LLM is the proposal prior: its ranking of the skills orders the
search, so among equally short plans its favourite wins, and it decides where the model knows
nothing. When no plan exists in the model, the agent explores: it goes (in the model) to the
nearest state with a skill never tried there, rarely used skills first and the LLM's order
breaking ties, so it gathers the transitions the model lacks instead of repeating itself.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from agents.walle.goals import Goal
from agents.walle.planner import execute_logged, prompt
from agents.walle.rules import Transition
from agents.walle.transition_model import TransitionModel, observe, state_key
from embodied.llm import choose
from envs.symbolic import SKILLS, SkillExecutor, predicates


@dataclass
class Timing:
    llm: float = 0.0
    search: float = 0.0  # including the sandbox calls it makes
    sandbox: float = 0.0


@dataclass
class LookaheadLog:
    success: bool
    transitions: list[Transition] = field(default_factory=list)
    triples: list[tuple[dict, str, dict]] = field(default_factory=list)
    decisions: int = 0
    planned: int = 0  # decisions taken from a plan (the rest explored)
    decision_seconds: list[float] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    frames: list = field(default_factory=list)


def path_to(parents: dict[str, tuple[str, str] | None], key: str) -> list[str]:
    """The skills from the search's root to state ``key``, following the parent links back."""
    plan = []
    while parents[key] is not None:
        key, step = parents[key]
        plan.append(step)
    return plan[::-1]


def search(
    model: TransitionModel,
    state: dict[str, bool],
    goal: Goal,
    order: list[str],
    max_depth: int = 16,
    max_states: int = 4096,
    timing: Timing | None = None,
) -> list[str] | None:
    """Shortest skill sequence that the model predicts reaches ``goal`` (None: none within the limits)."""
    if goal.satisfied(state):
        return []
    parents: dict[str, tuple[str, str] | None] = {state_key(state): None}
    frontier = [state]
    for _ in range(max_depth):
        queries = [(s, skill) for s in frontier for skill in order]
        start = time.perf_counter()
        nexts = model.predict_many(queries)
        if timing is not None:
            timing.sandbox += time.perf_counter() - start
        new_frontier = []
        for (s, skill), nxt in zip(queries, nexts):
            if nxt is None:
                continue
            key = state_key(nxt)
            if key in parents:
                continue
            parents[key] = (state_key(s), skill)
            if goal.satisfied(nxt):
                return path_to(parents, key)
            new_frontier.append(nxt)
        if not new_frontier or len(parents) > max_states:
            return None
        frontier = new_frontier
    return None


def search_novel(
    model: TransitionModel, state: dict[str, bool], order: list[str], max_depth: int = 8, max_states: int = 2048
) -> list[str] | None:
    """The shortest path (in the model) to a state where some skill was never tried, plus that skill.

    Exploration with lookahead: the agent goes to the nearest gap in its experience and fills
    it, rather than repeating moves whose outcome it already knows.
    """
    uses = Counter(skill for _, skill, _ in model.triples)
    order = sorted(order, key=lambda s: (uses[s], order.index(s)))  # rarely used skills first, then the LLM's order
    parents: dict[str, tuple[str, str] | None] = {state_key(state): None}
    frontier = [state]
    for _ in range(max_depth):
        for s in frontier:
            for skill in order:
                if model.tried(s, skill) == 0:
                    return path_to(parents, state_key(s)) + [skill]
        queries = [(s, skill) for s in frontier for skill in order]
        new_frontier = []
        for (s, skill), nxt in zip(queries, model.predict_many(queries)):
            if nxt is not None and state_key(nxt) not in parents:
                parents[state_key(nxt)] = (state_key(s), skill)
                new_frontier.append(nxt)
        if not new_frontier or len(parents) > max_states:
            return None
        frontier = new_frontier
    return None


def llm_order(llm, goal: Goal, state: dict[str, bool], history: list[tuple[str, bool]]) -> list[str]:
    """The skills, most likely first according to the LLM (its proposal prior)."""
    messages = prompt(goal, state, history, [], goal_text=goal.text())  # the goal as parsed, not the task's prose
    _, scores = choose(llm, messages, list(SKILLS))
    normalised = [s / max(len(c), 1) for s, c in zip(scores, SKILLS)]
    return [SKILLS[i] for i in sorted(range(len(SKILLS)), key=lambda i: -normalised[i])]


def run_episode(
    env,
    llm,
    goal: Goal,
    model: TransitionModel,
    seed: int,
    max_decisions: int = 20,
    explore: bool = True,
    record: bool = False,
) -> LookaheadLog:
    """One episode on the raw ``DrawerBlockEnv``: receding-horizon search, exploring where it finds no plan."""
    env.reset(seed=seed)
    executor = SkillExecutor(env, record=record)
    log, history = LookaheadLog(False), []
    order = list(SKILLS)
    for _ in range(max_decisions):
        state = predicates(env)
        if goal.satisfied(state):
            log.success = True
            break
        start, timing = time.perf_counter(), Timing()
        t0 = time.perf_counter()
        plan = search(model, state, goal, order, timing=timing)  # ties: the LLM's last ranking
        timing.search = time.perf_counter() - t0
        if not plan:  # the model knows no way: ask the LLM, the prior where the model knows nothing
            t0 = time.perf_counter()
            order = llm_order(llm, goal, state, history)
            timing.llm = time.perf_counter() - t0
        if plan:
            skill = plan[0]
            log.planned += 1
        elif explore:
            path = search_novel(model, state, order)
            skill = path[0] if path else min(order, key=lambda s: (model.tried(state, s), order.index(s)))
        else:
            skill = order[0]
        log.decision_seconds.append(time.perf_counter() - start)
        log.timings.append(timing)
        predicted = model.predict_many([(state, skill)])[0]
        after, _ = execute_logged(env, executor, log, state, skill, history)
        observe(model, state, skill, after, predicted)
    else:
        log.success = goal.satisfied(predicates(env))
    return log
