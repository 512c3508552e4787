"""Where is a PEARL reward model wrong? Per-transition diagnosis of the rewards IQL is trained on.

    python bench/pearl_reward_probe.py runs/pearl_table2/table-A-to-B-{oracle,cpa}-*-s0 [...]

For each run directory (a PEARL run with ``reward.pt`` and its target dataset), over every transition
of the target data (the learned reward per step, standardised as ``relabel`` does: what IQL sees with
``--iql-episode-credit 0 --iql-top 1``):
- ``rank corr``: Spearman correlation of the learned reward with the task's true dense reward;
- ``near-success corr``: the same on the transitions of the top 10 % true reward (where the policy
  must be told apart from almost-right behaviour);
- ``success gap``: mean learned reward on steps where the task is solved minus on the others, in
  standard deviations (how much the reward pulls toward success); with ``success steps`` the
  fraction of steps in the data that are successes;
- ``std/error corr`` (Gaussian models): Spearman correlation of the predicted std with the rank
  error |rank(learned) - rank(true)|: does RRL's uncertainty flag the transitions it gets wrong?
- ``episode corr``: Spearman correlation of the learned return of each whole episode with its true
  return (what ``--iql-top`` ranks by); ``top-quarter success``: the true success rate of the best
  quarter of the episodes by learned return (``data success``: of all episodes); ``top-quarter corr``:
  the step-level rank correlation within that quarter (what IQL reads with ``--iql-top 0.25``);
- ``corr with next``: Spearman correlation with the next run's learned reward on the same data
  (e.g. CPA+RRL next to CPA+plain: near 1 means IQL saw the same reward from both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents.pearl.train import best_episodes, new_reward_model, relabel
from embodied.checkpoint import load_checkpoint
from embodied.data import load_episodes


def ranks(x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    out[np.argsort(x, kind="stable")] = np.arange(len(x))
    return out / max(len(x) - 1, 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def load_run(run_dir: Path) -> tuple[dict, list, torch.nn.Module]:
    """A finished PEARL run's config, its target episodes and its trained reward model (eval mode)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["target_data"] = cfg.get("target_data") or str(run_dir / "target.hdf5")  # shared data, else the run's own
    episodes = load_episodes(cfg["target_data"])
    reward = new_reward_model(
        cfg["reward_model"],
        cfg["labels"],
        cfg.get("few_shot_labels", 0),
        episodes[0].observations.shape[-1],
        episodes[0].actions.shape[-1],
    )
    reward.load_state_dict(load_checkpoint(run_dir / "reward.pt"))
    return cfg, episodes, reward.eval()


def probe(run_dir: Path) -> tuple[dict, str, np.ndarray]:
    """The row of ``run_dir``, its target data's path and its standardised learned reward per transition."""
    cfg, episodes, model = load_run(run_dir)
    per_episode = relabel(model, episodes, "cpu")
    learned = np.concatenate(per_episode)  # the rewards IQL trains on with --iql-episode-credit 0 --iql-top 1
    solved = np.array([ep.success for ep in episodes], dtype=float)
    best = best_episodes(per_episode, 0.25)
    true = np.concatenate([ep.rewards for ep in episodes])
    success = np.concatenate([np.asarray(ep.infos["success"], dtype=bool) for ep in episodes])
    std = None
    if model.gaussian:
        obs = torch.as_tensor(np.concatenate([ep.observations[:-1] for ep in episodes]), dtype=torch.float32)
        act = torch.as_tensor(np.concatenate([ep.actions for ep in episodes]), dtype=torch.float32)
        with torch.no_grad():
            std = model(obs, act)[1].numpy()
    top = true >= np.quantile(true, 0.9)
    row = {
        "run": run_dir.name,
        "labels": cfg["labels"],
        "reward_model": cfg["reward_model"],
        "rank_corr": spearman(learned, true),
        "near_success_corr": spearman(learned[top], true[top]),
        "episode_corr": spearman(
            np.array([r.sum() for r in per_episode]), np.array([ep.rewards.sum() for ep in episodes])
        ),
        "top_quarter_success": float(solved[best].mean()),
        "data_success": float(solved.mean()),
        "top_quarter_corr": spearman(
            np.concatenate([per_episode[i] for i in best]), np.concatenate([episodes[i].rewards for i in best])
        ),
        "success_steps": float(success.mean()),
        "success_gap": float(learned[success].mean() - learned[~success].mean()) if success.any() else float("nan"),
    }
    if std is not None:
        row["std_error_corr"] = spearman(std, np.abs(ranks(learned) - ranks(true)))
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        row.update(success_rate=s.get("success_rate"), reward_heldout_accuracy=s.get("reward_heldout_accuracy"))
    return row, cfg["target_data"], learned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    missing = [r for r in args.runs if not (r / "reward.pt").exists()]
    for r in missing:
        print(f"skipped {r}: no reward.pt (the run has not trained its reward model yet)")
    rows, previous = [], None
    for run in (r for r in args.runs if r not in missing):
        row, target, learned = probe(run)
        if previous is not None and previous[0] == target:  # the same data: compare the two rewards
            rows[-1]["corr_with_next"] = spearman(previous[1], learned)
        rows.append(row)
        previous = (target, learned)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(
        "| run | reward acc | IQL success | rank corr | near-success corr | success steps | success gap "
        "| std/error corr "
        "| corr with next | episode corr | top-quarter success | data success | top-quarter corr |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        print(
            f"| {r['run']} | {fmt(r.get('reward_heldout_accuracy'))} | {fmt(r.get('success_rate'))} "
            f"| {r['rank_corr']:.2f} "
            f"| {r['near_success_corr']:.2f} | {r['success_steps']:.3f} | {r['success_gap']:.2f} "
            f"| {fmt(r.get('std_error_corr'))} | {fmt(r.get('corr_with_next'))} | {r['episode_corr']:.2f} "
            f"| {r['top_quarter_success']:.2f} | {r['data_success']:.2f} | {r['top_quarter_corr']:.2f} |"
        )


if __name__ == "__main__":
    main()
