"""Where is a PEARL reward model wrong? Per-transition diagnosis of the rewards IQL is trained on.

    embodied study bench/studies/pearl_success.toml      # the runs (records of the probe below are of these)
    python bench/pearl_reward_probe.py runs/pearl_success/*credit=1.0* --out bench/results/pearl_reward_probe.jsonl
    python bench/pearl_reward_probe.py --report bench/results/pearl_reward_probe.jsonl   # the table again

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
from scipy.stats import rankdata

from agents.pearl.train import best_episodes, load_trained_reward, relabel
from embodied.atomic import atomic_path
from embodied.reward_models import rank_correlation


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1], ties at their mean rank (as ``rank_correlation`` ranks)."""
    return (rankdata(x) - 1) / max(len(x) - 1, 1)


def probe(run_dir: Path) -> tuple[dict, str, np.ndarray]:
    """The row of ``run_dir``, its target data's path and its standardised learned reward per transition."""
    cfg, episodes, model = load_trained_reward(run_dir)
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
        "rank_corr": rank_correlation(learned, true),
        "near_success_corr": rank_correlation(learned[top], true[top]),
        "episode_corr": rank_correlation(
            np.array([r.sum() for r in per_episode]), np.array([ep.rewards.sum() for ep in episodes])
        ),
        "top_quarter_success": float(solved[best].mean()),
        "data_success": float(solved.mean()),
        "top_quarter_corr": rank_correlation(
            np.concatenate([per_episode[i] for i in best]), np.concatenate([episodes[i].rewards for i in best])
        ),
        "success_steps": float(success.mean()),
        "success_gap": float(learned[success].mean() - learned[~success].mean()) if success.any() else float("nan"),
    }
    if std is not None:
        row["std_error_corr"] = rank_correlation(std, np.abs(ranks(learned) - ranks(true)))
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        row.update(success_rate=s.get("success_rate"), reward_heldout_accuracy=s.get("reward_heldout_accuracy"))
    return row, cfg["target_data"], learned


def table(rows: list[dict]) -> str:
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    out = [
        "| run | reward acc | IQL success | rank corr | near-success corr | success steps | success gap "
        "| std/error corr | corr with next | episode corr | top-quarter success | data success | top-quarter corr |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['run']} | {fmt(r.get('reward_heldout_accuracy'))} | {fmt(r.get('success_rate'))} "
            f"| {r['rank_corr']:.2f} "
            f"| {r['near_success_corr']:.2f} | {r['success_steps']:.3f} | {r['success_gap']:.2f} "
            f"| {fmt(r.get('std_error_corr'))} | {fmt(r.get('corr_with_next'))} | {r['episode_corr']:.2f} "
            f"| {r['top_quarter_success']:.2f} | {r['data_success']:.2f} | {r['top_quarter_corr']:.2f} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="also write one JSON line per run to this records file")
    parser.add_argument("--report", type=Path, help="print the table of this records file and stop")
    args = parser.parse_args()
    if args.report:
        print(table([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]), end="")
        return
    torch.set_num_threads(1)
    missing = [r for r in args.runs if not (r / "reward.pt").exists()]
    for r in missing:
        print(f"skipped {r}: no reward.pt (the run has not trained its reward model yet)")
    rows, previous = [], None
    for run in (r for r in args.runs if r not in missing):
        row, target, learned = probe(run)
        if previous is not None and previous[0] == target:  # the same data: compare the two rewards
            rows[-1]["corr_with_next"] = rank_correlation(previous[1], learned)
        rows.append(row)
        previous = (target, learned)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(table(rows), end="")


if __name__ == "__main__":
    main()
