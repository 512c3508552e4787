"""WALL-E on the drawer-block tasks: learn a world model from experience, plan with it.

    embodied train walle                                   # lookahead MPC, embedded SmolLM2
    embodied train walle --planner rules                   # one-step MPC with failure rules (WALL-E 2.0's)
    embodied train walle --planner llm                     # the LLM alone
    embodied train walle --tasks "block-in-drawer-drawer-open:block_on_goal+drawer_closed" \\
        --world-model runs/walle-lookahead-stow+retrieve+tidy-s0 --iterations 0     # a new goal, no learning
    embodied train walle --llm http://127.0.0.1:8000 --llm-model NAME

Tasks are goals as data (``agents/walle/goals.py``): ``stow``, ``retrieve``, ``tidy`` or
``START:GOAL``. Iteration 0 plans with the model given (empty, or ``--world-model``); after each
iteration everything logged so far is learned from: the transition model (``lookahead``: effect
rules as sandboxed code + observed outcomes) or failure rules (``rules``: WALL-E 2.0's, ranked by
the LLM). ``model/iter_<k>/`` and ``rules/iter_<k>/`` hold them as readable files;
``results.json`` success per task and iteration and the decision latency split into LLM
scoring, search and sandbox calls; ``summary.json`` the last iteration's per-task success.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.walle import lookahead, planner
from agents.walle.goals import Goal, parse_goal
from agents.walle.rules import Rule, Transition, learn_rules, mispredicted, propose_precondition_rules, rank_with_llm
from agents.walle.transition_model import TransitionModel, rule_from_llm
from agents.walle.world_model import NeuroSymbolicWorldModel
from embodied.config import RunOptions, check_choice, check_intervals, parse_config
from embodied.errors import EmbodiedError
from embodied.llm import make_llm
from embodied.llm.http import server_url_problem
from embodied.atomic import atomic_path
from embodied.runs import progress, start_run
from embodied.safe_io import json_text
from embodied.sandbox import SandboxError
from embodied.video import write_mp4
from envs.drawer_block import TASKS, DrawerBlockEnv

PLANNERS = ("lookahead", "rules", "llm")


@dataclass
class WalleConfig(RunOptions):
    """WALL-E: LLM + learned neurosymbolic world model, MPC over manipulation skills."""

    tasks: tuple[str, ...] = TASKS  # stow, retrieve, tidy or START:GOAL specs, comma-separated
    planner: str = field(
        default="lookahead",
        metadata={
            "help": "lookahead (search in the learned transition model), "
            "rules (one-step MPC with failure rules), llm (alone)"
        },
    )
    llm: str = field(
        default="embedded", metadata={"help": "embedded or the http(s) URL of an OpenAI-compatible server"}
    )
    llm_model: str = "default"  # model name sent to an HTTP server
    world_model: Path | None = None  # run directory whose last learned model to start from (None: empty)
    iterations: int = 4  # learning iterations after iteration 0 (0: only plan with the model given)
    episodes_per_task: int = 2  # episodes per task and iteration
    max_decisions: int = 40  # skill decisions per episode
    replan_limit: int = 5  # proposals the world model may reject per decision (rules planner)
    explore: bool = True  # lookahead: where no plan exists, go try the nearest untried skill
    llm_rules: bool = field(
        default=False,
        metadata={
            "help": (
                "lookahead: ask the LLM to write effect rules (for a capable served model); each is checked, "
                "sandboxed and kept only if it fits the data as well as the fitted one"
            )
        },
    )
    RESUMABLE = RunOptions.RESUMABLE + ("iterations",)

    def __post_init__(self):
        check_choice("planner", self.planner, PLANNERS)
        if self.llm != "embedded" and (problem := server_url_problem(self.llm)):
            raise ValueError(f"llm must be 'embedded' or the http(s) URL of a server: {problem}")
        if not self.tasks:
            raise ValueError("--tasks is empty")
        names = [parse_goal(task).name for task in self.tasks]  # raises ValueError naming what is wrong
        if len(set(names)) < len(names):  # results, videos and environments are kept per task name
            raise ValueError(f"--tasks names a task twice: {','.join(self.tasks)}")
        if self.iterations < 0 or self.episodes_per_task <= 0 or self.max_decisions <= 0:
            raise ValueError("iterations must be >= 0; episodes_per_task and max_decisions positive")
        check_intervals(self, replan_limit="[0, inf)")
        if self.world_model is not None and not Path(self.world_model).expanduser().is_dir():
            raise ValueError(f"--world-model {self.world_model}: no such run directory")


def run_walle(cfg: WalleConfig, llm=None) -> dict:
    goals = [parse_goal(t) for t in cfg.tasks]
    transition_model, world_model = (
        load_models(cfg.world_model)
        if cfg.world_model is not None  # bad input first
        else (TransitionModel(), NeuroSymbolicWorldModel())
    )
    if llm is None and cfg.llm != "embedded":
        llm = make_llm(cfg.llm, model=cfg.llm_model)
        # A server that is not there, a model name it does not serve or no completions endpoint with log-probabilities
        # (what scoring uses): one error line before the run directory, not at the first decision inside it.
        llm.score([{"role": "user", "content": "Ready?"}], ["yes"])
    run, _ = start_run(cfg, default_run_name(cfg))  # device, threads, seeds, the run directory: as every agent
    if llm is None:
        llm = make_llm(cfg.llm, device=cfg.device)
    transitions: list[Transition] = []
    triples: list[tuple[dict, str, dict]] = []
    results: list[dict] = []
    start = 0
    state = run.load()
    if state is not None:  # iterations are deterministic: continue after the last finished one
        with run.restoring():
            world_model.rules = [Rule.from_source(r["name"], r["source"], r["description"]) for r in state["rules"]]
            world_model.knowledge.restore(state["knowledge"])
            transitions = [Transition(t["state"], t["action"], t["success"]) for t in state["transitions"]]
            triples = [(t["before"], t["skill"], t["after"]) for t in state["triples"]]
            if cfg.planner == "lookahead" and triples:
                transition_model = TransitionModel.learn(triples)  # as learned after that iteration
            results, start = list(state["results"]), int(state["iteration"]) + 1
        print(f"resuming after iteration {start - 1}")

    def checkpoint(iteration: int) -> None:
        run.save(
            {
                "iteration": iteration,
                "results": results,
                "knowledge": {k: dict(v) for k, v in world_model.knowledge.achieves.items()},
                "rules": [
                    {"name": r.name, "source": r.source, "description": r.description} for r in world_model.rules
                ],
                "transitions": [{"state": t.state, "action": t.action, "success": t.success} for t in transitions],
                "triples": [{"before": b, "skill": s, "after": a} for b, s, a in triples],
            }
        )

    envs = {
        g.name: DrawerBlockEnv(
            g.base_task, layout=g.layout, render_mode="rgb_array", render_width=192, render_height=144
        )
        for g in goals
    }  # frames: multiples of 16 for H.264
    bar = progress(total=(cfg.iterations + 1 - start) * len(goals) * cfg.episodes_per_task, desc="walle episodes")
    for iteration in range(start, cfg.iterations + 1):
        row = {
            "iteration": iteration,
            "planner": cfg.planner,
            "rules": len(world_model.rules),
            "effect_rules": len(transition_model.rules),
            "success": {},
            "decisions": {},
        }
        seconds, split = [], {"llm": [], "search": [], "sandbox": []}
        for goal in goals:
            logs = []
            for e in range(cfg.episodes_per_task):
                record = cfg.video and iteration == cfg.iterations and e == 0
                env = envs[goal.name]
                if cfg.planner == "lookahead":
                    log = lookahead.run_episode(
                        env,
                        llm,
                        goal,
                        transition_model,
                        seed=cfg.seed * 1000 + e,
                        max_decisions=cfg.max_decisions,
                        explore=cfg.explore,
                        record=record,
                    )
                    for t in log.timings:
                        split["llm"].append(t.llm)
                        split["search"].append(t.search)
                        split["sandbox"].append(t.sandbox)
                    triples += log.triples
                else:
                    log = planner.run_episode(
                        env,
                        llm,
                        goal,
                        world_model if cfg.planner == "rules" else None,
                        seed=cfg.seed * 1000 + e,
                        max_decisions=cfg.max_decisions,
                        replan_limit=cfg.replan_limit,
                        record=record,
                    )
                    triples += log.triples
                logs.append(log)
                transitions += log.transitions
                seconds += log.decision_seconds
                if log.frames:
                    write_mp4(
                        run.path("videos", f"{re.sub(r'[^A-Za-z0-9_+-]+', '-', goal.name)}-iter{iteration}.mp4"),
                        log.frames,
                        fps=30,
                    )
                bar.update(1)
                bar.set_postfix(iteration=iteration, success=f"{np.mean([log.success for log in logs]):.2f}")
            row["success"][goal.name] = float(np.mean([log.success for log in logs]))
            row["decisions"][goal.name] = float(np.mean([log.decisions for log in logs]))
        row["decision_ms_mean"] = 1000 * float(np.mean(seconds)) if seconds else 0.0
        row["decision_ms_p95"] = 1000 * float(np.percentile(seconds, 95)) if seconds else 0.0
        row["split_ms_mean"] = {k: 1000 * float(np.mean(v)) if v else 0.0 for k, v in split.items()}
        row["mispredicted_before_learning"] = len(mispredicted(world_model.rules, transitions))
        if triples and transition_model.rules:
            row["model_accuracy_rules_only"] = transition_model.accuracy(triples, rules_only=True)
        results.append(row)
        bar.write(json_text(row))
        run.logger.log(
            iteration,
            {
                "walle/success": float(np.mean(list(row["success"].values()))),
                **{f"walle/success/{name}": value for name, value in row["success"].items()},  # per task, for reports
                "walle/rules": row["rules"],
                "walle/effect_rules": row["effect_rules"],
                "walle/decision_ms": row["decision_ms_mean"],
            },
        )
        world_model.save(run.path("rules", f"iter_{iteration}"))
        transition_model.save(run.path("model", f"iter_{iteration}"))
        if iteration < cfg.iterations:
            if cfg.planner == "lookahead":
                transition_model = TransitionModel.learn(triples)
                if cfg.llm_rules:
                    written = {s: rule_from_llm(llm, s, triples) for s in sorted(transition_model.rules)}
                    transition_model.rules.update({s: r for s, r in written.items() if r is not None})
                    row["llm_rules_kept"] = sorted(s for s, r in written.items() if r is not None)
            elif cfg.planner == "rules":
                world_model.rules = learn_failure_rules(llm, goals, world_model, transitions)
        checkpoint(iteration)
        if iteration < cfg.iterations:  # after the last iteration a stop request lets the run finish
            run.stop(iteration, lambda: None)  # Ctrl-C: the checkpoint of this iteration is saved
    bar.close()
    with atomic_path(run.path("results.json")) as tmp:
        tmp.write_text(json_text(results, indent=2))
    last = results[-1]
    run.finish(
        {
            "tasks": list(cfg.tasks),
            "planner": cfg.planner,
            "seed": cfg.seed,
            "iterations": cfg.iterations,
            "success": last["success"],
            "final_success_rate": float(np.mean(list(last["success"].values()))),
            "decision_ms_mean": last["decision_ms_mean"],
            "decision_ms_p95": last["decision_ms_p95"],
        }
    )
    return {"results": results}


def learn_failure_rules(llm, goals: list[Goal], world_model: NeuroSymbolicWorldModel, transitions: list) -> list:
    """WALL-E 2.0's learning step: candidates ranked by the LLM, then consistency and greedy coverage."""
    context = f"A robot gripper works on a drawer and a block. Goal: {'; '.join(g.text() for g in goals)}."
    candidates = rank_with_llm(llm, propose_precondition_rules(transitions), context)
    return learn_rules(world_model.rules, transitions, candidates)


def latest(directory: Path) -> Path | None:
    iters = sorted(directory.glob("iter_*"), key=lambda p: int(p.name.split("_")[1]))
    return iters[-1] if iters else None


def load_models(run_dir: Path) -> tuple[TransitionModel, NeuroSymbolicWorldModel]:
    """The last transition model and failure rules a WALL-E run saved."""
    run_dir = Path(run_dir).expanduser()
    model_dir, rules_dir = latest(run_dir / "model"), latest(run_dir / "rules")
    if model_dir is None and rules_dir is None:
        raise EmbodiedError(f"{run_dir} holds no learned WALL-E model (model/iter_*/ or rules/iter_*/)")
    try:
        transition = TransitionModel.load(model_dir) if model_dir else TransitionModel()
        rules = NeuroSymbolicWorldModel.load(rules_dir) if rules_dir else NeuroSymbolicWorldModel()
    except (SandboxError, ValueError, OSError) as err:  # refused code, undecodable text, a malformed observed.json
        raise EmbodiedError(f"--world-model {run_dir}: {err}") from None
    return transition, rules


def default_run_name(cfg: WalleConfig) -> str:
    tasks = "+".join(re.sub(r"[^A-Za-z0-9_+-]+", "-", t) for t in cfg.tasks)[:120]
    return f"walle-{cfg.planner}-{tasks}-s{cfg.seed}"


def main(argv: list[str] | None = None) -> int:
    run_walle(parse_config(WalleConfig, sys.argv[1:] if argv is None else argv, prog="embodied train walle"))
    return 0


if __name__ == "__main__":
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["train", "walle", *sys.argv[1:]]))
