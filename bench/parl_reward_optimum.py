"""Where does the policy that maximises a learned reward go? r(s) against r(s, a) on point-hold, solved exactly.

    python bench/parl_reward_optimum.py --seeds 0-11 --out bench/results/parl_reward_optimum.jsonl   # fits, SAC
    python bench/parl_reward_optimum.py --report bench/results/parl_reward_optimum.jsonl             # the table

No RL: what a learner that optimises the learned reward converges to. Per seed, 100 episodes of
``embodied/point-hold-clean-v0`` (reach a goal and stay) by the scripted expert with Gaussian action noise
0.3 / 1 / 3 (the episodes of a policy on its way to the task: many pass the goal, few stay); ``labels`` pairs of
10-step segments labelled by the scripted teacher; PARL's reward ensemble (``agents.parl.train.LearnedReward``:
3 members, 20 epochs, as a feedback session fits it) with the state (the default) or the state and the action as
input. Then the policy that maximises the ensemble's mean reward, by value iteration on the hand's lattice
(``envs.point_hold.reward_optimal_path``), is rolled out from the start for an episode (30 steps): does it
reach the goal (distance < 0.15, the task's success) and is it still there at the end (the held success of
the PARL studies)? Held-out preference accuracy on fresh pairs of the same data says how well each fits.
Then (``--sac-steps``, 3000 by default) a learner on the same reward held still: SAC from scratch on it
(``agents.parl.sac.train_on_fixed_reward``), to check that what the reward makes optimal is what SAC learns.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SETTINGS = [(labels, reward_input) for labels in (300, 1000, 3000) for reward_input in ("state", "state-action")]


def fit(seed: int, labels: int, reward_input: str, sac_steps: int = 0) -> dict:
    import torch

    from agents.parl.sac import SACConfig, train_on_fixed_reward
    from agents.parl.train import LearnedReward
    from embodied.data import NoiseSchedule, collect, sample_segments
    from embodied.make import make_env
    from embodied.reward_models import RewardTrainConfig, preference_accuracy, train_reward_model
    from embodied.teacher import ScriptedTeacher, sample_pairs
    from envs.experts import scripted_expert
    from envs.point_hold import reward_optimal_path

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = make_env("embodied/point-hold-clean-v0")
    episodes = collect(env, scripted_expert(env), 100, NoiseSchedule((0.3, 1.0, 3.0)), seed=seed * 1000, max_steps=30)
    teacher = ScriptedTeacher()
    train = sample_segments(episodes, 10, labels, rng)
    prefs = teacher.label(train.rewards, *sample_pairs(labels, labels, rng))
    held = sample_segments(episodes, 10, 1000, rng)
    held_prefs = teacher.label(held.rewards, *sample_pairs(1000, 1000, rng))
    reward = LearnedReward(2, 4, 3, "cpu", use_action=reward_input == "state-action")
    for i, member in enumerate(reward.members):
        train_reward_model(
            member, train.observations, train.actions, prefs, RewardTrainConfig(epochs=20), seed=seed * 100 + i
        )
    with torch.no_grad():
        path = reward_optimal_path(lambda o, a: reward.raw(torch.as_tensor(o), torch.as_tensor(a)).numpy())
    distance = np.linalg.norm(path - 0.5, axis=1)
    record = {
        "seed": seed,
        "labels": labels,
        "reward_input": reward_input,
        "reached": bool((distance < 0.15).any()),
        "held": bool(distance[-1] < 0.15),
        "final_distance": round(float(distance[-1]), 4),
        "heldout_accuracy": float(
            np.mean([preference_accuracy(m, held.observations, held.actions, held_prefs) for m in reward.members])
        ),
    }
    if sac_steps:  # a learner on the same reward, held still: SAC from scratch, the toy studies' settings
        obs = np.concatenate([ep.observations[:-1] for ep in episodes])
        act = np.concatenate([ep.actions for ep in episodes])
        with torch.no_grad():  # standardised over the expert episodes' transitions, as SAC sees a relabelled buffer
            reward.standardise_by(reward.raw(torch.as_tensor(obs), torch.as_tensor(act)).numpy())
        rows = train_on_fixed_reward(
            make_env("embodied/point-hold-clean-v0"),
            make_env("embodied/point-hold-clean-v0"),
            lambda o, a: float(reward(np.asarray(o, np.float32)[None], np.asarray(a, np.float32)[None])[0]),
            sac_steps,
            seed,
            rng,
            SACConfig(hidden=128, batch_size=128),
            random_steps=300,
            eval_every=300,
        )
        record["sac_curve"] = [[r["step"], r["success_rate"], r["success_final"]] for r in rows]
    return record


def report(path: Path) -> str:
    from scipy.stats import binomtest

    from embodied.report import aggregate

    from records import read_records

    records = read_records(path)
    out = [
        f"Seeds {sorted({r['seed'] for r in records})}. Reached / held: runs whose reward-optimal policy reaches the "
        "goal within the episode / is still there at its end, with a 95 % Wilson interval on the held fraction; "
        "final distance from the goal and held-out preference accuracy: mean over seeds [95 % bootstrap CI] "
        "(`embodied.report.aggregate`).",
        "",
        "| labels | reward input | seeds | reached | held | held fraction | final distance | held-out accuracy |",
        "| ---: | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    sac = [
        "",
        "SAC from scratch on each fixed reward (standardised over the expert episodes' transitions; 2 x 128, batch "
        "128, 300 random steps, 5 evaluation episodes every 300 env steps): held success at the last evaluation "
        "(mean [95 % bootstrap CI]); runs whose held success reached 0.8 at some evaluation / of those, ended >= 0.8; "
        "success at any step at the last evaluation.",
        "",
        "| labels | reward input | seeds | final held success | reached held 0.8 / kept | final any-step success |",
        "| ---: | --- | ---: | --- | --- | --- |",
    ]
    for labels, reward_input in SETTINGS:
        rows = [r for r in records if (r["labels"], r["reward_input"]) == (labels, reward_input)]
        if not rows:
            continue
        held = sum(r["held"] for r in rows)
        low, high = binomtest(held, len(rows)).proportion_ci(method="wilson")
        cells = []
        for m in ("final_distance", "heldout_accuracy"):
            st = aggregate({"x": np.array([[r[m]] for r in rows])})["x"]
            cells.append(f"{st['mean']:.2f} [{st['mean_low']:.2f}, {st['mean_high']:.2f}]")
        out.append(
            f"| {labels} | {reward_input} | {len(rows)} | {sum(r['reached'] for r in rows)} | {held} "
            f"| {held / len(rows):.2f} [{low:.2f}, {high:.2f}] | " + " | ".join(cells) + " |"
        )
        curves = [np.array(r["sac_curve"]) for r in rows if "sac_curve" in r]
        if curves:
            final = aggregate({"x": np.array([[c[-1, 2]] for c in curves])})["x"]
            any_step = aggregate({"x": np.array([[c[-1, 1]] for c in curves])})["x"]
            reached = [c for c in curves if (c[:, 2] >= 0.8).any()]
            sac.append(
                f"| {labels} | {reward_input} | {len(curves)} "
                f"| {final['mean']:.2f} [{final['mean_low']:.2f}, {final['mean_high']:.2f}] "
                f"| {len(reached)} / {sum(c[-1, 2] >= 0.8 for c in reached)} "
                f"| {any_step['mean']:.2f} [{any_step['mean_low']:.2f}, {any_step['mean_high']:.2f}] |"
            )
    return "\n".join(out + (sac if len(sac) > 5 else [])) + "\n"


def _job(args: tuple[int, int, str, int]) -> dict:
    return fit(*args)


def main() -> None:
    from records import run_jobs, study_args, study_parser

    parser = study_parser(__doc__, seeds="0-11", out="runs/parl_reward_optimum.jsonl", jobs=2)
    parser.add_argument("--sac-steps", type=int, default=3000, help="env steps of SAC on each fixed reward (0: none)")
    args = study_args(parser, report)
    if args is None:
        return
    run_jobs(
        args.out,
        [(seed, *setting, args.sac_steps) for seed in args.seeds for setting in SETTINGS],
        _job,
        key=lambda r: (r["seed"], r["labels"], r["reward_input"]),
        processes=args.jobs,
    )


if __name__ == "__main__":
    main()
