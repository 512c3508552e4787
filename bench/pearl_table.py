"""PEARL comparison table for one source -> target pair and seed: transferred-label accuracy and IQL success,
with the nearest-neighbour transfer baseline and the plain reward model beside CPA+RRL and the oracle, every arm
on one shared dataset. The docs' success tables are studies (``bench/studies/pearl_*.toml``); this script makes
quick single-seed comparisons and the runs that ``bench/pearl_iql_seeds.py`` retrains with new IQL seeds.

    python bench/pearl_table.py --pair button-press-v3:button-press-wall-v3 --out runs/pearl_table.jsonl
    python bench/pearl_table.py --report runs/pearl_table.jsonl [more.jsonl ...]
    python bench/pearl_table.py --pair A:B --seed 0 --iql-top 0.25 --iql-temperature 0 --arms cpa_rrl \\
        --out runs/top.jsonl

For each pair, one dataset per task is collected once and shared by every arm:
(a) oracle: scripted target labels + Gaussian reward (RRL); (b) CPA labels + RRL;
(c) CPA labels + plain reward model. Label accuracy is also given for the nearest-neighbour
transfer baseline and chance (0.5). ``--iql-top`` / ``--iql-temperature`` / ``--iql-episode-credit`` set how
IQL learns in every arm (``embodied train pearl``'s flags; the run names carry them), ``--arms`` picks a
subset of the arms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from agents.pearl.train import ORIGINAL_IQL, PearlConfig, run_pearl, run_segments, target_labels
from embodied.data import load_episodes
from embodied.report import aggregate, improvement
from embodied.teacher import ScriptedTeacher
from records import cell  # bench/records.py, the benches' shared helpers

ARMS = [("oracle", "gaussian"), ("cpa", "gaussian"), ("cpa", "plain")]
ARM_KEYS = ["oracle", "cpa_rrl", "cpa_plain"]


def run_pair(source: str, target: str, base: PearlConfig, out: Path, arms: list[str] = ARM_KEYS) -> None:
    rows = {}
    iql = {key: getattr(base, key) for key in ORIGINAL_IQL}  # how IQL learns: in run names and records
    how = setting(iql)
    top = f"-{how.replace(' ', '-')}" if how else ""
    for labels, reward in (ARMS[ARM_KEYS.index(arm)] for arm in arms):
        name = f"table-{source}-to-{target}-{labels}-{reward}{top}-s{base.seed}"
        cfg = dataclasses.replace(
            base, source_task=source, target_task=target, labels=labels, reward_model=reward, run_name=name, resume=True
        )
        if rows:  # every arm uses the datasets collected by the first
            first = base.run_dir / next(iter(rows))
            cfg = dataclasses.replace(cfg, source_data=first / "source.hdf5", target_data=first / "target.hdf5")
        rows[name] = run_pearl(cfg)
    first = base.run_dir / next(iter(rows))
    cfg = dataclasses.replace(base, source_task=source, target_task=target, labels="nn")
    src, tgt, rng = run_segments(
        load_episodes(first / "source.hdf5"),
        load_episodes(first / "target.hdf5"),
        cfg.segment_length,
        cfg.segments,
        cfg.seed,
    )  # the same segments and pairs as the runs drew
    nn = target_labels(cfg, src, tgt, ScriptedTeacher(), rng, torch.device("cpu"))
    summary = dict(zip(arms, rows.values()))
    cpa = next((summary[arm] for arm in ("cpa_rrl", "cpa_plain") if arm in summary), {})
    record = {
        "source": source,
        "target": target,
        "seed": base.seed,
        "iql_steps": base.iql_steps,
        **iql,
        "nn_accuracy": nn["accuracy"],
        **({"cpa_accuracy": cpa["label_accuracy"], "cpa_seconds": cpa["label_seconds"]} if cpa else {}),
        **{
            f"{key}_{arm}": s[field]
            for arm, s in summary.items()
            for key, field in (
                ("success", "success_rate"),
                ("late", "success_late_mean"),
                ("curve", "success_curve"),
                ("reward_acc", "reward_heldout_accuracy"),
                ("kept_success", "iql_episodes_success"),
            )
            if field in s
        },
    }
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


def setting(record: dict) -> str:
    """How IQL learned, named by what departs from ``ORIGINAL_IQL`` (so names never change with a default):
    ``""`` (all episodes, per-step reward, temperature 3), ``top0.25`` (the best quarter of the episodes by learned
    return), ``top0.25 temp0`` (and advantage temperature 0: behaviour cloning of them, %BC), ``credit1``
    (each episode's learned return spread evenly over its steps)."""
    names = {"iql_top": "top", "iql_temperature": "temp", "iql_episode_credit": "credit"}
    return " ".join(f"{names[key]}{record[key]:g}" for key, value in ORIGINAL_IQL.items() if record[key] != value)


def variant(arm: str, how: str) -> str:
    """An arm with how IQL learned: ``cpa_rrl``, ``cpa_rrl top0.25 temp0``."""
    return " ".join(x for x in (arm, how) if x)


def report(paths: list[Path]) -> None:
    """Per pair and IQL setting (steps, episode share): label accuracy and IQL success of the arms the
    records hold, mean [min, max] over seeds; then every arm-setting over the pairs with rliable's CIs."""
    records = [json.loads(line) for path in paths for line in open(path) if line.strip()]
    for r in records:
        r.setdefault("iql_steps", 10000)
        for key, value in ORIGINAL_IQL.items():
            r.setdefault(key, value)
        r["setting"] = setting(r)
    records = pooled(records)

    print(
        "mean [min, max] over seeds. Success: the mean of the evaluations in the second half of IQL training "
        "(late), and the final evaluation. IQL: how IQL learned (all episodes at its "
        "temperature 3, unless: topF, the share F of the episodes with the highest learned return, their true "
        "success rate in 'kept success'; temp0, advantage temperature 0, behaviour cloning).\n"
    )
    print(
        "| source -> target | IQL steps | IQL | seeds | label acc: CPA | NN | arm | reward acc | kept success "
        "| late success | final success |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    means = {}  # (source, target, steps, setting, arm) -> mean late success over seeds
    for source, target, steps, how in dict.fromkeys(
        (r["source"], r["target"], r["iql_steps"], r["setting"]) for r in records
    ):
        sel = [
            r
            for r in records
            if (r["source"], r["target"], r["iql_steps"], r["setting"]) == (source, target, steps, how)
        ]
        arms = [arm for arm in ARM_KEYS if all(f"success_{arm}" in r for r in sel)]
        late = {arm: [r.get(f"late_{arm}", r[f"success_{arm}"]) for r in sel] for arm in arms}
        means.update({(source, target, steps, how, arm): float(np.mean(x)) for arm, x in late.items()})
        labels = [
            cell([r["cpa_accuracy"] for r in sel]) if all("cpa_accuracy" in r for r in sel) else "",
            cell([r["nn_accuracy"] for r in sel]),
        ]
        for arm in arms:
            kept = [r[f"kept_success_{arm}"] for r in sel if f"kept_success_{arm}" in r]
            reward_acc, final = [r[f"reward_acc_{arm}"] for r in sel], [r[f"success_{arm}"] for r in sel]
            print(
                f"| {source[:-3]} -> {target[:-3]} | {steps} | {how or 'default'} | {len(sel)} "
                f"| {' | '.join(labels)} | {arm} "
                f"| {cell(reward_acc)} | {cell(kept) if kept else ''} | {cell(late[arm])} | {cell(final)} |"
            )
    near = {}  # the goal: CPA+RRL, however IQL learned, against the oracle's labels with the default IQL
    for (source, target, steps, how, arm), value in means.items():
        if arm == "cpa_rrl" and (source, target, steps, "", "oracle") in means:
            near.setdefault((steps, how), []).append(abs(value - means[source, target, steps, "", "oracle"]) <= 0.2)
    for (steps, how), flags in near.items():
        print(
            f"\n{steps} IQL steps, {how or 'default IQL'}: CPA+RRL's mean late success within 0.2 of the oracle's "
            f"(default IQL) on {sum(flags)} of {len(flags)} pairs"
        )
    aggregate_arms(records)


def pooled(records: list[dict]) -> list[dict]:
    """One record per pair, seed, budget and IQL setting: the arms of separate runs (``--arms``) merged."""
    merged: dict[tuple, dict] = {}
    for r in records:
        merged.setdefault((r["source"], r["target"], r["seed"], r["iql_steps"], r["setting"]), {}).update(r)
    return list(merged.values())


def aggregate_arms(records: list[dict], seeds: int = 3) -> None:
    """Late success of every arm and episode share over the pairs where it has ``seeds`` seeds at the largest
    budget: IQM and mean with 95 % stratified-bootstrap CIs (seeds resampled within each pair, rliable), and
    the probability that one beats another on the pairs both have."""
    steps = max(r["iql_steps"] for r in records)
    rows = [r for r in records if r["iql_steps"] == steps]
    late = {}  # variant -> {pair: late successes by seed}
    for r in sorted(rows, key=lambda r: r["seed"]):
        for arm in ARM_KEYS:
            if f"success_{arm}" in r:
                late.setdefault(variant(arm, r["setting"]), {}).setdefault((r["source"], r["target"]), []).append(
                    r.get(f"late_{arm}", r[f"success_{arm}"])
                )
    pairs = {v: [p for p, x in by_pair.items() if len(x) >= seeds] for v, by_pair in late.items()}
    common = max(pairs.values(), key=len)  # the arms run on the most pairs, each on all of them
    if not common:
        return
    table = {
        v: np.array([late[v][p][:seeds] for p in common]).T for v in late if set(common) <= set(pairs[v])
    }  # (seeds, pairs)
    stats = aggregate(table)
    print(
        f"\nLate success over {len(common)} pairs x {seeds} seeds (the arms that have them all) ({steps} IQL steps), "
        f"95 % stratified-bootstrap CIs:\n"
    )
    print("| arm | IQM | mean |\n| --- | ---: | ---: |")
    for v, a in stats.items():
        print(
            f"| {v} | {a['iqm']:.2f} [{a['iqm_low']:.2f}, {a['iqm_high']:.2f}] "
            f"| {a['mean']:.2f} [{a['mean_low']:.2f}, {a['mean_high']:.2f}] |"
        )
    settings = dict.fromkeys(r["setting"] for r in rows)
    comparisons = [
        (variant(x, h), variant(y, h)) for h in settings for x, y in (("cpa_rrl", "cpa_plain"), ("oracle", "cpa_rrl"))
    ]
    comparisons += [(variant(arm, h), arm) for h in settings if h for arm in ARM_KEYS]
    comparisons += [("oracle", variant("cpa_rrl", h)) for h in settings if h]
    for x, y in comparisons:
        if x in table and y in table:
            p, low, high = improvement(table[x], table[y])
            print(f"\nP({x} > {y}) = {p:.2f} [{low:.2f}, {high:.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", default=[], help="source:target Meta-World task names")
    parser.add_argument("--out", type=Path, default=Path("runs/pearl_table.jsonl"))
    parser.add_argument("--report", type=Path, nargs="+", help="records to tabulate (several files are pooled)")
    parser.add_argument("--iql-steps", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=2500, help="IQL steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("runs"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--iql-top",
        type=float,
        default=PearlConfig.iql_top,
        help="share of the target episodes, best by learned return, IQL learns from",
    )
    parser.add_argument(
        "--iql-temperature",
        type=float,
        default=PearlConfig.iql_temperature,
        help="IQL's advantage temperature (0: behaviour cloning)",
    )
    parser.add_argument(
        "--iql-episode-credit",
        type=float,
        default=PearlConfig.iql_episode_credit,
        help="share of each step's learned reward replaced by its episode's mean",
    )
    parser.add_argument("--arms", default=",".join(ARM_KEYS), help=f"comma-separated subset of {','.join(ARM_KEYS)}")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    base = PearlConfig(
        iql_steps=args.iql_steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        run_dir=args.run_dir,
        threads=args.threads,
        video=False,
        iql_top=args.iql_top,
        iql_temperature=args.iql_temperature,
        iql_episode_credit=args.iql_episode_credit,
    )
    arms = args.arms.split(",")
    if not arms or any(arm not in ARM_KEYS for arm in arms):
        parser.error(f"--arms {args.arms}: choose from {','.join(ARM_KEYS)}")
    for pair in args.pair:
        source, target = pair.split(":")
        run_pair(source, target, base, args.out, arms)


if __name__ == "__main__":
    main()
