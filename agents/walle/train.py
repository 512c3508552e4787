"""WALL-E on the drawer-block tasks: learn action rules from experience, compare with the LLM alone.

    embodied train walle                       # embedded SmolLM2, 4 learning iterations
    embodied train walle --llm http://127.0.0.1:8000 --llm-model NAME

Iteration 0 runs the LLM with an empty rule set (= the LLM alone). After each iteration, the
transitions logged so far are used to learn rules (mispredictions -> candidates, ordered by the
LLM's likelihood of their statements -> drop the inconsistent -> greedy maximum coverage, ties
going to the LLM's preference); the next iteration plans with them. Rules are saved
as readable .py files under ``rules/iter_<k>/``; ``results.json`` holds success per task and
iteration and the latency per decision.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np

from agents.walle.planner import run_episode
from agents.walle.rules import Rule, Transition, learn_rules, mispredicted, propose_precondition_rules, rank_with_llm
from agents.walle.world_model import NeuroSymbolicWorldModel
from embodied.config import RunOptions, parse_config
from embodied.llm import make_llm
from embodied.runs import Run, set_threads
from embodied.video import write_mp4
from envs.drawer_block import TASKS, DrawerBlockEnv
from envs.symbolic import GOALS


@dataclass
class WalleConfig(RunOptions):
    """WALL-E: LLM + learned neurosymbolic world model, MPC over manipulation skills."""

    tasks: tuple[str, ...] = TASKS  # task names (stow, retrieve, tidy), comma-separated
    llm: str = field(default="embedded", metadata={"help": "embedded or the http(s) URL of an OpenAI-compatible server"})
    llm_model: str = "default"  # model name sent to an HTTP server
    iterations: int = 4  # learning iterations after the LLM-alone iteration 0 (0: only evaluate)
    episodes_per_task: int = 2  # episodes per task and iteration
    max_decisions: int = 16  # skill decisions per episode
    replan_limit: int = 5  # proposals the world model may reject per decision
    run_name: str = "walle"  # run directory name under --run-dir

    def __post_init__(self):
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
        if self.iterations < 0 or self.episodes_per_task <= 0 or self.max_decisions <= 0:
            raise ValueError("iterations must be >= 0; episodes_per_task and max_decisions positive")


def learn(llm, cfg: WalleConfig, world_model: NeuroSymbolicWorldModel, transitions: list) -> list:
    """One learning step: candidates ranked by the LLM, then consistency and greedy coverage."""
    context = f"A robot gripper works on a drawer and a block. Goal: {', '.join(GOALS[t] for t in cfg.tasks)}."
    candidates = rank_with_llm(llm, propose_precondition_rules(transitions), context)
    return learn_rules(world_model.rules, transitions, candidates)


def run_walle(cfg: WalleConfig, llm=None) -> dict:
    run = Run(cfg.run_dir, cfg.run_name, config=cfg, resume=cfg.resume)
    run.catch_interrupts()
    set_threads(cfg.threads)
    if llm is None:
        llm = make_llm(cfg.llm, device=cfg.device) if cfg.llm == "embedded" else make_llm(cfg.llm, model=cfg.llm_model)
    world_model = NeuroSymbolicWorldModel()
    transitions, results = [], []
    start = 0
    state = run.load()
    if state is not None:  # iterations are deterministic: continue after the last finished one
        world_model.rules = [Rule.from_source(r["name"], r["source"], r["description"]) for r in state["rules"]]
        transitions = [Transition(t["state"], t["action"], t["success"]) for t in state["transitions"]]
        for skill, effects in state["knowledge"].items():
            world_model.knowledge.achieves[skill].update(effects)
        results, start = state["results"], state["iteration"] + 1
        print(f"resuming after iteration {state['iteration']}")
        if not state["learned"] and start <= cfg.iterations:  # the cut run ended there without learning
            world_model.rules = learn(llm, cfg, world_model, transitions)

    def checkpoint(iteration: int) -> None:
        run.save({"iteration": iteration, "results": results, "learned": iteration < cfg.iterations,
                  "knowledge": {k: dict(v) for k, v in world_model.knowledge.achieves.items()},
                  "rules": [{"name": r.name, "source": r.source, "description": r.description} for r in world_model.rules],
                  "transitions": [{"state": t.state, "action": t.action, "success": t.success} for t in transitions]})

    envs = {task: DrawerBlockEnv(task, render_mode="rgb_array", render_width=192, render_height=144)  # H.264: 16n
            for task in cfg.tasks}
    for iteration in range(start, cfg.iterations + 1):
        row = {"iteration": iteration, "rules": len(world_model.rules), "success": {}, "decision_seconds": []}
        for task in cfg.tasks:
            logs = [run_episode(envs[task], llm, task, world_model, seed=cfg.seed * 1000 + e,
                                max_decisions=cfg.max_decisions, replan_limit=cfg.replan_limit,
                                record=cfg.video and iteration == cfg.iterations and e == 0)
                    for e in range(cfg.episodes_per_task)]
            row["success"][task] = float(np.mean([log.success for log in logs]))
            row["decision_seconds"] += [s for log in logs for s in log.decision_seconds]
            for log in logs:
                transitions += log.transitions
                if log.frames:
                    write_mp4(run.path("videos", f"{task}-iter{iteration}.mp4"), log.frames, fps=30)
        row["mean_decision_seconds"] = float(np.mean(row["decision_seconds"]))
        row["mispredicted_before_learning"] = len(mispredicted(world_model.rules, transitions))
        del row["decision_seconds"]
        results.append(row)
        print(json.dumps(row))
        run.logger.log(iteration, {"walle/success": float(np.mean(list(row["success"].values()))),
                                   "walle/rules": row["rules"], "walle/decision_seconds": row["mean_decision_seconds"]})
        world_model.save(run.path("rules", f"iter_{iteration}"))
        if iteration < cfg.iterations:
            world_model.rules = learn(llm, cfg, world_model, transitions)
        checkpoint(iteration)
        run.stop(iteration, lambda: None)  # Ctrl-C: the checkpoint of this iteration is saved
    run.path("results.json").write_text(json.dumps(results, indent=2))
    last = results[-1]
    run.write_summary({"tasks": list(cfg.tasks), "seed": cfg.seed, "iterations": cfg.iterations,
                       "success": last["success"], "final_success_rate": float(np.mean(list(last["success"].values()))),
                       "rules": last["rules"]})
    run.close()
    return {"results": results}


def main(argv: list[str] | None = None) -> int:
    run_walle(parse_config(WalleConfig, sys.argv[1:] if argv is None else argv, prog="embodied train walle"))
    return 0


if __name__ == "__main__":
    from embodied.cli import main as cli_main

    sys.exit(cli_main(["train", "walle", *sys.argv[1:]]))
