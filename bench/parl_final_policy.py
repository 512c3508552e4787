"""Retention measured on each run's final policy with many episodes, not the last 5-episode evaluation.

    python bench/parl_final_policy.py runs/parl --where reward_input=state --where implicit_measure!=parameters \
        --group-by method query_episodes --episodes 50 --workers 2 --out bench/results/parl_final_policy
    python bench/parl_final_policy.py bench/results/parl_final_policy/records.jsonl   # the table again, no runs

A study's "kept" is whether a run that reached the threshold during training was above it at its last
evaluation, which averages 5 episodes: a policy that succeeds 85 % of the time shows 3 or fewer of 5 about one
time in six. Here every run's exported ``policy.pt`` is evaluated again on ``--episodes`` fresh seeded episodes
(seeds far from the training evaluations'), in parallel processes of one torch thread each, so that "kept"
separates a policy that lost the task from an unlucky evaluation. Writes one record per run
(``records.jsonl``) and a table (``report.md``): per group, runs that reached the threshold, kept by the
last evaluation, kept by the final policy over many episodes (share with its 95 % Wilson interval), and the
final policy's mean success with its 95 % bootstrap CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/records.py, also when run through runpy

import numpy as np  # noqa: E402

from embodied.report import aggregate, share_interval  # noqa: E402
from records import chosen_runs, measure_runs, run_dir_parser, run_dir_study  # noqa: E402  (bench/records.py)

EVAL_SEED = 20_000_000  # the training evaluations use 10_000_000 + seed onwards


def evaluate_run(job: dict) -> dict:
    """In a worker process with one torch thread: the run's final policy over ``episodes`` episodes."""
    import torch

    torch.set_num_threads(1)
    import envs  # noqa: F401
    from embodied.evaluation import evaluate
    from embodied.make import make_env
    from embodied.policies import make_policy

    env = make_env(f"embodied/{job['task']}", max_episode_steps=job["max_steps"])
    result = evaluate(env, make_policy(job["policy"], env), job["episodes"], EVAL_SEED + 1000 * job["seed"])
    return {"success_any": result["success_any"], "success_final": result["success_final"]}


def measure(args) -> list[dict]:
    records, results = measure_runs(
        args,
        chosen_runs(args),
        evaluate_run,
        lambda m: {"reached": m["reached"], "kept_last_eval": m["kept"], "last_eval": m["final"]},
    )
    for record, result in zip(records, results):
        record.update(episodes=args.episodes, **{f"policy_{k}": v for k, v in result.items()})
    return records


def table(records: list[dict], threshold: float, key: str) -> str:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    scores = {g: np.array([[r[key]] for r in rs]) for g, rs in sorted(groups.items())}
    agg = aggregate(scores)
    lines = [
        f"| group | reached {threshold} | kept (last evaluation) | kept (final policy, {records[0]['episodes']} "
        f"episodes) | share kept [95% CI] | final policy's success, mean [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g, rs in sorted(groups.items()):
        reached = [r for r in rs if r["reached"]]
        kept_last = sum(r["kept_last_eval"] for r in reached)
        kept = sum(r[key] >= threshold for r in reached)
        a = agg[g]
        lines.append(
            f"| {g} | {len(reached)}/{len(rs)} | {kept_last}/{len(reached)} | {kept}/{len(reached)} | "
            f"{share_interval(kept, len(reached))} | {a['mean']:.2f} [{a['mean_low']:.2f}, {a['mean_high']:.2f}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = run_dir_parser(__doc__, 50, "episodes per final policy")
    parser.add_argument("--key", default="policy_success_any", help="which final-policy success the table uses")
    args = parser.parse_args()
    return run_dir_study(args, measure, lambda records: table(records, args.threshold, args.key))


if __name__ == "__main__":
    sys.exit(main())
