"""A small problem on which learned-reward PEBBLE runs learn the task and then lose it, while the SAC oracle keeps it.

    python bench/parl_forgetting_toy.py --seeds 0-4 --out bench/results/parl_forgetting_toy.jsonl   # runs
    python bench/parl_forgetting_toy.py --report bench/results/parl_forgetting_toy.jsonl             # the table

The task, registered here as ``embodied/point-hold-toy-v0``, is shaped like a Meta-World one: a 2-D hand moves
(0.2 per step) from near (-0.5, -0.5) to a goal at (0.5, 0.5) and must stay; two of the four action dimensions do
nothing (like the gripper on a pushing task); the observation adds ten per-episode random features that do not
matter (like object placements); the reward is a function of the state after the step, -max(d - 0.1, 0), flat
inside the goal region; success is d < 0.15; 30-step episodes. Every run is ``embodied train parl`` on it (in this
process, where the task is registered): 4000 env steps, 300 random, no pre-training, 30 labels every 300 steps up
to 300, 10-step segments, SAC 2 x 128 with batch 128, 5 evaluation episodes every 300 steps; arms PEBBLE with a
reward of s (the default), PEBBLE with a reward of (s, a), and the SAC oracle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

TASK = "point-hold-toy-v0"
CLEAN_TASK = "point-hold-toy-clean-v0"  # the same task without the ten irrelevant features
ARMS = {  # arm: (method, reward input, task)
    "pebble-state": ("pebble", "state", TASK),
    "pebble-state-action": ("pebble", "state-action", TASK),
    "sac": ("sac", "state", TASK),
    "pebble-state-clean": ("pebble", "state", CLEAN_TASK),
    "parl-state": ("parl", "state", TASK),
    "parl-state-clean": ("parl", "state", CLEAN_TASK),
    "sac-clean": ("sac", "state", CLEAN_TASK),
}


class PointHold(gym.Env):
    """Move the hand to a fixed goal and keep it there (see the module docstring)."""

    goal = np.array([0.5, 0.5], np.float32)

    def __init__(self, nuisance: int = 10):
        self.nuisance = nuisance
        self.observation_space = gym.spaces.Box(-1, 1, (2 + nuisance,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.hand, self.features]).astype(np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.hand = (np.array([-0.5, -0.5]) + self.np_random.uniform(-0.1, 0.1, 2)).astype(np.float32)
        self.features = self.np_random.uniform(-1, 1, self.nuisance).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self.hand = np.clip(self.hand + 0.2 * np.clip(action[:2], -1, 1), -1, 1).astype(np.float32)
        distance = float(np.linalg.norm(self.hand - self.goal))
        return self._obs(), -max(distance - 0.1, 0.0), False, False, {"success": float(distance < 0.15)}


def register() -> None:
    for task, nuisance in ((TASK, 10), (CLEAN_TASK, 0)):
        if f"embodied/{task}" not in gym.registry:
            gym.register(f"embodied/{task}", entry_point=PointHold, max_episode_steps=30, kwargs={"nuisance": nuisance})


def run(arm: str, seed: int) -> dict:
    import torch

    import envs  # noqa: F401  (the embodied/* ids, before ours)
    from embodied.cli import main

    torch.set_num_threads(1)
    register()
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
        rows = [json.loads(line) for line in (Path(tmp) / "r" / "metrics.jsonl").read_text().splitlines()]
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
    from embodied.sweep import parse_seeds

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default="0-4")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("runs/parl_forgetting_toy.jsonl"))
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.report:
        print(report(args.report), end="")
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
