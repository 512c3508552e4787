"""PEARL comparison table: transferred-label accuracy and IQL success per source -> target pair.

    python bench/pearl_table.py --pair button-press-v3:button-press-wall-v3 --out runs/pearl_table.jsonl
    python bench/pearl_table.py --report runs/pearl_table.jsonl

For each pair, one dataset per task is collected once and shared by every arm:
(a) oracle: scripted target labels + Gaussian reward (RRL); (b) CPA labels + RRL;
(c) CPA labels + plain reward model. Label accuracy is also given for the nearest-neighbour
transfer baseline and chance (0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from agents.pearl.train import PearlConfig, run_pearl, run_segments, target_labels
from embodied.data import load_episodes
from embodied.report import aggregate, improvement
from embodied.teacher import ScriptedTeacher
from pearl_labels import cell  # bench/, beside this script

ARMS = [("oracle", "gaussian"), ("cpa", "gaussian"), ("cpa", "plain")]
ARM_KEYS = ["oracle", "cpa_rrl", "cpa_plain"]


def run_pair(source: str, target: str, base: PearlConfig, out: Path) -> None:
    rows = {}
    for labels, reward in ARMS:
        name = f"table-{source}-to-{target}-{labels}-{reward}-s{base.seed}"
        cfg = dataclasses.replace(base, source_task=source, target_task=target, labels=labels, reward_model=reward,
                                  run_name=name, resume=True)
        if rows:  # every arm uses the datasets collected by the first
            first = base.run_dir / next(iter(rows))
            cfg = dataclasses.replace(cfg, source_data=first / "source.hdf5", target_data=first / "target.hdf5")
        rows[name] = run_pearl(cfg)
    first = base.run_dir / next(iter(rows))
    cfg = dataclasses.replace(base, source_task=source, target_task=target, labels="nn")
    src, tgt, rng = run_segments(load_episodes(first / "source.hdf5"), load_episodes(first / "target.hdf5"),
                                 cfg.segment_length, cfg.segments, cfg.seed)  # the same segments and pairs as the runs drew
    nn = target_labels(cfg, src, tgt, ScriptedTeacher(), rng, torch.device("cpu"))
    summaries = list(rows.values())
    record = {"source": source, "target": target, "seed": base.seed, "cpa_accuracy": summaries[1]["label_accuracy"],
              "nn_accuracy": nn["accuracy"], "cpa_seconds": summaries[1]["label_seconds"],
              "success_oracle": summaries[0]["success_rate"], "success_cpa_rrl": summaries[1]["success_rate"],
              "success_cpa_plain": summaries[2]["success_rate"], "iql_steps": base.iql_steps,
              **{f"late_{arm}": summaries[i]["success_late_mean"] for i, arm in enumerate(ARM_KEYS)},
              **{f"curve_{arm}": summaries[i]["success_curve"] for i, arm in enumerate(ARM_KEYS)},
              "reward_acc_oracle": summaries[0]["reward_heldout_accuracy"],
              "reward_acc_cpa_rrl": summaries[1]["reward_heldout_accuracy"],
              "reward_acc_cpa_plain": summaries[2]["reward_heldout_accuracy"]}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


def report(path: Path) -> None:
    """Per pair: label accuracy and IQL success, mean [min, max] over seeds; rows of one IQL budget each."""
    records = [json.loads(line) for line in open(path) if line.strip()]

    print("mean [min, max] over seeds. Success: the mean of the evaluations in the second half of IQL training "
          "(late), and the final evaluation.\n")
    print("| source -> target | IQL steps | seeds | label acc: CPA | NN | reward acc: oracle | CPA+RRL | CPA+plain "
          "| late success: oracle | CPA+RRL | CPA+plain | final: oracle | CPA+RRL | CPA+plain |")
    print("| --- | ---: | ---: |" + " ---: |" * 11)
    groups = dict.fromkeys((r["source"], r["target"], r.get("iql_steps", 10000)) for r in records)
    near = {}
    for source, target, steps in groups:
        sel = [r for r in records if (r["source"], r["target"], r.get("iql_steps", 10000)) == (source, target, steps)]
        late = [[r.get(f"late_{arm}", r[f"success_{arm}"]) for r in sel] for arm in ARM_KEYS]
        near.setdefault(steps, []).append(abs(np.mean(late[1]) - np.mean(late[0])) <= 0.2)
        cols = [[r["cpa_accuracy"] for r in sel], [r["nn_accuracy"] for r in sel],
                *[[r[f"reward_acc_{arm}"] for r in sel] for arm in ARM_KEYS], *late,
                *[[r[f"success_{arm}"] for r in sel] for arm in ARM_KEYS]]
        print(f"| {source[:-3]} -> {target[:-3]} | {steps} | {len(sel)} | " + " | ".join(map(cell, cols)) + " |")
    for steps, flags in near.items():
        print(f"\n{steps} IQL steps: CPA+RRL's mean late success within 0.2 of the oracle's on {sum(flags)} of {len(flags)} pairs")
    aggregate_arms(records)


def aggregate_arms(records: list[dict], seeds: int = 3) -> None:
    """Late success over the pairs with ``seeds`` seeds at the largest budget: IQM and mean with 95 % stratified-
    bootstrap CIs (seeds resampled within each pair, rliable), and the probability that one arm beats another."""
    steps = max(r.get("iql_steps", 10000) for r in records)
    rows = [r for r in records if r.get("iql_steps", 10000) == steps]
    pairs = [p for p in dict.fromkeys((r["source"], r["target"]) for r in rows)
             if sum((r["source"], r["target"]) == p for r in rows) >= seeds]
    if not pairs:
        return
    late = {arm: np.array([[r.get(f"late_{arm}", r[f"success_{arm}"]) for r in rows if (r["source"], r["target"]) == p][:seeds]
                           for p in pairs]).T for arm in ARM_KEYS}  # (seeds, pairs), rliable's layout
    stats = aggregate(late)
    print(f"\nLate success over {len(pairs)} pairs x {seeds} seeds ({steps} IQL steps), 95 % stratified-bootstrap CIs:\n")
    print("| labels | IQM | mean |\n| --- | ---: | ---: |")
    for arm in ARM_KEYS:
        a = stats[arm]
        print(f"| {arm} | {a['iqm']:.2f} [{a['iqm_low']:.2f}, {a['iqm_high']:.2f}] "
              f"| {a['mean']:.2f} [{a['mean_low']:.2f}, {a['mean_high']:.2f}] |")
    for x, y in (("cpa_rrl", "cpa_plain"), ("oracle", "cpa_rrl")):
        p, low, high = improvement(late[x], late[y])
        print(f"\nP({x} > {y}) = {p:.2f} [{low:.2f}, {high:.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", default=[], help="source:target Meta-World task names")
    parser.add_argument("--out", type=Path, default=Path("runs/pearl_table.jsonl"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("--iql-steps", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=2500, help="IQL steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("runs"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    base = PearlConfig(iql_steps=args.iql_steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                       seed=args.seed, run_dir=args.run_dir, threads=args.threads, video=False)
    for pair in args.pair:
        source, target = pair.split(":")
        run_pair(source, target, base, args.out)


if __name__ == "__main__":
    main()
