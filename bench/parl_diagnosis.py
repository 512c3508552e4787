"""The learned-reward diagnostics of PARL/PEBBLE runs, one row per run, from run directories or a records file.

    python bench/parl_diagnosis.py bench/results/parl_diagnosis/records.jsonl [--out FILE.md]

Per run: the evaluation curve's peak and final success; over the last three feedback sessions the
mean shift of the reward on the policy's states and the rank correlation before/after; the
learned reward's success gap and rank correlation with the true reward at the end; for PARL the
implicit update's norm as a fraction of the direct one and its cosine with it (ranges over sessions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from embodied.report import find_runs  # noqa: E402


def row(run) -> str:
    success = [v for _, v in run.series("eval/success_rate")]
    sessions = [r for r in run.rows if "diag/session_shift" in r][-3:]
    shift = np.mean([r["diag/session_shift"] for r in sessions]) if sessions else float("nan")
    corr = np.mean([r["diag/session_rank_corr"] for r in sessions if r["diag/session_rank_corr"] is not None]) \
        if sessions else float("nan")
    gap = run.series("diag/reward_gap_success")
    recent = run.series("diag/rank_corr_recent")
    ratio = [v for _, v in run.series("diag/implicit_to_direct_norm")]
    cos = [v for _, v in run.series("diag/implicit_cos_direct")]
    span = lambda xs, f: f"{f(min(xs))} to {f(max(xs))}" if xs else "-"  # noqa: E731
    return (f"| {run.path.name} | {run.config.get('method')} | {run.config.get('reward_input', 'state-action')} | "
            f"{max(success):.1f} | {success[-1]:.1f} | {shift:.2f} | {corr:.2f} | "
            f"{gap[-1][1]:.2f} | {recent[-1][1]:.2f} | {span(ratio, lambda x: f'{100 * x:.3g} %')} | "
            f"{span(cos, lambda x: f'{x:+.2f}')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, help="run directories' root or a records.jsonl")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = ["| run | method | reward input | peak success | final | shift (last 3 sessions) | rank corr before/after "
             "| success gap (end) | rank corr with true reward, recent (end) | implicit / direct norm | cosine |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    lines += [row(r) for r in find_runs(args.source) if r.series("diag/session_shift")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
