"""RePo learning at small scale: reward error, KL against its budget, dual variable, and evaluation
return against a random policy on the same evaluation seeds.

    python bench/repo_learning.py                                  # train (--preset cpu-small), then report
    python bench/repo_learning.py --report runs/repo-reach-cpu --plot bench/results/repo_learning.png
    python bench/repo_learning.py --mode dreamer --variant distractor --run-name dreamer-reach-distractor

The report reads the run's metrics.jsonl; the random baseline is measured here, on the evaluation
seeds the training loop uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agents.repo.train import RePoConfig, make_pixel_env, run_repo
from embodied.config import config_from_dict, parse_config
from embodied.runs import read_metrics


def random_return(cfg: RePoConfig, episodes: int) -> float:
    """Mean return of uniform random actions on the seeds ``evaluate_agent`` uses for this config."""
    env = make_pixel_env(cfg.task, cfg.variant, cfg.max_episode_steps, cfg.action_repeat)
    rng = np.random.default_rng(0)
    returns = []
    for i in range(episodes):
        env.reset(seed=10_000_000 + cfg.seed + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def window_means(records: list[dict], key: str, edges: list[int]) -> list[float]:
    """Mean of ``key`` over the records with step in (edges[i-1], edges[i]]."""
    out = []
    for lo, hi in zip([-1] + edges[:-1], edges):
        values = [r[key] for r in records if key in r and lo < r["step"] <= hi]
        out.append(float(np.mean(values)) if values else float("nan"))
    return out


def report(run_dir: Path, plot: Path | None) -> None:
    cfg = config_from_dict(RePoConfig, json.loads((run_dir / "config.json").read_text()))
    records = read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval/return" in r]
    if not evals:
        raise SystemExit(f"no evaluation in {run_dir}/metrics.jsonl yet")
    baseline = random_return(cfg, cfg.eval_episodes)
    edges = [r["step"] for r in evals]
    mse, kl, beta = (window_means(records, f"model/{k}", edges) for k in ("reward_mse", "kl", "beta"))
    print(
        f"{cfg.mode} on {cfg.task}-{cfg.variant}: batch {cfg.batch_size} x {cfg.seq_len}, "
        f"{cfg.train_steps} updates / {cfg.train_every} env steps, target KL {cfg.wm.target_kl}, "
        f"random policy return {baseline:.1f} (same {cfg.eval_episodes} eval seeds)"
    )
    print("| env steps | reward MSE | KL (nats) | beta | eval return | eval success |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, m, k, b in zip(evals, mse, kl, beta):
        print(f"| {r['step']} | {m:.3f} | {k:.2f} | {b:.2e} | {r['eval/return']:.1f} | {r['eval/success_rate']:.2f} |")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        model = [r for r in records if "model/kl" in r]
        fig, axes = plt.subplots(1, 4, figsize=(18, 3.5))
        axes[0].plot([r["step"] for r in model], [r["model/reward_mse"] for r in model])
        axes[0].set_yscale("log")
        axes[0].set_title("reward prediction MSE")
        axes[1].plot([r["step"] for r in model], [r["model/kl"] for r in model], label="KL")
        axes[1].axhline(cfg.wm.target_kl, color="k", ls="--", label="budget")
        axes[1].set_yscale("log")
        axes[1].set_title("KL(posterior || prior)")
        axes[1].legend()
        axes[2].plot([r["step"] for r in model], [r["model/beta"] for r in model])
        axes[2].set_yscale("log")
        axes[2].set_title("dual variable beta")
        axes[3].plot(edges, [r["eval/return"] for r in evals], marker="o", label=cfg.mode)
        axes[3].axhline(baseline, color="k", ls="--", label="random policy")
        axes[3].set_title(f"eval return ({cfg.task}-{cfg.variant})")
        axes[3].legend()
        for ax in axes:
            ax.set_xlabel("environment steps")
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=100)
        print(f"plot: {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="only report on this finished (or running) run directory")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--variant", default="pixels")
    parser.add_argument("--mode", default="repo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-name", default=None)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: one per core; 1 beside other jobs)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    args = parser.parse_args()
    if args.report is None:
        name = args.run_name or f"repo-learning-{args.task}-{args.variant}-{args.mode}-s{args.seed}"
        cfg = parse_config(
            RePoConfig,
            ["--preset", "cpu-small", "--task", args.task, "--variant", args.variant, "--mode", args.mode]
            + ["--device", args.device, "--seed", str(args.seed), "--threads", str(args.threads)]
            + ["--run-name", name, "--no-video"]
            + (["--resume"] if args.resume else []),
        )
        run_repo(cfg)
        args.report = Path(cfg.run_dir) / name
    report(args.report, args.plot)


if __name__ == "__main__":
    main()
