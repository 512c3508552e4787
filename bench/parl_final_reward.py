"""Whom each run's final learned reward ranks higher: the run's final policy or the scripted expert.

    python bench/parl_final_reward.py runs/parl_labels_scarce --group-by method query_episodes --episodes 10 \
        --workers 2 --out bench/results/parl_final_reward_scarce
    python bench/parl_final_reward.py bench/results/parl_final_reward_scarce/records.jsonl   # the table again

A learned-reward run that reached the task and lost it, or never reached it, was trained on a reward that is
fixed after its last feedback session. Two causes look alike in the success curve: the reward pays more for
what the policy does than for solving the task (the policy did what it was asked; the labels did not pin the
task down), or the reward does pay more for solving it and SAC did not find or keep that (an optimisation
failure). Rolling out the final policy and the task's scripted expert on the same seeded episodes and summing
the final reward over each tells them apart. Every run's ``policy.pt`` and the reward in its last checkpoint
(read through the project's checked loader) are evaluated in parallel processes of one torch thread each.
Writes one record per run (``records.jsonl``) and a table (``report.md``): per group and outcome (reached the
threshold and kept it at the last evaluation, reached and lost it, never reached), how many runs' learned rewards
rank the expert's episodes above the final policy's (share with its 95 % Wilson interval) and the mean difference
per step in the reward's standard deviations (as SAC saw it), and the same ranking by the true reward.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/records.py, also when run through runpy

import numpy as np  # noqa: E402

from embodied.report import share_interval  # noqa: E402
from records import chosen_runs, measure_runs, run_dir_parser, run_dir_study  # noqa: E402  (bench/records.py)

EVAL_SEED = 30_000_000  # away from the training evaluations (10_000_000 + seed) and parl_final_policy's


def score_run(job: dict) -> dict:
    """In a worker with one torch thread: the final reward's mean per-step value on the final policy's and the
    expert's episodes (the same seeds), and each one's success at any step and at the last step."""
    import torch

    torch.set_num_threads(1)
    import envs  # noqa: F401
    from agents.parl.train import LearnedReward
    from embodied.checkpoint import load_checkpoint
    from embodied.data.collect import rollout
    from embodied.make import make_env
    from embodied.policies import make_policy

    env = make_env(f"embodied/{job['task']}", max_episode_steps=job["max_steps"])
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    reward = LearnedReward(obs_dim, act_dim, job["ensemble_size"], "cpu", use_action=job["use_action"])
    reward.load_state_dict(load_checkpoint(job["checkpoint"])["reward"])
    out = {}
    for who, spec in (("policy", job["policy"]), ("expert", "scripted")):
        policy = make_policy(spec, env)
        learned, true, success, final = [], [], [], []
        for i in range(job["episodes"]):
            episode = rollout(env, policy, EVAL_SEED + 1000 * job["seed"] + i)
            obs, act = np.asarray(episode.observations[:-1], np.float32), np.asarray(episode.actions, np.float32)
            learned.append(float(reward(obs, act).mean()))
            true.append(float(np.mean(episode.rewards)))
            success.append(bool(episode.success))
            final.append(bool(np.asarray(episode.infos.get("success", [False]))[-1]))  # held at the last step
        out[who] = {
            "learned": np.mean(learned),
            "true": np.mean(true),
            "success": np.mean(success),
            "success_final": np.mean(final),
        }
    return out


def outcome(measures: dict) -> str:
    if not measures["reached"]:
        return "never reached"
    return "kept" if measures["kept"] else "reached, lost"


def measure(args) -> list[dict]:
    records, results = measure_runs(
        args,
        [r for r in chosen_runs(args) if r.config.get("method") != "sac"],
        score_run,
        lambda m: {"outcome": outcome(m)},
        lambda run: {
            "checkpoint": str(run.path / "checkpoints" / "last.pt"),
            "ensemble_size": run.config["ensemble_size"],
            "use_action": run.config.get("reward_input", "state-action") == "state-action",
        },
        needed=("policy.pt", "checkpoints/last.pt"),
    )
    for record, result in zip(records, results):
        scores = {f"{who}_{key}": float(value) for who, r in result.items() for key, value in r.items()}
        record.update(episodes=args.episodes, **scores)
    return records


OUTCOMES = ("kept", "reached, lost", "never reached")


def table(records: list[dict]) -> str:
    lines = [
        f"| group | outcome | runs | final policy's success ({records[0]['episodes']} episodes): at any step, at the "
        "last step | the learned reward "
        "ranks the expert's episodes higher | share [95% CI] | expert minus final policy, learned reward per step, "
        "mean [min, max] | the true reward ranks the expert's higher | expert minus final policy, true reward per "
        "step, mean |",
        "| --- | --- | ---: | --- | ---: | --- | --- | ---: | --- |",
    ]
    for group in sorted({r["group"] for r in records}):
        for kind in OUTCOMES:
            rs = [r for r in records if r["group"] == group and r["outcome"] == kind]
            if not rs:
                continue
            gap = np.array([r["expert_learned"] - r["policy_learned"] for r in rs])
            true_gap = np.array([r["expert_true"] - r["policy_true"] for r in rs])
            higher = int((gap > 0).sum())
            lines.append(
                f"| {group} | {kind} | {len(rs)} | {np.mean([r['policy_success'] for r in rs]):.2f}, "
                f"{np.mean([r['policy_success_final'] for r in rs]):.2f} | "
                f"{higher}/{len(rs)} | {share_interval(higher, len(rs))} | "
                f"{gap.mean():+.2f} [{gap.min():+.2f}, {gap.max():+.2f}] | {int((true_gap > 0).sum())}/{len(rs)} | "
                f"{true_gap.mean():+.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = run_dir_parser(__doc__, 10, "episodes of each of the two policies per run")
    args = parser.parse_args()
    return run_dir_study(args, measure, table)


if __name__ == "__main__":
    sys.exit(main())
