"""The learned-reward diagnostics of PARL/PEBBLE runs, one row per run, from run directories or a records file.

    python bench/parl_diagnosis.py bench/results/parl_diagnosis/records.jsonl [--out FILE.md] [--metric KEY]
    python bench/parl_diagnosis.py --action-spread RUN_DIR [RUN_DIR ...] [--out FILE.md]

Per run: the evaluation curve's peak and final success; over the last three feedback sessions the
mean shift of the reward on the policy's states and the rank correlation before/after; the
learned reward's success gap and rank correlation with the true reward at the end; for PARL the
implicit update's size as a fraction of the direct one (in parameter norm, and in how far each moved the
reward on the policy's recent transitions) and its cosine with it (ranges over sessions).

With ``--action-spread``, from each run's last checkpoint: how much the standardised learned reward (as
SAC sees it) varies with the action at a fixed state (2,000 buffer states, 16 uniform random actions
each) against its spread over the states, and its mean on successful and other transitions.
Meta-World's true reward is a function of the state, so any spread over actions is the reward model's
own, and a policy can collect it without doing the task.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

import numpy as np  # noqa: E402

from embodied.report import find_runs  # noqa: E402


def row(run, metric: str = "eval/success_rate") -> str:
    success = [v for _, v in run.series(metric)]
    sessions = [r for r in run.rows if "diag/session_shift" in r][-3:]
    shift = np.mean([r["diag/session_shift"] for r in sessions]) if sessions else float("nan")
    corr = (
        np.mean([r["diag/session_rank_corr"] for r in sessions if r["diag/session_rank_corr"] is not None])
        if sessions
        else float("nan")
    )
    gap = run.series("diag/reward_gap_success")
    recent = run.series("diag/rank_corr_recent")
    ratio = [v for _, v in run.series("diag/implicit_to_direct_norm")]
    move = [v for _, v in run.series("diag/implicit_to_direct_move")]
    cos = [v for _, v in run.series("diag/implicit_cos_direct")]
    span = lambda xs, f: f"{f(min(xs))} to {f(max(xs))}" if xs else "-"  # noqa: E731
    return (
        f"| {run.path.name} | {run.config.get('method')} | {run.config.get('reward_input', 'state-action')} | "
        f"{max(success):.1f} | {success[-1]:.1f} | {shift:.2f} | {corr:.2f} | "
        f"{gap[-1][1]:.2f} | {recent[-1][1]:.2f} | {span(ratio, lambda x: f'{100 * x:.3g} %')} | "
        f"{span(move, lambda x: f'{100 * x:.3g} %')} | {span(cos, lambda x: f'{x:+.2f}')} |"
    )


def spread(run_dir: Path) -> dict:
    from agents.parl.train import LearnedReward
    from embodied.checkpoint import load_checkpoint

    config = json.loads((run_dir / "config.json").read_text())
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    buffer = state["buffer"]
    obs_dim, act_dim = buffer["obs"].shape[1], buffer["act"].shape[1]
    use_action = config.get("reward_input", "state-action") == "state-action"  # runs before the option had (s, a)
    reward = LearnedReward(obs_dim, act_dim, config.get("ensemble_size", 3), "cpu", use_action=use_action)
    reward.load_state_dict(state["reward"])
    rng = np.random.default_rng(0)
    idx = rng.choice(buffer["size"], size=min(2000, buffer["size"]), replace=False)
    obs, act = buffer["obs"][idx], buffer["act"][idx]
    logged = reward(obs, act)
    random = np.stack([reward(obs, rng.uniform(-1, 1, act.shape).astype(np.float32)) for _ in range(16)])
    success = buffer["success"][idx] > 0.5 if "success" in buffer else np.zeros(len(idx), bool)
    return {
        "run": run_dir.name,
        "reward_input": "state-action" if use_action else "state",
        "spread_over_states": float(logged.std()),
        "spread_over_actions": float(random.std(0).mean()),
        "reward_success": float(logged[success].mean()) if success.any() else float("nan"),
        "reward_other": float(logged[~success].mean()) if (~success).any() else float("nan"),
    }


def spread_rows(runs: list[Path]) -> list[str]:
    lines = [
        "| run | reward input | spread over states | spread over actions at a state | reward on success | on other |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        r = spread(run)
        lines.append(
            f"| {r['run']} | {r['reward_input']} | {r['spread_over_states']:.2f} | "
            f"{r['spread_over_actions']:.2f} | {r['reward_success']:.2f} | {r['reward_other']:.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, nargs="?", help="run directories' root or a records.jsonl")
    parser.add_argument(
        "--action-spread",
        type=Path,
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="instead: the action spread of these runs' learned rewards (needs their checkpoints)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--metric", default="eval/success_rate", help="the success measure of the peak/final columns")
    args = parser.parse_args()
    if args.action_spread:
        text = "\n".join(spread_rows(args.action_spread)) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
        return 0
    if args.source is None:
        parser.error("give a records file or a runs directory, or --action-spread RUN_DIR ...")
    lines = [
        "| run | method | reward input | peak success | final | shift (last 3 sessions) | rank corr before/after "
        "| success gap (end) | rank corr with true reward, recent (end) | implicit / direct norm "
        "| implicit / direct move on the policy's states | cosine |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    runs = [r for r in find_runs(args.source) if r.series("diag/session_shift")]
    missing = [r.path.name for r in runs if not r.series(args.metric)]
    if missing:
        parser.error(
            f"{len(missing)} runs (e.g. {missing[0]}) logged no {args.metric}; name the success key with --metric"
        )
    lines += [row(r, args.metric) for r in runs]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
