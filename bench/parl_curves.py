"""PARL vs PEBBLE vs SAC oracle: success rate against environment steps, same feedback budget.

    python bench/parl_curves.py --task button-press-v3 --method parl --seed 0      # one run
    python bench/parl_curves.py --report runs/parl_curves --plot runs/parl_curves.png

Each run writes runs/parl_curves/<task>-<method>-s<seed>/summary.json (the success curve); the
report prints a markdown table (final success mean +- std over seeds, and the area under the curve)
and draws the curves (matplotlib, from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from agents.parl.train import ParlConfig, run_parl

# what fits a 2-core CPU in about 8 minutes a run (~100 SAC steps/s between feedback sessions)
SCALE = dict(total_steps=30_000, max_episode_steps=200, seed_steps=1000, query_every=1500, queries_per_session=50,
             feedback_budget=1000, reward_epochs=20, batch_size=128, eval_every=3000, eval_episodes=10)


def report(root: Path, plot: Path | None) -> None:
    runs = defaultdict(list)
    for path in sorted(root.glob("*/summary.json")):
        s = json.loads(path.read_text())
        runs[(s["task"], s["method"])].append(s)
    print("| task | method | seeds | labels | success at end (mean +- std) | mean success over evals |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (task, method), items in sorted(runs.items()):
        final = np.array([s["final_success_rate"] for s in items])
        auc = np.array([np.mean([c[1] for c in s["curve"]]) for s in items])
        print(f"| {task} | {method} | {len(items)} | {items[0]['feedback']} | {final.mean():.2f} +- {final.std():.2f} "
              f"| {auc.mean():.2f} |")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tasks = sorted({t for t, _ in runs})
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for (t, method), items in sorted(runs.items()):
                if t != task:
                    continue
                steps = [c[0] for c in items[0]["curve"]]
                curves = np.array([[c[1] for c in s["curve"]] for s in items if len(s["curve"]) == len(steps)])
                ax.plot(steps, curves.mean(0), label=f"{method} ({len(curves)} seeds)")
                ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.2)
            ax.set_title(task)
            ax.set_xlabel("environment steps")
            ax.set_ylabel("success rate")
            ax.set_ylim(-0.05, 1.05)
            ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=100)
        print(f"wrote {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="button-press-v3")
    parser.add_argument("--method", default="parl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=Path("runs/parl_curves"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.report:
        report(args.report, args.plot)
        return
    cfg = ParlConfig(task=args.task, method=args.method, seed=args.seed, run_dir=args.root,
                     run_name=f"{args.task}-{args.method}-s{args.seed}", resume=True, video=False, **SCALE)
    run_parl(cfg)


if __name__ == "__main__":
    main()
