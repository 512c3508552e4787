"""Resumable records for the bench studies: one JSON line per finished job; jobs already recorded are skipped.

A killed study loses only the jobs in flight; running the same command again does the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_jobs(
    path: Path,
    jobs: list[tuple],
    work: Callable[[tuple], dict],
    key: Callable[[dict], tuple],
    processes: int = 1,
    describe: Callable[[dict], str] = json.dumps,
) -> None:
    """Run each job ``work(job)`` whose ``key`` is not yet in ``path``'s records and append its record there.

    ``processes`` > 1 runs them in that many spawned processes (``work`` must then be a module-level function);
    each process should set its own torch thread count.
    """
    done = {key(r) for r in read_records(path)}
    todo = [job for job in jobs if tuple(job) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)

    def record(result: dict) -> None:
        with path.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(describe(result), flush=True)

    if processes <= 1:
        for job in todo:
            record(work(job))
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for result in pool.imap_unordered(work, todo):
            record(result)
