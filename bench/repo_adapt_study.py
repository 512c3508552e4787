"""RePo's test-time adaptation across seeds: before / after under distractors against the clean ceiling.

    python bench/repo_adapt_study.py --source-run runs/repo-reach-src-s0 --seeds 0,1,2 --calibration 0,200
    python bench/repo_adapt_study.py --report runs/repo_adapt

One adaptation per seed and arm (``--calibration``: how many paired clean/distracted frames the
calibration term gets; 0 is the pair-free objective), each in its own run directory
``OUT/calib<N>-s<seed>``; finished runs (summary.json) are skipped, so re-running continues. The
seed changes the target episodes collected, the batches and the evaluation episodes (5 per
evaluation: ``--eval-episodes``), not the source agent. The report gives the mean over seeds with
95 % bootstrap CIs (rliable, through ``embodied.report.aggregate``) of: return on clean pixels (the
ceiling), under distractors before and after adaptation, the share of the gap closed, the paired
embedding error before and after, and the discriminator's final accuracy; for runs evaluated along
the way (``--eval-every N``) also the curve: return, gap closed, success and embedding error after
every N adaptation steps, read from each run's metrics.jsonl, so runs stopped early count up to where
they got; and, where both arms ran a seed, each calibrated arm minus the pair-free one seed by seed
(a seed fixes the evaluation episodes, so the paired difference is the sharper comparison).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLUMNS = (
    ("ceiling", "clean return (ceiling)"),
    ("before", "distractor return before"),
    ("after", "distractor return after"),
    ("gap_closed", "gap closed"),
    ("success_before", "success before"),
    ("success_after", "success after"),
    ("embedding_error_before", "paired embedding error before"),
    ("embedding_error_after", "paired embedding error after"),
    ("disc_accuracy", "discriminator accuracy"),
)


def flatten(summary: dict) -> dict[str, float]:
    return {
        "ceiling": summary["ceiling"]["return_mean"],
        "before": summary["before"]["return_mean"],
        "after": summary["after"]["return_mean"],
        "gap_closed": summary["gap_closed"],
        "success_before": summary["before"]["success_rate"],
        "success_after": summary["after"]["success_rate"],
        **{k: summary[k] for k in ("embedding_error_before", "embedding_error_after", "disc_accuracy")},
    }


CURVE_COLUMNS = (
    ("return_mean", "distractor return"),
    ("gap_closed", "gap closed"),
    ("success_rate", "success"),
    ("embedding_error", "paired embedding error"),
)


def cell(values: list[float]) -> str:
    """Mean [95 % bootstrap CI] over seeds (rliable, through ``embodied.report.aggregate``)."""
    from embodied.report import aggregate

    values = np.array([[v] for v in values if v is not None and np.isfinite(v)], float)  # None: NaN in metrics.jsonl
    if len(values) < 2:
        return f"{values[0, 0]:.2f}" if len(values) else ""
    stats = aggregate({"x": values})["x"]
    return f"{stats['mean']:.2f} [{stats['mean_low']:.2f}, {stats['mean_high']:.2f}]"


def load_runs(source: Path) -> list[dict]:
    """The adaptation runs of a study: ``{"name", "config", "summary" (None if unfinished), "rows"}`` each, from its
    run directories (``calib<N>-s<seed>/``) or from the ``records.jsonl`` that ``--pack`` wrote from them."""
    from embodied.runs import read_metrics

    if source.is_file():
        return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    runs = []
    for path in sorted(source.glob("calib*-s*/config.json")):
        summary = path.parent / "summary.json"
        metrics = path.parent / "metrics.jsonl"
        runs.append(
            {
                "name": path.parent.name,
                "config": json.loads(path.read_text()),
                "summary": json.loads(summary.read_text()) if summary.exists() else None,
                "rows": read_metrics(metrics) if metrics.exists() else [],
            }
        )
    return runs


def curve_points(rows: list[dict]) -> list[dict]:
    """The evaluations a run logged along its adaptation (metrics.jsonl's eval/ rows), finished or not."""
    return [
        {
            "step": row["step"],
            "ceiling": row.get("eval/ceiling_return"),
            **{key: row[f"eval/{key}"] for key, _ in CURVE_COLUMNS},
        }
        for row in rows
        if "eval/return_mean" in row
    ]


def paired_differences(runs: dict[tuple[int, int], list[dict]]) -> None:
    """Each calibrated arm minus the pair-free one, seed by seed, at every step both reached. A seed fixes the
    evaluation episodes, so on one source both arms of a seed score the same ceiling and before; the difference
    then removes what the seeds share. A seed whose two arms differ in the ceiling (another source, other
    episodes) or did not log it is left out and named."""
    pair_free = {seed: curve for (pairs, seed), curve in runs.items() if pairs == 0}
    rows, unpaired = [], []
    for pairs in sorted({pairs for pairs, _ in runs if pairs > 0}):
        diffs: dict[int, list[tuple[float, float]]] = {}
        for seed, base in sorted(pair_free.items()):
            base_at, curve_at = ({p["step"]: p for p in c} for c in (base, runs.get((pairs, seed), [])))
            if not base_at or not curve_at:
                continue
            ceilings = (base_at.get(0, {}).get("ceiling"), curve_at.get(0, {}).get("ceiling"))
            if None in ceilings or abs(ceilings[0] - ceilings[1]) > 1e-6:
                unpaired.append(f"seed {seed} ({pairs} pairs)")
                continue
            for step in sorted(set(curve_at) & set(base_at) - {0}):
                p, b = curve_at[step], base_at[step]
                diffs.setdefault(step, []).append(
                    tuple(
                        None if p[key] is None or b[key] is None else p[key] - b[key]  # None: NaN in metrics.jsonl
                        for key in ("return_mean", "gap_closed")
                    )
                )
        rows += [(pairs, step, d) for step, d in sorted(diffs.items())]
    if not rows:
        return
    print(
        "\ncalibrated minus pair-free, paired by seed (same source, seed and evaluation episodes)"
        + (f"; left out, their ceilings differ or are not logged: {', '.join(unpaired)}" if unpaired else "")
        + "\n"
    )
    print("| calibration | adaptation steps | seeds | return difference | gap closed difference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for pairs, step, d in rows:
        print(
            f"| {pairs} pairs - 0 pairs | {step} | {len(d)} | {cell([r for r, _ in d])} | {cell([g for _, g in d])} |"
        )


def report(out: Path) -> None:
    runs = load_runs(out)
    arms: dict[str, list[dict]] = {}
    for run in runs:
        summary = run["summary"]
        if summary is not None:
            arms.setdefault(f"{summary['calibration_pairs']} pairs, {summary['steps']} steps", []).append(summary)
    curves: dict[str, list[list[dict]]] = {}
    by_run: dict[tuple[int, int], list[dict]] = {}
    unfinished: dict[str, int] = {}
    for run in runs:
        config = run["config"]
        arm = f"{config['calibration_pairs']} pairs"
        curve = by_run[config["calibration_pairs"], config["seed"]] = curve_points(run["rows"])
        curves.setdefault(arm, []).append(curve)
        unfinished[arm] = unfinished.get(arm, 0) + (run["summary"] is None)
    if not arms and not any(curves.values()):
        raise SystemExit(f"no adaptation runs under {out}")
    print("mean over seeds [95 % bootstrap CI]\n")
    if arms:
        print("| calibration | seeds | " + " | ".join(name for _, name in COLUMNS) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |")
        for arm, summaries in arms.items():
            rows = [flatten(s) for s in summaries]
            print(f"| {arm} | {len(rows)} | " + " | ".join(cell([r[key] for r in rows]) for key, _ in COLUMNS) + " |")
    if not any(curve for runs in curves.values() for curve in runs):
        return
    print(
        "\nover the adaptation budget (evaluations along the way, --eval-every; runs not finished included: "
        + ", ".join(f"{arm}: {n}" for arm, n in unfinished.items())
        + ")\n"
    )
    print("| calibration | adaptation steps | seeds | " + " | ".join(name for _, name in CURVE_COLUMNS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in CURVE_COLUMNS) + " |")
    for arm, runs in curves.items():
        for step in sorted({p["step"] for curve in runs for p in curve}):
            points = [p for curve in runs for p in curve if p["step"] == step]
            print(
                f"| {arm} | {step} | {len(points)} | "
                + " | ".join(cell([p[key] for p in points]) for key, _ in CURVE_COLUMNS)
                + " |"
            )
    paired_differences(by_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-run", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--calibration", default="0,200", help="calibration pairs per arm (0: none)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N adaptation steps (the curve)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/repo_adapt"))
    parser.add_argument("--report", type=Path, help="a study's run directories, or the records.jsonl --pack wrote")
    parser.add_argument("--pack", type=Path, metavar="RECORDS", help="write --out's runs to this records.jsonl")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if args.pack:
        runs = load_runs(args.out)
        for run in runs:  # where each run was on this machine: no report reads it, and a committed file names no paths
            run["config"].pop("run_dir", None)
        args.pack.write_text("".join(json.dumps(run, separators=(",", ":")) + "\n" for run in runs))
        print(f"wrote {len(runs)} runs to {args.pack}")
        return
    if args.source_run is None:
        parser.error("--source-run is needed to adapt (or --report to summarise)")
    from agents.repo.adapt import AdaptConfig, run_adapt

    for pairs in (int(n) for n in args.calibration.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            name = f"calib{pairs}-s{seed}"
            if (args.out / name / "summary.json").exists():
                continue
            run_adapt(
                AdaptConfig(
                    source_run=args.source_run,
                    steps=args.steps,
                    calibration_pairs=pairs,
                    seed=seed,
                    eval_episodes=args.eval_episodes,
                    eval_every=args.eval_every,
                    threads=args.threads,
                    device=args.device,
                    run_dir=args.out,
                    run_name=name,
                )
            )
    report(args.out)


if __name__ == "__main__":
    main()
