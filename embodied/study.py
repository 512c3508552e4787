"""``embodied study FILE.toml``: a study as a small declarative file, run by ``embodied sweep`` and summarised
by ``embodied report``, its results written where the docs cite them.

    embodied study bench/studies/parl.toml                 # run (or continue) every trial, then report
    embodied study bench/studies/parl.toml --report-only   # only the reports, from the runs or the records
    embodied study bench/studies/parl.toml --seeds 0,1 --set total_steps=600 --out runs/tiny --results runs/tiny-results

The file names the agent, the seeds, a grid, the options every trial shares and how to report::

    agent = "parl"
    seeds = [0, 1, 2]
    [grid]                       # a cross product, one run directory per point and seed
    method = ["parl", "pebble"]
    pair = [{source_task = "A", target_task = "B"}, ...]   # a linked axis: options set together, not crossed
    [options]                    # passed to every trial (option names as in the agent's dataclass)
    total_steps = 10000          # (preset = "NAME" applies one of the agent's presets; the others override it)
    [report]
    split = "task"               # optional: one report per value of this grid key
    tasks = "task"               # optional: also one report over all its values as tasks (stratified bootstrap)
    where = ["method=pebble"]    # optional: only these runs (KEY=VALUE, as embodied report --where)
    out = "runs/parl"            # optional: the run directories (default runs/<study>; studies may share one)
    metric = "eval/success_rate"
    threshold = 0.8              # optional: steps (and cost_key) to reach and hold it, retention
    cost_key = "feedback/labels"
    compare = [["method=parl", "method=pebble"]]
    curves = ["diag/rank_corr_recent"]   # optional: more metrics to plot over the run
    keep = ["diag/", "parl/"]    # optional: logged keys (prefixes) the records keep besides the reported ones

Results go to ``bench/results/<study>/`` (``--results``): ``report[-<split value>].md``, the curves,
and ``records.jsonl``, one line per run with its settings and the logged values the reports use, so
that ``embodied report bench/results/<study>/records.jsonl`` recomputes every table without the runs.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from embodied.atomic import atomic_path, check_writable_dir
from embodied.config import CommandParser, HelpFormatter, finite_float, flatten, parse_command_args
from embodied.errors import EmbodiedError
from embodied.safe_io import json_text, read_text

STUDY_KEYS = {"agent", "seeds", "grid", "options", "report", "description", "name"}
TEXT, NUMBER, TEXTS, PAIRS = "a string", "a finite number", "a list of strings", 'a list of pairs like [["a=1", "a=2"]]'
REPORT_KEYS = {
    "split": TEXT,
    "tasks": TEXT,
    "metric": TEXT,
    "threshold": NUMBER,
    "cost_key": TEXT,
    "compare": PAIRS,
    "curves": TEXTS,
    "group_by": TEXTS,
    "where": TEXTS,
    "defaults": TEXTS,
    "out": TEXT,
    "keep": TEXTS,
}


def is_kind(value, kind: str) -> bool:
    """Whether a TOML value is of one of the [report] kinds (a string where a list belongs would be read letter by
    letter further on, so it is refused here)."""
    texts = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    if kind == TEXT:
        return isinstance(value, str)
    if kind == NUMBER:  # TOML has nan and inf, which no threshold is
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == TEXTS:
        return texts(value)
    return isinstance(value, list) and all(texts(v) and len(v) == 2 for v in value)


def load_study(path: Path) -> dict:
    """The study file, with its keys and types checked."""
    try:
        study = tomllib.loads(read_text(path, 1 << 20, "study file"))
    except tomllib.TOMLDecodeError as err:
        raise EmbodiedError(f"study file {path} is not valid TOML: {err}") from None
    unknown = set(study) - STUDY_KEYS
    if unknown:
        raise EmbodiedError(f"study file {path}: unknown keys {sorted(unknown)} (known: {sorted(STUDY_KEYS)})")
    seeds = study.get("seeds")
    if not isinstance(study.get("agent"), str) or not isinstance(seeds, list) or not seeds:
        raise EmbodiedError(f'study file {path} needs agent = "..." and seeds = [...]')
    counts = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    if not counts or len(set(seeds)) < len(seeds):
        raise EmbodiedError(f"study file {path}: seeds must be distinct non-negative integers, not {seeds}")
    for key in ("name", "description"):
        if not isinstance(study.get(key, ""), str):
            raise EmbodiedError(f"study file {path}: {key} must be a string")
    for table in ("grid", "options", "report"):
        if not isinstance(study.setdefault(table, {}), dict):
            raise EmbodiedError(f"study file {path}: [{table}] must be a table")
    for table in ("grid", "options"):  # TOML reads `wm.target_kl = 3` as a nested table: the dotted option name
        study[table] = flatten(study[table])
    if set(study["report"]) - set(REPORT_KEYS):
        raise EmbodiedError(
            f"study file {path}: unknown [report] keys {sorted(set(study['report']) - set(REPORT_KEYS))}"
        )
    for key, value in study["report"].items():
        if not is_kind(value, REPORT_KEYS[key]):
            raise EmbodiedError(f"study file {path}: report.{key} must be {REPORT_KEYS[key]}, not {value!r}")
    if not all(isinstance(v, list) and v for v in study["grid"].values()):
        raise EmbodiedError(f"study file {path}: every [grid] entry must be a non-empty list of values")
    from embodied.sweep import grid_options  # sweep imports the command table, which imports this module

    study["grid"] = text_grid(study["grid"], path)
    for key in ("split", "tasks"):
        value = study["report"].get(key)
        if value is not None and value not in grid_options(study["grid"]):
            raise EmbodiedError(f"study file {path}: report.{key} {value!r} is not an option the grid sets")
    study.setdefault("name", path.stem)
    return study


def text_grid(grid: dict, path: Path) -> dict[str, list[str]]:
    """The [grid] as ``embodied sweep`` takes it, values as the command line spells them. An entry whose values
    are tables is a linked axis (``pair = [{source_task = "A", target_task = "B"}, ...]``): each table is one
    point that sets its options together, so the pairs are not crossed."""
    out: dict[str, list[str]] = {}
    for name, values in grid.items():
        tables = [isinstance(v, dict) for v in values]
        if not any(tables):
            out[name] = [option_text(v) for v in values]
            continue
        points = [flatten(v) for v in values] if all(tables) else []
        if not points or any(list(p) != list(points[0]) for p in points):
            raise EmbodiedError(f"study file {path}: [grid] {name}: every value must be a table with the same keys")
        texts = [[option_text(v) for v in p.values()] for p in points]
        if any(":" in v for p in texts for v in p):
            raise EmbodiedError(f"study file {path}: [grid] {name}: a linked value may not contain ':'")
        out[":".join(points[0])] = [":".join(p) for p in texts]
    return out


def option_text(value) -> str:
    """A TOML value as the command line spells it (lists: comma-separated, as tuple options take them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(option_text(v) for v in value)
    return str(value)


def passthrough(options: dict, cls: type) -> list[str]:
    from embodied.sweep import option_args

    from embodied.config import did_you_mean, option_types

    fields = set(option_types(cls)) | ({"preset"} if getattr(cls, "PRESETS", None) else set())
    unknown = [k for k in options if k not in fields]
    if unknown:
        hints = [f"{k}: {m}" for k in unknown if (m := did_you_mean(k.replace("-", "_"), fields))]
        hints = hints or ["embodied train AGENT --help"]
        raise EmbodiedError(f"[options] {', '.join(unknown)}: not options of this agent ({'; '.join(hints)})")
    return [a for k, v in options.items() for a in option_args(k, option_text(v), cls)]


def check_trials(study: dict) -> tuple[dict, list[str]]:
    """The study's grid and shared options as ``embodied sweep`` takes them, every trial's config checked (before
    any directory is made)."""
    from embodied.sweep import check_grid, config_class, plan

    cls = config_class(study["agent"])
    grid, shared = check_grid(study["grid"], cls), passthrough(study["options"], cls)
    plan(study["agent"], [int(s) for s in study["seeds"]], grid, shared)
    return grid, shared


def run_study(
    study: dict,
    checked: tuple[dict, list[str]],
    out: Path,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0.0,
    backend: str = "ray",
) -> None:
    """Every trial of ``study`` through ``embodied sweep``, from its ``check_trials`` (grid and shared options)."""
    from embodied.sweep import sweep

    grid, shared = checked
    sweep(
        study["agent"],
        [int(s) for s in study["seeds"]],
        grid,
        out,
        shared,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        backend=backend,
    )


def portable(value: Any) -> Any:
    """A setting as a committed record keeps it: an absolute path under the current directory relative to it, so
    that records name no machine's paths."""
    if isinstance(value, str) and value.startswith("/"):
        try:
            return str(Path(value).relative_to(Path.cwd()))
        except ValueError:
            return value
    return value


def write_records(out: Path, path: Path, keys: list[str], study: dict) -> None:
    """One line per run of the study's seeds (a shared run directory may hold other seeds' runs): its name,
    settings, whether it finished, and the rows that logged any of ``keys`` or of a key starting with one of the
    report's ``keep`` prefixes (e.g. ``"diag/"``). Not ``run_dir``: where the run was on the machine that ran it
    (the study's ``out``), which no report reads."""
    from embodied.report import find_runs, of_seeds
    from embodied.runs import recorded_versions

    prefixes = tuple(study["report"].get("keep", []))
    lines = []
    for run in of_seeds(find_runs(out), [int(s) for s in study["seeds"]]):
        kept = lambda key: key in keys or key.startswith(prefixes)  # noqa: E731
        rows = [{"step": r["step"], **{k: v for k, v in r.items() if kept(k)}} for r in run.rows if any(map(kept, r))]
        settings = {
            k: portable(v)
            for k, v in sorted(run.config.items())
            if k != "run_dir" and (isinstance(v, (str, int, float, bool)) or v is None)
        }
        record = {"name": run.path.name, "config": settings, "finished": run.finished, "rows": rows}
        versions = recorded_versions(run.path)  # the library versions it started with, where it recorded them
        if versions is not None:
            record["versions"] = versions
        lines.append(json_text(record, separators=(",", ":")))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_reports(study: dict, source: Path, results: Path) -> list[Path]:
    """``embodied report`` on ``source`` (run directories or a records file): once per split value, and with
    ``tasks`` once over all of them (``report.md``, the tasks' runs resampled within each task)."""
    from embodied.sweep import grid_options

    rep = study["report"]
    split, tasks = rep.get("split"), rep.get("tasks")

    def grouping(key: str | None) -> list[str]:  # the grid's options but those of the axis that holds ``key``
        axis = next((a.split(":") for a in study["grid"] if key in a.split(":")), [])
        return rep.get("group_by") or [k for k in grid_options(study["grid"]) if k not in axis]

    reports = [("report", [], tasks, grouping(tasks))] if tasks else []
    if split or not tasks:
        values = grid_options(study["grid"])[split] if split else [None]
        reports += [
            ("report" if v is None else f"report-{v}", [] if v is None else [f"{split}={v}"], None, grouping(split))
            for v in values
        ]
    written = []
    for stem, where, over, group_by in reports:
        written += write_report(study, source, results, stem, list(rep.get("where", [])) + where, group_by, over)
    return written


def write_report(
    study: dict, source: Path, results: Path, stem: str, where: list[str], group_by: list[str], tasks: str | None
) -> list[Path]:
    """One report of the study's metric (``stem.md``, with its comparisons and threshold measures) and one per
    extra curve (``stem-<metric>.md``), each with its curves' PNG."""
    from embodied.report import build_report

    rep = study["report"]
    compare = [tuple(c) for c in rep.get("compare", [])]
    written = []
    for metric in [rep.get("metric", "eval/success_rate"), *rep.get("curves", [])]:
        main = metric == rep.get("metric", "eval/success_rate")
        name = stem if main else f"{stem}-{metric.replace('/', '_')}"
        out = results / f"{name}.md"
        text = build_report(
            source,
            metric,
            group_by,
            compare if main else [],
            rep.get("threshold") if main else None,
            rep.get("cost_key") if main else None,
            2000,
            out.with_name(out.stem + "_curves.png"),
            where,
            tasks=tasks,
            defaults=rep.get("defaults", []),
        )
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        written.append(out)
    return written


def main(argv: list[str]) -> int:
    parser = CommandParser(
        prog="embodied study",
        description="Run a study file (agent, seeds, grid, shared "
        "options, report) with embodied sweep, then embodied report.",
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("file", type=Path, help="the study's .toml file (bench/studies/)")
    parser.add_argument("--out", type=Path, default=None, help="run directories (default: runs/<study>)")
    parser.add_argument(
        "--results", type=Path, default=None, help="reports and records (default: bench/results/<study>)"
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="seeds instead of the file's, comma-separated or a range like 0-9 (e.g. a small re-run)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the file's [options] (repeatable)",
    )
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs (and torch threads) per trial")
    parser.add_argument(
        "--gpus-per-trial",
        type=finite_float,
        default=0.0,
        help="GPU share per trial (0.25: four trials on each GPU); 0: CPU only",
    )
    parser.add_argument(
        "--backend",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray tasks; local: child processes of this command, for a machine without Ray",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no training: report from --out if it holds runs, else from the results' records.jsonl",
    )
    args = parse_command_args(parser, argv)
    if args is None:
        return 0
    study = load_study(args.file)
    if args.seeds is not None:
        from embodied.sweep import parse_seeds

        study["seeds"] = parse_seeds(args.seeds)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EmbodiedError(f"--set {item!r}: expected KEY=VALUE")
        study["options"][key.replace("-", "_")] = value
    # --seeds and --set make a variant of the study (a small re-run, a trial of other settings): its results go
    # beside its runs, not over the study's own (committed) results, and --set's runs not among the study's own
    variant = args.seeds is not None or bool(args.set)
    if args.out is None and args.set:
        out = Path("runs") / f"{study['name']}-set"
    else:
        out = args.out or Path(study["report"].get("out") or Path("runs") / study["name"])
    results = args.results or (
        out.with_name(f"{out.name}-results") if variant else Path("bench/results") / study["name"]
    )
    if variant and args.results is None:
        print(f"--seeds/--set make a variant of the study: its reports go to {results} (--results to choose)")
    if not args.report_only and args.cpus_per_trial <= 0:
        raise EmbodiedError("--cpus-per-trial must be positive")
    checked = None if args.report_only else check_trials(study)  # a bad option fails before any directory is made
    check_writable_dir(results / "report.md")
    records = results / "records.jsonl"
    rep = study["report"]
    keys = [rep.get("metric", "eval/success_rate"), *rep.get("curves", [])] + (
        [rep["cost_key"]] if rep.get("cost_key") else []
    )
    if not args.report_only:
        run_study(study, checked, out, args.cpus_per_trial, args.gpus_per_trial, args.backend)
    if out.exists() and any(out.rglob("metrics.jsonl")):
        write_records(out, records, keys, study)
    elif not records.exists():
        raise EmbodiedError(f"nothing to report: no runs under {out} and no {records}")
    print(f"reporting from {records} (bootstrap CIs: this can take minutes)", flush=True)
    for path in write_reports(study, records, results):
        print(f"wrote {path}")
    print(f"records: {records}")
    return 0
