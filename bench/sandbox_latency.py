"""Sandbox latency: one planning decision = all rules on one transition, one worker round trip.

    python bench/sandbox_latency.py [--rules 10] [--decisions 500]

Prints mean and p95 milliseconds per decision, the cold start of a worker, and the cost of a
deadline kill (the worker is killed and replaced).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agents.walle.rules import Transition, propose_precondition_rules
from agents.walle.world_model import NeuroSymbolicWorldModel
from embodied.sandbox import RuleTimeout, WorkerPool, compile_function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=500)
    args = parser.parse_args()
    preds = ["holding_block", "drawer_open", "near_handle", "block_in_drawer", "gripper_empty", "near_block"]
    logged = [
        Transition(
            {p: bool((i >> k) & 1) for k, p in enumerate(preds)}, {"skill": f"skill_{i % 4}()", "args": []}, bool(i % 3)
        )
        for i in range(16)
    ]
    rules = propose_precondition_rules(logged)[: args.rules]
    model = NeuroSymbolicWorldModel(rules)

    cold_pool = WorkerPool(size=1)
    probe = compile_function("def probe(s, a, g):\n    return 1")
    t0 = time.perf_counter()
    cold_pool.run({probe.id: probe.source}, [(probe.id, ({}, {}, {}))], 1000, 1.0)
    cold = (time.perf_counter() - t0) * 1000
    cold_pool.close()

    model.check(logged[0].state, "skill_0()")  # warm the shared pool
    times = []
    for i in range(args.decisions):
        t0 = time.perf_counter()
        model.check(logged[i % len(logged)].state, f"skill_{i % 4}()")
        times.append((time.perf_counter() - t0) * 1000)

    slow = compile_function(
        "def slow(s, a, g):\n    x = [1]\n    y = [1]\n    for i in "
        + str([0] * 80)
        + ":\n        x = [x, x]\n        y = [y, y]\n    return x == y",
        seconds=0.2,
    )
    t0 = time.perf_counter()
    try:
        slow({}, {}, {})
    except RuleTimeout:
        pass
    kill = (time.perf_counter() - t0) * 1000
    print(
        "| rules per decision | decisions | mean ms | p95 ms | cold worker start ms "
        "| deadline 0.2 s + kill + restart ms |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {len(rules)} | {args.decisions} | {np.mean(times):.2f} | {np.percentile(times, 95):.2f} "
        f"| {cold:.0f} | {kill:.0f} |"
    )


if __name__ == "__main__":
    main()
