"""SAC on a fixed learned reward, r(s) against r(s, a): the reward input's effect without PARL's feedback loop.

    python bench/parl_fixed_reward.py --seeds 0-9 --out bench/results/parl_fixed_reward.jsonl   # runs (resumable)
    python bench/parl_fixed_reward.py --report bench/results/parl_fixed_reward.jsonl             # the table

Per seed: 12 episodes of Meta-World's scripted expert with mixed noise (as PEARL's collector), 600 segments of
25 steps, 1200 pairs labelled by the scripted teacher; one reward model of the state and one of state and action
(`embodied.reward_models.RewardModel`, 30 epochs, the same labels and seed), each standardised on the expert data.
Then SAC from scratch (`agents.parl.sac`, the PARL study's settings: 2 x 256, batch 128, 1000 random steps, 100-step
episodes) on each fixed reward, success at any step of 5 evaluation episodes every 1000 env steps. The reward never
changes, so what differs between the arms is only whether the model can pay for actions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def run(seed: int, use_action: bool, task: str, steps: int, episode_steps: int) -> dict:
    from agents.parl.sac import SACConfig, train_on_fixed_reward
    from embodied.data import NoiseSchedule, collect, sample_segments
    from embodied.make import make_env
    from embodied.reward_models import RewardModel, RewardTrainConfig, train_reward_model
    from embodied.teacher import ScriptedTeacher, sample_pairs
    from envs.experts import scripted_expert

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    env = make_env(f"embodied/{task}", max_episode_steps=episode_steps)
    eval_env = make_env(f"embodied/{task}", max_episode_steps=episode_steps)
    noise = NoiseSchedule((0.0, 0.5, 2.0), (0.0, 0.3, 1.0))
    episodes = collect(env, scripted_expert(env), 12, noise, seed=seed * 100, max_steps=episode_steps)
    seg = sample_segments(episodes, 25, 600, np.random.default_rng(seed))
    prefs = ScriptedTeacher().label(seg.rewards, *sample_pairs(600, 1200, rng))
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    model = RewardModel(obs_dim, act_dim, hidden=256, use_action=use_action)
    train_reward_model(model, seg.observations, seg.actions, prefs, RewardTrainConfig(epochs=30))
    with torch.no_grad():
        obs = torch.as_tensor(np.concatenate([e.observations[:-1] for e in episodes]), dtype=torch.float32)
        raw = model(obs, torch.as_tensor(np.concatenate([e.actions for e in episodes]), dtype=torch.float32))
    mean, std = float(raw.mean()), float(raw.std()) + 1e-6

    @torch.no_grad()
    def reward(o, a) -> float:
        t = lambda x: torch.as_tensor(np.asarray(x, np.float32)[None])  # noqa: E731
        return (float(model(t(o), t(a))[0]) - mean) / std

    start = time.time()
    rows = train_on_fixed_reward(
        env, eval_env, reward, steps, seed, rng, SACConfig(hidden=256, batch_size=128), max_steps=episode_steps
    )
    curve = [[row["step"], row["success_rate"]] for row in rows]
    arm = "state-action" if use_action else "state"
    return {"task": task, "seed": seed, "reward_input": arm, "curve": curve, "seconds": round(time.time() - start)}


def report(path: Path) -> str:
    """The runs' measures (``embodied.report.measures_section``: final success, mean over the curve, steps to
    reach and hold 0.8, retention; IQM and mean with 95 % CIs, P(r(s) better)), then each run's curve."""
    from embodied.report import RunRecord, measures_section

    from records import read_records

    records = read_records(path)
    groups: dict[str, list] = {}
    for r in records:
        rows = [{"step": step, "eval/success_rate": value} for step, value in r["curve"]]
        groups.setdefault(f"reward_input={r['reward_input']}", []).append(RunRecord(Path(str(r["seed"])), {}, rows))
    compare = [("reward_input=state", "reward_input=state-action")]
    out = [
        f"SAC on a fixed learned reward, {records[0]['task']}: success at any step of 5 evaluation episodes every "
        f"1000 env steps; seeds {sorted({r['seed'] for r in records})}.",
        *measures_section(dict(sorted(groups.items())), "eval/success_rate", 0.8, None, compare, reps=2000),
        "",
        "Per run, success every 1000 env steps:",
        "",
    ]
    for r in sorted(records, key=lambda r: (r["reward_input"], r["seed"])):
        out.append(f"- {r['reward_input']} seed {r['seed']}: {' '.join(f'{v:.1f}' for _, v in r['curve'])}")
    return "\n".join(out) + "\n"


def main() -> None:
    from records import study_args, study_parser

    parser = study_parser(__doc__, seeds="0-9", out="runs/parl_fixed_reward.jsonl")
    parser.add_argument("--task", default="drawer-close-v3")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--arms", default="state,state-action")
    args = study_args(parser, report)
    if args is None:
        return
    from records import run_jobs

    torch.set_num_threads(1)  # one process per core: run two of these side by side on a 2-core CPU
    run_jobs(
        args.out,
        [(seed, arm) for seed in args.seeds for arm in args.arms.split(",")],
        lambda job: run(job[0], job[1] == "state-action", args.task, args.steps, args.episode_steps),
        key=lambda r: (r["seed"], r["reward_input"]),
    )


if __name__ == "__main__":
    main()
