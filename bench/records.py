"""Resumable records for the bench studies: one JSON line per finished job; jobs already recorded are skipped.

A killed study loses only the jobs in flight; running the same command again does the rest.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def study_parser(doc: str, seeds: str, out: str, jobs: int | None = None) -> argparse.ArgumentParser:
    """The options every bench study shares: ``--seeds`` (a list or a range), ``--out`` (its records file),
    ``--report FILE`` (print the table of a records file instead of running) and, where jobs run in
    processes of their own, ``--jobs``."""
    from embodied.sweep import parse_seeds

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default=seeds, help="a list (0,1,2) or a range (0-9)")
    parser.add_argument("--out", type=Path, default=Path(out), help="records file (runs already in it are skipped)")
    parser.add_argument("--report", type=Path, help="print the table of this records file and stop")
    if jobs is not None:
        parser.add_argument("--jobs", type=int, default=jobs, help="jobs at a time (one torch thread each)")
    return parser


def study_args(parser: argparse.ArgumentParser, report: Callable[[Path], str]) -> argparse.Namespace | None:
    """Parsed options, or None once ``--report FILE`` has printed ``report(FILE)`` (nothing is to run)."""
    args = parser.parse_args()
    if args.report:
        print(report(args.report), end="")
        return None
    return args


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


def cell(values) -> str:
    """``mean [min, max]`` over seeds (the value alone for one seed)."""
    values = np.asarray(values, float)
    return f"{values.mean():.2f} [{values.min():.2f}, {values.max():.2f}]" if len(values) > 1 else f"{values[0]:.2f}"


def run_dir_parser(doc: str, episodes: int, episodes_help: str) -> argparse.ArgumentParser:
    """The options of a script that measures a study's finished runs again (their exported policies, their last
    checkpoints): the run directories or the script's own records file, which runs, how they are grouped and
    counted as reaching the threshold, how many episodes, in how many processes, and where the results go."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("source", type=Path, help="run directories (a study's out), or this script's records.jsonl")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="as embodied report")
    parser.add_argument("--seeds", default=None, help="only runs of these seeds, as embodied report")
    parser.add_argument("--group-by", nargs="+", default=["method"], help="config keys that name a group")
    parser.add_argument("--metric", default="eval/success_rate", help="the training evaluations' success key")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    parser.add_argument("--out", type=Path, default=None, help="directory for records.jsonl and report.md")
    return parser


def chosen_runs(args: argparse.Namespace) -> list:
    """The runs under ``args.source`` that ``--where`` and ``--seeds`` keep (a study's run directory may hold other
    seeds' runs, and ablations)."""
    from embodied.report import find_runs, of_seeds, select
    from embodied.sweep import parse_seeds

    runs = select(find_runs(args.source), args.where)
    return runs if args.seeds is None else of_seeds(runs, parse_seeds(args.seeds))


def measure_runs(
    args: argparse.Namespace,
    runs: list,
    worker: Callable[[dict], dict],
    record_fields: Callable[[dict], dict],
    job_fields: Callable = lambda run: {},
    needed: tuple[str, ...] = ("policy.pt",),
) -> tuple[list[dict], list[dict]]:
    """Per finished run (each of ``needed`` present): its record (name, group, seed, then ``record_fields`` of its
    training curve's measures at ``args.threshold``) and ``worker``'s result on its job (task, episode length,
    policy file, seed, ``args.episodes``, then ``job_fields(run)``), the jobs in ``args.workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from embodied.errors import EmbodiedError
    from embodied.report import group_label, run_measures

    records, jobs = [], []
    for run in runs:
        for name in needed:
            if not (run.path / name).exists():
                raise EmbodiedError(f"{run.path} has no {name} (unfinished?)")
        measures = run_measures(run, args.metric, args.threshold, None)
        records.append(
            {
                "name": run.path.name,
                "group": group_label(run, args.group_by),
                "seed": run.config["seed"],
                **record_fields(measures),
            }
        )
        jobs.append(
            {
                "task": run.config["task"],
                "max_steps": run.config["max_episode_steps"],
                "policy": str(run.path / "policy.pt"),
                "seed": run.config["seed"],
                "episodes": args.episodes,
                **job_fields(run),
            }
        )
    with ProcessPoolExecutor(args.workers) as pool:
        return records, list(pool.map(worker, jobs))


def run_dir_study(
    args: argparse.Namespace, measure: Callable[[argparse.Namespace], list[dict]], table: Callable[[list[dict]], str]
) -> int:
    """Records read from ``args.source`` (a records file) or measured from its run directories, their table
    printed and, with ``--out``, both written there; a bad input is one error line (exit status 2)."""
    import sys

    from embodied.atomic import atomic_path
    from embodied.errors import EmbodiedError

    try:
        if args.source.suffix == ".jsonl":
            records = read_records(args.source)
        else:
            if args.episodes <= 0 or args.workers <= 0:
                raise EmbodiedError("--episodes and --workers must be positive")
            records = measure(args)
        if not records:
            raise EmbodiedError(f"no run to measure in {args.source}")
    except EmbodiedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = table(records)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "records.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        with atomic_path(args.out / "report.md") as tmp:
            tmp.write_text(text)
    return 0
