"""Model-predictive control with an LLM proposer and the world model as the checker (WALL-E).

At each decision the LLM chooses the next skill among the candidates by log-likelihood given the
goal, the scene and the history; the world model accepts or rejects it with feedback and a
suggestion, which go back into the prompt; after ``replan_limit`` rejections the last proposal is
executed anyway. Without a world model this is the "LLM alone" baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agents.walle.goals import Goal, parse_goal
from agents.walle.rules import Transition
from agents.walle.world_model import NeuroSymbolicWorldModel, scene_graph
from embodied.llm import choose
from envs.symbolic import GOALS, SKILLS, SkillExecutor, describe, predicates


@dataclass
class EpisodeLog:
    success: bool
    transitions: list[Transition] = field(default_factory=list)
    decisions: int = 0
    rejections: int = 0
    decision_seconds: list[float] = field(default_factory=list)
    frames: list = field(default_factory=list)
    triples: list[tuple[dict, str, dict]] = field(default_factory=list)  # (state, skill, next state)


def prompt(
    goal: Goal, state: dict[str, bool], history: list[tuple[str, bool]], notes: list[str], goal_text: str | None = None
) -> list[dict]:
    """The chat that asks for the next skill: goal (``goal_text`` or the task's description), scene, facts,
    the last six skills and how they went, the world model's warnings."""
    goal_text = goal_text or GOALS.get(goal.name, goal.text())
    lines = [
        f"Goal: {goal_text}.",
        f"Scene: {'; '.join(' '.join(t) for t in scene_graph(state))}.",
        f"Facts: {describe(state)}.",
    ]
    if history:
        lines.append("Done so far: " + ", ".join(f"{s} ({'ok' if ok else 'failed'})" for s, ok in history[-6:]) + ".")
    lines += [f"Warning: {n}" for n in notes]
    lines.append(f"Skills: {', '.join(SKILLS)}. Answer with the next skill.")
    return [
        {"role": "system", "content": "You control a robot gripper with skills."},
        {"role": "user", "content": "\n".join(lines)},
    ]


def execute_logged(
    env, executor: SkillExecutor, log, state: dict[str, bool], skill: str, history: list[tuple[str, bool]]
) -> tuple[dict[str, bool], bool]:
    """Run ``skill``, log the transition (``log.transitions``, ``triples``, ``frames``, ``decisions``).

    As in text games ("nothing happens"), a skill that changed nothing symbolic did not succeed.
    """
    result = executor.execute(skill)
    log.frames += result.frames
    after = predicates(env)
    effective = result.success and after != state
    log.transitions.append(Transition(state, {"skill": skill, "args": []}, effective))
    log.triples.append((state, skill, after))
    history.append((skill, effective))
    log.decisions += 1
    return after, effective


def run_episode(
    env,
    llm,
    task: str | Goal,
    world_model: NeuroSymbolicWorldModel | None,
    seed: int,
    max_decisions: int = 20,
    replan_limit: int = 5,
    record: bool = False,
) -> EpisodeLog:
    """One episode on the raw ``DrawerBlockEnv`` ``env``; logs every executed transition.

    ``task``: a task name or goal spec (``agents/walle/goals.py``), or a parsed ``Goal``.
    """
    goal = task if isinstance(task, Goal) else parse_goal(task)
    env.reset(seed=seed)
    executor = SkillExecutor(env, record=record)
    log, history = EpisodeLog(False), []
    for _ in range(max_decisions):
        state = predicates(env)
        start = time.perf_counter()
        notes, rejected, skill = [], set(), None
        for _ in range(replan_limit + 1):
            candidates = [s for s in SKILLS if s not in rejected] or list(SKILLS)
            skill = candidates[choose(llm, prompt(goal, state, history, notes), candidates)[0]]
            if world_model is None:
                break
            ok, feedback, suggestion = world_model.check(state, skill)
            if ok:
                break
            log.rejections += 1
            rejected.add(skill)
            notes.append(f"{skill} would fail: {feedback}. {suggestion}.")
        log.decision_seconds.append(time.perf_counter() - start)
        after, effective = execute_logged(env, executor, log, state, skill, history)
        if world_model is not None:
            world_model.knowledge.update(state, skill, after, effective)
        if goal.satisfied(after):
            log.success = True
            break
    return log
