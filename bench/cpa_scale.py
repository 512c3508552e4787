"""CPA at scale: time and transferred-label accuracy of our GW solve vs POT's default exact solver.

    python bench/cpa_scale.py --sizes 500,1000,2000,5000 [--exact-max 2000] [--device auto]

Both solvers get the same cost matrices (standardised state-action segments of a mixed-quality
dataset, button-press -> button-press-wall). Ours is entropic GW on the torch backend (GPU when
present) with epsilon annealing, each stage warm-started from the last; POT's default is
``ot.gromov.gromov_wasserstein`` (conditional gradient with an exact EMD inner solver, CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from agents.pearl.cpa import GWConfig, cost_matrix, gw_coupling, label_accuracy, segment_features, transfer_labels
from embodied.data import NoiseSchedule, collect, sample_segments
from embodied.device import resolve_device
from embodied.make import make_env
from embodied.teacher import ScriptedTeacher, sample_pairs
from envs.experts import scripted_expert


def episodes(task: str, n: int, seed: int):
    env = make_env(f"embodied/{task}")
    return collect(env, scripted_expert(env), n, NoiseSchedule((0.0, 0.3, 1.0, 3.0), (0.0, 0.1, 0.5, 1.0)),
                   seed=seed, max_steps=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,1000,2000,5000")
    parser.add_argument("--exact-max", type=int, default=2000, help="skip POT's exact solver above this n (too slow)")
    parser.add_argument("--source", default="button-press-v3")
    parser.add_argument("--target", default="button-press-wall-v3")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    src_eps, tgt_eps = episodes(args.source, 80, 0), episodes(args.target, 80, 10_000)
    teacher = ScriptedTeacher()
    print("| n | solver | device | seconds | label accuracy |")
    print("| ---: | --- | --- | ---: | ---: |")
    for n in sizes:
        rng = np.random.default_rng(n)
        src = sample_segments(src_eps, 25, n, rng)
        tgt = sample_segments(tgt_eps, 25, n, rng)
        source = teacher.label(src.rewards, *sample_pairs(n, 5 * n, rng))
        first, second = sample_pairs(n, 5000, rng)
        truth = teacher.label(tgt.rewards, first, second).label
        c_src = cost_matrix(segment_features(src), device)
        c_tgt = cost_matrix(segment_features(tgt), device)
        solvers = [("entropic+anneal (ours)", lambda: gw_coupling(c_src, c_tgt, GWConfig("entropic")), device)]
        if n <= args.exact_max:
            p, q = ot.unif(n), ot.unif(n)
            solvers.append(("POT gromov_wasserstein (exact)", lambda: torch.as_tensor(ot.gromov.gromov_wasserstein(
                c_src.cpu().numpy(), c_tgt.cpu().numpy(), p, q, "square_loss", numItermaxEmd=1_000_000)), "cpu"))
        for name, solve, dev in solvers:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            plan = solve()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            labels, _ = transfer_labels(plan.to(c_src.device), source, first, second)
            print(f"| {n} | {name} | {dev} | {seconds:.1f} | {label_accuracy(labels, truth):.3f} |", flush=True)
        if n > args.exact_max:
            print(f"| {n} | POT gromov_wasserstein (exact) | cpu | skipped (n > --exact-max) | |", flush=True)


if __name__ == "__main__":
    main()
