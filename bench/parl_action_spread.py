"""How much a PARL/PEBBLE run's learned reward varies with the action at a fixed state.

    python bench/parl_action_spread.py RUN_DIR [RUN_DIR ...] [--out FILE.md]

For each run's last checkpoint: the standardised learned reward (as SAC sees it) on 2,000 states
of its replay buffer, once with the logged actions and 16 times with uniform random actions. Prints
its spread over states, its mean spread over actions at a fixed state, and the mean reward on
successful and other transitions. Meta-World's true reward is a function of the state, so any
spread over actions is the reward model's own and a policy can collect it without doing the task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from agents.parl.train import LearnedReward  # noqa: E402
from embodied.checkpoint import load_checkpoint  # noqa: E402


def spread(run_dir: Path) -> dict:
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
    return {"run": run_dir.name, "reward_input": "state-action" if use_action else "state",
            "spread_over_states": float(logged.std()), "spread_over_actions": float(random.std(0).mean()),
            "reward_success": float(logged[success].mean()) if success.any() else float("nan"),
            "reward_other": float(logged[~success].mean()) if (~success).any() else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = ["| run | reward input | spread over states | spread over actions at a state | reward on success | "
             "on other |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for run in args.runs:
        r = spread(run)
        lines.append(f"| {r['run']} | {r['reward_input']} | {r['spread_over_states']:.2f} | "
                     f"{r['spread_over_actions']:.2f} | {r['reward_success']:.2f} | {r['reward_other']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
