"""A small problem on which learned-reward PEBBLE and PARL runs learn the task and then lose it, while the SAC oracle
keeps it; and the same problem without the irrelevant features that cause it.

    python bench/parl_forgetting_toy.py --seeds 0-9 --out bench/results/parl_forgetting_toy.jsonl   # runs
    python bench/parl_forgetting_toy.py --report bench/results/parl_forgetting_toy.jsonl             # the table

The tasks are ``embodied/point-hold-v0`` (a hand that must reach a goal and stay, two idle action dimensions, ten
irrelevant per-episode features; ``envs/point_hold.py``) and ``embodied/point-hold-clean-v0`` (no features).
Every run is ``embodied train parl`` on one of them (in this process): 4000 env steps, 300 random, no
pre-training, 30 labels every 300 steps up to 300, 10-step segments, SAC 2 x 128 with batch 128, 5 evaluation
episodes every 300 steps. Arms: method (PEBBLE, PARL, SAC oracle) x reward input (s, or (s, a)) x task.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


TASK = "point-hold-v0"
CLEAN_TASK = "point-hold-clean-v0"  # the same task without the ten irrelevant features
ARMS = {  # arm: (method, reward input, task)
    "pebble-state": ("pebble", "state", TASK),
    "pebble-state-action": ("pebble", "state-action", TASK),
    "sac": ("sac", "state", TASK),
    "pebble-state-clean": ("pebble", "state", CLEAN_TASK),
    "pebble-state-action-clean": ("pebble", "state-action", CLEAN_TASK),
    "parl-state": ("parl", "state", TASK),
    "parl-state-clean": ("parl", "state", CLEAN_TASK),
    "sac-clean": ("sac", "state", CLEAN_TASK),
}


def run(arm: str, seed: int) -> dict:
    import torch

    from embodied.cli import main
    from embodied.runs import read_metrics

    torch.set_num_threads(1)
    method, reward_input, task = ARMS[arm]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "train", "parl", "--task", task, "--method", method, "--reward-input", reward_input, "--seed", str(seed),
            "--total-steps", "4000", "--max-episode-steps", "30", "--seed-steps", "300", "--unsup-steps", "0",
            "--query-every", "300", "--queries-per-session", "30", "--segment-length", "10",
            "--feedback-budget", "300", "--reward-epochs", "20", "--sac.hidden", "128", "--sac.batch-size", "128",
            "--eval-every", "300", "--eval-episodes", "5", "--checkpoint-every", "100000", "--no-video",
            "--run-dir", tmp, "--run-name", "r",
        ]  # fmt: skip
        if main(argv) != 0:
            raise RuntimeError(f"{arm} seed {seed} failed")
        rows = read_metrics(Path(tmp) / "r" / "metrics.jsonl")
    evals = [r for r in rows if "eval/success_rate" in r]
    agreement = {r["step"]: r["diag/rank_corr_recent"] for r in rows if r.get("diag/rank_corr_recent") is not None}
    return {
        "arm": arm,
        "seed": seed,
        "curve": [[r["step"], r["eval/success_rate"], r["eval/success_final"]] for r in evals],
        "rank_corr_recent": sorted(agreement.items()),
    }


def report(path: Path) -> str:
    """The runs' measures (``embodied.report.measures_section``: final success, mean over the curve, steps to
    reach and hold 0.8, retention; IQM and mean with 95 % CIs, P(X better)) for success at any step of an episode
    (Meta-World's) and for success at its last step (the hand held at the goal), then each run's curve."""
    from embodied.report import RunRecord, measures_section

    from records import read_records

    records = read_records(path)
    groups: dict[str, list] = {arm: [] for arm in ARMS}
    for r in records:
        rows = [{"step": c[0], "eval/success_rate": c[1], "eval/success_final": c[2]} for c in r["curve"]]
        groups[r["arm"]].append(RunRecord(Path(str(r["seed"])), {}, rows))
    groups = {arm: runs for arm, runs in groups.items() if runs}
    compare = [
        ("pebble-state", "sac"),
        ("pebble-state", "pebble-state-action"),
        ("pebble-state-clean", "pebble-state"),
        ("pebble-state-clean", "pebble-state-action-clean"),
        ("parl-state-clean", "pebble-state-clean"),
        ("parl-state", "pebble-state"),
    ]
    out = [
        f"{TASK} (and {CLEAN_TASK}, the same without the ten irrelevant features): 5 evaluation episodes every 300 "
        f"env steps, seeds {sorted({r['seed'] for r in records})}.",
        "",
        "## Success at any step of an episode",
        *measures_section(groups, "eval/success_rate", 0.8, None, compare, reps=2000),
        "",
        "## Success at the episode's last step (held at the goal)",
        *measures_section(groups, "eval/success_final", 0.8, None, compare, reps=2000),
        "",
        "Per run, success at any step / at the last step every 300 env steps (learned-reward arms: the learned",
        "reward's rank correlation with the true one on the policy's recent transitions at the last evaluation):",
        "",
    ]
    for r in sorted(records, key=lambda r: (list(ARMS).index(r["arm"]), r["seed"])):
        corr = f" (agreement {r['rank_corr_recent'][-1][1]:.2f})" if r["rank_corr_recent"] else ""
        out.append(f"- {r['arm']} seed {r['seed']}: {' '.join(f'{c[1]:.1f}/{c[2]:.1f}' for c in r['curve'])}{corr}")
    return "\n".join(out) + "\n"


def _job(args: tuple[str, int]) -> dict:
    return run(*args)


def main() -> None:
    from records import study_args, study_parser

    parser = study_parser(__doc__, seeds="0-4", out="runs/parl_forgetting_toy.jsonl", jobs=2)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = study_args(parser, report)
    if args is None:
        return
    from records import run_jobs

    run_jobs(
        args.out,
        [(arm, seed) for seed in args.seeds for arm in args.arms.split(",")],
        _job,
        key=lambda r: (r["arm"], r["seed"]),
        processes=args.jobs,
        describe=lambda r: f"{r['arm']} seed {r['seed']}: final {r['curve'][-1][1]:.1f}",
    )


if __name__ == "__main__":
    main()
