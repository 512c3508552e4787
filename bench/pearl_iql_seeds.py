"""How much of a PEARL success number is the reward, and how much IQL's own seed? Retrain IQL on a
finished run's relabelled data with other seeds, the reward model held fixed.

    python bench/pearl_iql_seeds.py runs/pearl_table2/table-A-to-B-cpa-gaussian-s0 [...] --seeds 1,2,3

Per run directory: its ``reward.pt`` relabels its target dataset exactly as the run did (its
``--iql-top``, ``--iql-episode-credit`` and ``--iql-temperature`` included); IQL is
trained from scratch for the run's ``iql_steps`` with each seed (torch initialisation and batch
order) and evaluated every ``--eval-every`` steps on the run's evaluation seeds. Prints one JSON
line per (run, seed) and a table: the final success of each seed, its spread, and the mean of the
evaluations over the last half of training (a steadier summary than one final evaluation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.pearl.iql import IQL, IQLConfig, TransitionBuffer, transitions_from_episodes
from agents.pearl.train import ORIGINAL_IQL, iql_dataset, late_mean, load_trained_reward
from embodied.evaluation import evaluate
from embodied.make import make_env


def retrain(run_dir: Path, seed: int, eval_every: int, steps: int | None = None) -> dict:
    cfg, episodes, reward = load_trained_reward(run_dir)
    cfg["iql_steps"] = steps or cfg["iql_steps"]
    obs_dim, act_dim = episodes[0].observations.shape[-1], episodes[0].actions.shape[-1]
    setting = {key: cfg.get(key, value) for key, value in ORIGINAL_IQL.items()}
    data = iql_dataset(reward, episodes, "cpu", setting["iql_top"], setting["iql_episode_credit"])
    buffer = TransitionBuffer(*transitions_from_episodes(*data), "cpu")
    torch.manual_seed(seed)
    agent = IQL(obs_dim, act_dim, IQLConfig(temperature=setting["iql_temperature"]), "cpu")
    gen = torch.Generator().manual_seed(seed)
    env = make_env(f"embodied/{cfg['target_task']}")
    curve = []
    for step in range(1, cfg["iql_steps"] + 1):
        agent.update(*buffer.sample(agent.cfg.batch_size, gen))
        if step % eval_every == 0 or step == cfg["iql_steps"]:
            result = evaluate(
                env, agent.policy.act, cfg["eval_episodes"], seed=10_000 + cfg["seed"], max_steps=cfg["max_steps"]
            )
            curve.append((step, result["success_rate"]))
    return {
        "run": run_dir.name,
        "iql_seed": seed,
        "final": curve[-1][1],
        "late_mean": late_mean(curve, cfg["iql_steps"], curve[-1][1]),
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="append the JSON lines here too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iql-steps", type=int, help="default: the run's own")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(retrain(run, seed, args.eval_every, args.iql_steps))
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print("\n| run | IQL seeds | final success per seed | late-half mean per seed |")
    print("| --- | ---: | --- | --- |")
    for run in dict.fromkeys(r["run"] for r in rows):
        sel = [r for r in rows if r["run"] == run]
        finals = " / ".join(f"{r['final']:.2f}" for r in sel)
        late = " / ".join(f"{r['late_mean']:.2f}" for r in sel)
        print(f"| {run} | {len(sel)} | {finals} | {late} |")


if __name__ == "__main__":
    main()
