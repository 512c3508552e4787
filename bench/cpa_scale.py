"""CPA at scale: time and transferred-label accuracy of our solvers and POT's, side by side.

    python bench/cpa_scale.py --sizes 500,1000,2000,5000 [--pot-max 2000] [--threads 2]

Every solver gets the same segments, cost matrices (standardised state-action segments, Euclidean,
scaled to [0, 1]) and labels; times cover the solve only (costs and label transfer excluded):
- ours, plain: factored entropic GW (``agents/pearl/gw.py``, rank-32 randomised-SVD factors), one start;
- ours, CPA: what ``embodied train pearl`` runs: plain GW + fused GW from two starts (3 solves);
- POT entropic: ``ot.gromov.entropic_gromov_wasserstein`` at the same epsilon (PGD, dense, torch);
- POT exact: ``ot.gromov.gromov_wasserstein`` (conditional gradient), small n only.
POT's low-rank-coupling GW (``lowrank_gromov_wasserstein_samples``, rank 32) is not in the table:
at n = 500 it did not finish 20 outer iterations in 5 minutes here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from agents.pearl.cpa import (
    GWConfig,
    arm_cost,
    cost_matrix,
    factored,
    label_accuracy,
    segment_features,
    solve_fused,
    transfer_labels,
    zero_shot_start,
)
from agents.pearl.gw import fused_gw
from embodied.data import NoiseSchedule, collect, sample_segments
from embodied.make import make_env
from embodied.teacher import ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert


def episodes(task: str, n: int, seed: int):
    env = make_env(f"embodied/{task}")
    return collect(
        env,
        scripted_expert(env),
        n,
        NoiseSchedule((0.0, 0.3, 1.0, 3.0), (0.0, 0.1, 0.5, 1.0)),
        seed=seed,
        max_steps=200,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,1000,2000,5000")
    parser.add_argument("--pot-max", type=int, default=2000, help="skip POT's dense solvers above this n (O(n^3))")
    parser.add_argument("--exact-max", type=int, default=1000)
    parser.add_argument("--source", default="button-press-v3")
    parser.add_argument("--target", default="button-press-wall-v3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epsilon", type=float, default=5e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    src_eps, tgt_eps = episodes(args.source, 80, 0), episodes(args.target, 80, 10_000)
    teacher = ScriptedTeacher()
    cfg = GWConfig(epsilon=args.epsilon)
    print(f"{args.source} -> {args.target}, {args.threads} torch threads, epsilon {args.epsilon}")
    print("| n | solver | seconds | label accuracy |")
    print("| ---: | --- | ---: | ---: |")
    for n in sizes:
        rng = np.random.default_rng(n)
        src = sample_segments(src_eps, 25, n, rng)
        tgt = sample_segments(tgt_eps, 25, n, rng)
        source = teacher.label(src.rewards, *sample_pairs(n, 5 * n, rng))
        first, second = sample_pairs(n, 5000, rng)
        truth = teacher.label(tgt.rewards, first, second).label
        fs, ft = segment_features(src), segment_features(tgt)
        c_src, c_tgt = cost_matrix(fs), cost_matrix(ft)
        p = torch.full((n,), 1.0 / n, dtype=torch.float64)

        def ours_plain():
            return fused_gw(factored(c_src, cfg.rank), factored(c_tgt, cfg.rank), cfg.epsilon).plan

        def ours_cpa():
            cross = factored(arm_cost(src, tgt), cfg.rank)
            results = solve_fused(factored(c_src, cfg.rank), factored(c_tgt, cfg.rank), cross, cfg)
            return results[zero_shot_start({name: r.objective for name, r in results.items()})].plan

        solvers = [
            ("ours: factored entropic GW, 1 start (incl. rank-32 factoring)", ours_plain),
            ("ours: CPA = plain + fused GW from 2 starts, best objective", ours_cpa),
        ]
        if n <= args.pot_max:
            solvers.append(
                (
                    "POT entropic_gromov_wasserstein (dense, same epsilon)",
                    lambda: ot.gromov.entropic_gromov_wasserstein(
                        c_src, c_tgt, p, p, "square_loss", epsilon=cfg.epsilon, solver="PGD", max_iter=1000, tol=1e-9
                    ),
                )
            )
        if n <= args.exact_max:
            solvers.append(
                (
                    "POT gromov_wasserstein (exact CG)",
                    lambda: torch.as_tensor(
                        ot.gromov.gromov_wasserstein(
                            c_src.numpy(), c_tgt.numpy(), ot.unif(n), ot.unif(n), "square_loss", numItermaxEmd=1_000_000
                        )
                    ),
                )
            )
        for name, solve in solvers:
            start = time.perf_counter()
            plan = solve()
            seconds = time.perf_counter() - start
            labels, _ = transfer_labels(plan.to(torch.float64), source, first, second)
            print(f"| {n} | {name} | {seconds:.1f} | {label_accuracy(labels, truth):.3f} |", flush=True)
        if n > args.pot_max:
            print(f"| {n} | POT entropic_gromov_wasserstein (dense) | skipped (n > --pot-max) | |", flush=True)


if __name__ == "__main__":
    main()
