"""``embodied report``: tables and plots with confidence intervals from run directories (rliable).

    embodied report runs/study [--metric eval/success_rate] [--group-by method task] [--compare A B]
                               [--threshold 0.8 --cost-key feedback/labels] [--out runs/study/report.md]
                               [--unfinished --at-step 20000]   # runs stopped by a time budget, compared at 20k

Reads every run directory under DIR (any directory holding ``metrics.jsonl``: a sweep, a set of
runs, or one run). Per group: the final value of ``--metric`` (its last logged value) as IQM and
mean with 95 % stratified-bootstrap confidence intervals; learning curves (IQM per evaluation
step, with CI bands) as PNG; the probability that one group improves on another; and, with
``--threshold``, the steps (and ``--cost-key`` units, e.g. labels) each run needed to first
reach it. All statistics come from ``rliable`` (Agarwal et al., 2021), the field's standard;
bootstrap draws use a fixed random state so a report is reproducible.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied.atomic import atomic_path, check_writable_dir
from embodied.config import CommandParser, HelpFormatter, finite_float, flatten, parse_command_args
from embodied.errors import EmbodiedError
from embodied.safe_io import load_json
from embodied.runs import metric_record, read_metrics

warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)  # arch, via rliable
IGNORED_KEYS = {"seed", "run_dir", "run_name", "resume", "threads", "device", "video"}
BUDGET_KEYS = {"total_steps", "checkpoint_every"}  # may differ within a group (runs compared at --at-step)
MAX_REPS = 1_000_000  # bootstrap resamples (rliable's studies use 2,000 to 50,000)


@dataclass
class RunRecord:
    path: Path
    config: dict
    rows: list[dict] = field(repr=False)
    finished: bool = True  # it wrote summary.json (a run still going, or killed, has not)

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of every row that logged ``key`` (a later row at the same step wins)."""
        points: dict[int, float] = {}
        for row in self.rows:
            if row.get(key) is not None:
                points[int(row["step"])] = float(row[key])
        return sorted(points.items())

    def last_step(self) -> int:
        return max((int(row["step"]) for row in self.rows if "step" in row), default=0)

    def up_to(self, step: int) -> "RunRecord":
        """This run as it stood at ``step``: a budget every run reached, for runs stopped at different steps."""
        return RunRecord(self.path, self.config, [r for r in self.rows if int(r.get("step", 0)) <= step], self.finished)


MAX_RECORDS_BYTES = 256 * 2**20


def read_records(path: Path) -> list[RunRecord]:
    """The runs in a study's ``records.jsonl`` (what ``embodied study`` writes beside its reports)."""
    from embodied.safe_io import parse_json, read_text

    runs = []
    for number, line in enumerate(read_text(path, MAX_RECORDS_BYTES, "records file").splitlines(), 1):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}, record {number}", max_depth=4)
        rows = record.get("rows") if isinstance(record, dict) else None
        rows = [metric_record(r) for r in rows] if isinstance(rows, list) else None
        if not (
            rows is not None
            and isinstance(record.get("config"), dict)
            and isinstance(record.get("name"), str)
            and all(r is not None for r in rows)
        ):
            raise EmbodiedError(f"{path}, record {number}: not a run record (name, config, rows of numbers)")
        runs.append(RunRecord(path / record["name"], record["config"], rows, bool(record.get("finished", True))))
    if not runs:
        raise EmbodiedError(f"{path} holds no run records")
    return runs


def study_records(root: Path) -> Path | None:
    """The ``records.jsonl`` of a study's results directory (``bench/results/<study>``: no run directories), which
    stands for its runs; None for anything else."""
    records = root / "records.jsonl"
    if root.is_dir() and records.is_file() and next(root.rglob("metrics.jsonl"), None) is None:
        return records
    return None


def find_runs(root: Path) -> list[RunRecord]:
    root = Path(root).expanduser()
    if root.is_file() and root.suffix == ".jsonl" and root.name != "metrics.jsonl":
        return read_records(root)
    if not root.exists():
        raise EmbodiedError(f"no such directory: {root}")
    if (records := study_records(root)) is not None:
        return read_records(records)
    paths = sorted({p.parent for p in root.rglob("metrics.jsonl")})
    if not paths:
        raise EmbodiedError(f"no run directories (with metrics.jsonl) under {root}")
    runs = []
    for path in paths:
        config = load_json(path / "config.json", what="run config") if (path / "config.json").exists() else {}
        runs.append(
            RunRecord(
                path,
                flatten(config) if isinstance(config, dict) else {},  # sections as dotted keys
                read_metrics(path / "metrics.jsonl"),
                (path / "summary.json").exists(),
            )
        )
    return runs


def default_group_keys(runs: list[RunRecord]) -> list[str]:
    """Config keys whose values differ between runs (seeds and bookkeeping excluded)."""
    keys = sorted({k for r in runs for k in r.config} - IGNORED_KEYS)
    return [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]


def mixed_setting(
    groups: dict[str, list[RunRecord]], tasks: str | None, ignore: set[str]
) -> tuple[str, str, list[str]] | None:
    """The first group whose runs of one task differ in a setting that every one of them has (seeds, bookkeeping
    and ``ignore`` aside), as ``(group, key, values)``: runs of an ablation sharing a study's run directory land
    in its groups unless ``--where`` or ``--group-by`` names what they vary, and the group's statistics then mix
    two settings without a word. Settings that go with the task (a source task linked to its target) differ
    between tasks, not within one."""
    for label, members in groups.items():
        by_task: dict[str, list[RunRecord]] = {}
        for run in members:
            by_task.setdefault(json.dumps(run.config.get(tasks)) if tasks else "", []).append(run)
        for same_task in by_task.values():
            shared = set.intersection(*(set(r.config) for r in same_task)) - IGNORED_KEYS - ignore - {tasks}
            for key in sorted(shared):
                values = sorted({json.dumps(r.config[key], sort_keys=True) for r in same_task})
                if len(values) > 1:
                    return label, key, values
    return None


def group_label(run: RunRecord, keys: list[str]) -> str:
    return ",".join(f"{k}={run.config.get(k)}" for k in keys) if keys else "all"


def resolve_group(name: str, groups: dict[str, list[RunRecord]]) -> str:
    """The group a ``--compare`` name means: its label, or ``KEY=VALUE[,KEY=VALUE...]`` settings that the runs of
    exactly one group all have (``method=parl`` where the groups also vary in a setting that goes with the method,
    such as PARL's and PEBBLE's ``query_episodes`` defaults)."""
    if name in groups:
        return name
    items = [item.partition("=") for item in re.split(r",(?=[\w.]+=)", name)]  # a value may hold a comma
    if any(not sep or not key for key, sep, _ in items):
        raise EmbodiedError(f"--compare {name!r}: expected a group label or KEY=VALUE[,KEY=VALUE]")
    matches = [
        label
        for label, members in groups.items()
        if all(key in r.config and str(r.config[key]) == value for r in members for key, _, value in items)
    ]
    if len(matches) > 1:
        raise EmbodiedError(f"--compare {name!r} matches {len(matches)} groups ({'; '.join(matches)}); name one")
    if not matches:
        raise EmbodiedError(f"--compare: no group {name!r}; groups: {'; '.join(groups)}")
    return matches[0]


def group_runs(runs: list[RunRecord], keys: list[str]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(group_label(run, keys), []).append(run)
    return dict(sorted(groups.items()))


def score_matrix(members: list[RunRecord], value, tasks: str | None) -> np.ndarray | None:
    """``value(run)`` of a group's runs as rliable's ``(runs, tasks)`` matrix (runs whose value is None left out).

    Without ``tasks`` one column. With a config key (e.g. ``target_task``) one column per value of it, runs in
    seed order, cut to the task with the fewest, so that the bootstrap resamples runs within each task
    (rliable's stratified bootstrap) and every task weighs the same."""
    if tasks is None:
        values = [v for v in map(value, members) if v is not None]
        return np.asarray(values, dtype=np.float64)[:, None] if values else None

    def seed_order(run: RunRecord) -> tuple:  # numerically: seed 2 before seed 10
        seed = run.config.get("seed")
        return (0, seed, str(run.path)) if isinstance(seed, int) else (1, 0, str(run.path))

    columns: dict[str, list[float]] = {}
    for run in sorted(members, key=seed_order):
        v = value(run)
        if v is not None:
            columns.setdefault(str(run.config.get(tasks)), []).append(v)
    if not columns:
        return None
    n = min(map(len, columns.values()))
    return np.array([columns[k][:n] for k in sorted(columns)], dtype=np.float64).T


def final_scores(groups: dict[str, list[RunRecord]], metric: str, tasks: str | None = None) -> dict[str, np.ndarray]:
    """Per group, ``(runs, tasks)``: each run's last logged value of ``metric`` (runs without it are left out)."""
    last = lambda r: r.series(metric)[-1][1] if r.series(metric) else None  # noqa: E731
    scores = {g: m for g, m in ((g, score_matrix(ms, last, tasks)) for g, ms in groups.items()) if m is not None}
    if not scores:
        logged = sorted({k for ms in groups.values() for r in ms for row in r.rows for k in row if k != "step"})
        shown = [k for k in logged if k.startswith("eval/")] or logged
        raise EmbodiedError(
            f"no run logged {metric!r}; pass --metric, one of what they logged: {', '.join(shown[:8]) or 'nothing'}"
        )
    return scores


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """rliable's bootstrap draws its indices from NumPy's *global* generator (``np.random.choice``),
    whatever ``random_state`` says; seed it for the call and put it back, so reports reproduce."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield np.random.RandomState(seed)
    finally:
        np.random.set_state(saved)


def _iqm_and_mean(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])


def aggregate(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """IQM and mean with 95 % stratified-bootstrap CIs per group (``rliable.get_interval_estimates``)."""
    from rliable import library as rly

    with seeded_numpy(seed) as state:
        point, interval = rly.get_interval_estimates(scores, _iqm_and_mean, reps=reps, random_state=state)
    return {
        g: {
            "iqm": float(point[g][0]),
            "iqm_low": float(interval[g][0, 0]),
            "iqm_high": float(interval[g][1, 0]),
            "mean": float(point[g][1]),
            "mean_low": float(interval[g][0, 1]),
            "mean_high": float(interval[g][1, 1]),
            "runs": int(scores[g].shape[0]),
        }
        for g in scores
    }


def improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) with its 95 % CI (``rliable.metrics.probability_of_improvement``)."""
    from rliable import library as rly, metrics

    with seeded_numpy(seed) as state:
        point, interval = rly.get_interval_estimates(
            {"pair": [x, y]}, metrics.probability_of_improvement, reps=reps, random_state=state
        )
    low, high = np.ravel(interval["pair"])[:2]
    return float(np.ravel(point["pair"])[0]), float(low), float(high)


def curves(groups: dict[str, list[RunRecord]], metric: str, reps: int = 2000, seed: int = 0):
    """Per group: steps logged by all its runs, IQM per step and its CI, ``(steps, point, (low, high))``."""
    from rliable import library as rly, metrics

    out = {}
    for label, members in groups.items():
        series = [dict(r.series(metric)) for r in members if r.series(metric)]
        if not series:
            continue
        steps = sorted(set.intersection(*(set(s) for s in series)))
        if not steps:
            continue
        data = np.array([[s[t] for t in steps] for s in series], dtype=np.float64)[:, None, :]  # (runs, 1, steps)
        iqm = lambda x: np.array([metrics.aggregate_iqm(x[..., t]) for t in range(x.shape[-1])])  # noqa: E731
        with seeded_numpy(seed) as state:
            point, interval = rly.get_interval_estimates({label: data}, iqm, reps=reps, random_state=state)
        out[label] = (np.asarray(steps), point[label], interval[label])
    return out


def steps_to_threshold(
    run: RunRecord, metric: str, threshold: float, cost_key: str | None
) -> tuple[int | None, float | None]:
    """First step at which ``metric`` >= ``threshold``, and the ``cost_key`` value logged by then."""
    hit = next((step for step, value in run.series(metric) if value >= threshold), None)
    if hit is None:
        return None, None
    return hit, cost_at(run, cost_key, hit)


def cost_at(run: RunRecord, cost_key: str | None, step: int) -> float | None:
    """The last ``cost_key`` value logged at or before ``step`` (0 before the first); None for a run that never
    logs it (e.g. an oracle has no labels)."""
    costs = run.series(cost_key) if cost_key else []
    if not costs:
        return None
    before = [v for s, v in costs if s <= step]
    return float(before[-1]) if before else 0.0


MEASURES = {  # name -> (what it is, higher is better)
    "final": ("last value", True),
    "area": ("mean over the curve (area under it, per evaluation)", True),
    "late": ("mean of the evaluations in the second half of the run", True),
    "steps_to_reach": (
        "steps (the run's counter: env steps, or updates offline) to first reach the threshold (the last if never)",
        False,
    ),
    "steps_to_hold": ("steps from which it stays at or above the threshold to the end (last step if never)", False),
    "cost_to_reach": ("the cost key at the first reach (its last value if never)", False),
    "cost_to_hold": ("the cost key when it starts to hold (its last value if never)", False),
}


def run_measures(run: RunRecord, metric: str, threshold: float, cost_key: str | None) -> dict[str, float | None]:
    """The measures a sample-efficiency study reports (PARL's, B-Pref's) for one run: final value, area,
    steps and cost to reach ``threshold`` and to hold it. A run that never gets there counts at its budget
    (censored), so that no run drops out of a comparison by failing."""
    series = run.series(metric)
    if not series:
        return {}
    steps, values = np.array([s for s, _ in series]), np.array([v for _, v in series])
    last = int(max(steps[-1], run.last_step()))
    above = values >= threshold
    reached = bool(above.any())
    first = int(steps[np.argmax(above)]) if reached else last
    below = np.nonzero(~above)[0]
    hold = last if not above[-1] else int(steps[below[-1] + 1]) if len(below) else int(steps[0])
    second_half = steps > last / 2
    out = {
        "final": float(values[-1]),
        "area": float(values.mean()),
        "late": float(values[second_half].mean()) if second_half.any() else float(values[-1]),
        "steps_to_reach": float(first),
        "steps_to_hold": float(hold),
        "reached": reached,
        "kept": reached and bool(above[-1]),
    }
    if cost_at(run, cost_key, last) is not None:  # at the censored steps: the run's total cost
        out["cost_to_reach"], out["cost_to_hold"] = cost_at(run, cost_key, first), cost_at(run, cost_key, hold)
    return out


def measures_section(
    groups: dict[str, list[RunRecord]],
    metric: str,
    threshold: float,
    cost_key: str | None,
    compare: list[tuple[str, str]],
    reps: int,
    tasks: str | None = None,
) -> list[str]:
    """Markdown: each measure per group (IQM and mean with CIs), how many runs kept what they reached, and
    P(X better than Y) for every measure of every comparison."""
    measured = {id(r): run_measures(r, metric, threshold, cost_key) for ms in groups.values() for r in ms}
    per_run = {g: [measured[id(r)] for r in members if measured[id(r)]] for g, members in groups.items()}

    def matrix(group: str, name: str) -> np.ndarray:
        m = score_matrix(groups.get(group, []), lambda r: measured[id(r)].get(name), tasks)
        return np.zeros((0, 1)) if m is None else m

    names = [n for n in MEASURES if any(n in m for ms in per_run.values() for m in ms)]
    lines = [
        "",
        f"Measures of `{metric}` with threshold {threshold}" + (f", cost `{cost_key}`" if cost_key else "") + ":",
        "",
    ]
    lines += [f"- `{n}`: {MEASURES[n][0]}" + (" (lower is better)" if not MEASURES[n][1] else "") for n in names]
    lines += ["", "| group | measure | runs | IQM [95% CI] | mean [95% CI] |", "| --- | --- | ---: | --- | --- |"]
    for name in names:
        scores = {g: v for g, v in ((g, matrix(g, name)) for g in per_run) if len(v)}
        for g, st in aggregate(scores, reps).items():
            lines.append(
                f"| {g} | {name} | {st['runs']} | {st['iqm']:.3g} [{st['iqm_low']:.3g}, {st['iqm_high']:.3g}]"
                f" | {st['mean']:.3g} [{st['mean_low']:.3g}, {st['mean_high']:.3g}] |"
            )
    lines += [
        "",
        f"Retention: of the runs that reached {threshold}, how many end at or above it (the share with its 95 % "
        "Wilson interval, which stays honest at a few runs and at 0 or 1):",
        "",
        "| group | reached | kept to the end | share kept [95% CI] |",
        "| --- | ---: | ---: | --- |",
    ]
    for g, ms in per_run.items():
        reached, kept = sum(m["reached"] for m in ms), sum(m["kept"] for m in ms)
        lines.append(f"| {g} | {reached}/{len(ms)} | {kept}/{reached} | {share_interval(kept, reached)} |")
    if compare:
        lines += ["", "| comparison | measure | P(X better than Y) [95% CI] |", "| --- | --- | --- |"]
        for x, y in compare:
            for name in names:
                a, b = matrix(x, name), matrix(y, name)
                if len(a) and len(b) and a.shape[1] == b.shape[1]:
                    sign = 1.0 if MEASURES[name][1] else -1.0
                    p, low, high = improvement(sign * a, sign * b, reps)
                    lines.append(f"| {x} vs {y} | {name} | {p:.3f} [{low:.3f}, {high:.3f}] |")
    return lines


def share_interval(successes: int, trials: int) -> str:
    """``k/n`` as a share with its 95 % Wilson score interval (``-`` for no trials)."""
    if trials == 0:
        return "-"
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(method="wilson")
    return f"{successes / trials:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def plot_curves(curve_data, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (steps, point, interval) in curve_data.items():
        (line,) = ax.plot(steps, point, marker="o", markersize=3, label=label)
        ax.fill_between(steps, interval[0], interval[1], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (IQM, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def select(runs: list[RunRecord], where: list[str]) -> list[RunRecord]:
    """Runs whose config matches every ``KEY=VALUE`` or ``KEY!=VALUE`` (compared as text; a key a run's config
    lacks, as in runs made before the option existed, differs from every value)."""
    for item in where:
        negate = "!=" in item
        key, sep, value = item.partition("!=" if negate else "=")
        if not sep or not key:
            raise EmbodiedError(f"--where {item!r}: expected KEY=VALUE or KEY!=VALUE")
        runs = [r for r in runs if (key in r.config and str(r.config[key]) == value) != negate]
    if not runs:
        raise EmbodiedError(f"no run matches --where {' '.join(where)}")
    return runs


def with_defaults(runs: list[RunRecord], defaults: list[str]) -> list[RunRecord]:
    """Runs whose config lacks a key of ``KEY=VALUE`` get that value: a run made before an option existed ran with
    what the option's value now names (e.g. ``implicit_direction=hypergradient``), and belongs in its group."""
    for item in defaults:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EmbodiedError(f"--default {item!r}: expected KEY=VALUE")
        for run in runs:
            run.config.setdefault(key, value)
    return runs


def of_seeds(runs: list[RunRecord], seeds: list[int]) -> list[RunRecord]:
    """The runs made with one of ``seeds``: a study's own runs where its run directory also holds other seeds'
    (a study extended to more seeds beside ablations run on the first ones)."""
    wanted = set(seeds)
    return [r for r in runs if r.config.get("seed") in wanted]


def build_report(
    root: Path | list[Path],
    metric: str,
    group_by: list[str] | None,
    compare: list[tuple[str, str]],
    threshold: float | None,
    cost_key: str | None,
    reps: int,
    plot_path: Path | None,
    where: list[str] = (),
    unfinished: bool = False,
    at_step: int | None = None,
    tasks: str | None = None,
    seeds: list[int] | None = None,
    defaults: list[str] = (),
) -> str:
    roots = root if isinstance(root, list) else [root]
    found = with_defaults([run for r in roots for run in find_runs(r)], list(defaults))  # several: pooled
    if seeds is not None:
        found = of_seeds(found, seeds)
        if not found:
            raise EmbodiedError(f"no run under {', '.join(map(str, roots))} has one of the seeds {seeds}")
    found = select(found, list(where))
    root = ", ".join(str(r) for r in roots)
    # the same run twice (name and settings): two studies' runs may share a name where a shared option differs
    names = Counter((run.path.name, json.dumps(run.config, sort_keys=True)) for run in found)
    if len(roots) > 1 and max(names.values()) > 1:
        twice = sorted(name for (name, _), n in names.items() if n > 1)
        raise EmbodiedError(f"{root}: run {twice[0]} is in more than one of them ({len(twice)} runs are)")
    runs = found if unfinished else [r for r in found if r.finished]
    if not runs:
        raise EmbodiedError(
            f"none of the {len(found)} runs under {root} has finished (no summary.json); "
            "pass --unfinished to report them as they are"
        )
    short = []
    if at_step is not None:  # runs that stopped before the budget are left out (and counted), never compared early
        short = [r for r in runs if r.last_step() < at_step]
        runs = [r.up_to(at_step) for r in runs if r.last_step() >= at_step]
        if not runs:
            raise EmbodiedError(
                f"--at-step {at_step}: no run reached it (the furthest got to {max(r.last_step() for r in short)})"
            )
    if tasks is not None and not any(tasks in r.config for r in runs):
        raise EmbodiedError(f"--tasks {tasks}: not in any run's config.json")
    keys = [k for k in (default_group_keys(runs) if group_by is None else group_by) if k != tasks]
    unknown = [k for k in keys if not any(k in r.config for r in runs)]
    if unknown:
        raise EmbodiedError(f"--group-by {', '.join(unknown)}: not in any run's config.json")
    groups = group_runs(runs, keys)
    compare = [(resolve_group(x, groups), resolve_group(y, groups)) for x, y in compare]
    scores = final_scores(groups, metric, tasks)
    n_tasks = len({str(r.config.get(tasks)) for r in runs}) if tasks else 1
    uneven = [g for g, s in scores.items() if s.shape[1] != n_tasks]
    if uneven:  # before the bootstrap, not after it
        raise EmbodiedError(f"--tasks {tasks}: group {uneven[0]} has runs on {scores[uneven[0]].shape[1]} of {n_tasks}")
    mixed = mixed_setting(groups, tasks, BUDGET_KEYS)
    if mixed:
        label, key, values = mixed
        raise EmbodiedError(
            f"group {label} mixes runs with {key} = {', '.join(values[:4])}: add {key} to --group-by, or keep one "
            f"with --where {key}=VALUE"
        )
    stats = aggregate(scores, reps)
    reasons = [
        f"{n} {why} left out"
        for n, why in ((len(found) - len(runs) - len(short), "unfinished"), (len(short), f"short of step {at_step}"))
        if n
    ]
    left_out = f" ({', '.join(reasons)})" if reasons else ""
    value = "final value per run" if at_step is None else f"each run's last value at env step <= {at_step}"
    lines = [
        f"# Report: {root}",
        "",
        f"{len(runs)} runs{left_out}, "
        f"metric `{metric}` ({value}), grouped by {', '.join(keys) or 'nothing'}; "
        f"IQM and mean with 95 % stratified-bootstrap CIs ({reps} resamples, rliable)"
        + (
            f", over the {n_tasks} values of `{tasks}` as tasks (runs resampled within each, 'runs' per task)."
            if tasks
            else "."
        ),
        "",
        "| group | runs | IQM [95% CI] | mean [95% CI] |",
        "| --- | ---: | --- | --- |",
    ]
    for g, s in stats.items():
        lines.append(
            f"| {g} | {s['runs']} | {s['iqm']:.3f} [{s['iqm_low']:.3f}, {s['iqm_high']:.3f}] | "
            f"{s['mean']:.3f} [{s['mean_low']:.3f}, {s['mean_high']:.3f}] |"
        )
    if compare:
        lines += ["", "| comparison | P(X > Y) [95% CI] |", "| --- | --- |"]
        for x, y in compare:
            missing = [g for g in (x, y) if g not in scores]
            if missing:
                raise EmbodiedError(f"--compare: group {missing[0]!r} has no final value of {metric}")
            p, low, high = improvement(scores[x], scores[y], reps)
            lines.append(f"| {x} > {y} | {p:.3f} [{low:.3f}, {high:.3f}] |")
    if threshold is not None:
        unit = f" and `{cost_key}`" if cost_key else ""
        lines += [
            "",
            f"Steps{unit} to first reach {metric} >= {threshold} (median over the runs that reached it):",
            "",
            "| group | reached | median steps | median " + (cost_key or "cost") + " |",
            "| --- | ---: | ---: | ---: |",
        ]
        for g, members in groups.items():
            hits = [steps_to_threshold(r, metric, threshold, cost_key) for r in members]
            reached = [h for h in hits if h[0] is not None]
            med_steps = f"{np.median([h[0] for h in reached]):.0f}" if reached else "-"
            costs = [h[1] for h in reached if h[1] is not None]
            med_cost = f"{np.median(costs):.0f}" if costs else "-"
            lines.append(f"| {g} | {len(reached)}/{len(members)} | {med_steps} | {med_cost} |")
        lines += measures_section(groups, metric, threshold, cost_key, compare, reps, tasks)
    curve_data = curves(groups, metric, reps)
    if plot_path is not None and any(len(steps) > 1 for steps, _, _ in curve_data.values()):  # a curve, not a point
        plot_curves(curve_data, metric, plot_path)
        lines += ["", f"![{metric} curves]({plot_path.name})"]
    return "\n".join(lines) + "\n"


def default_report_path(source: Path) -> Path:
    """Where a report goes without ``--out``: inside a directory of runs, or beside a records file under a name of
    its own (a study's committed ``report.md`` beside it is left alone)."""
    source = study_records(source) or source
    if source.is_file():
        return source.with_name(f"{source.stem}-report.md")
    return source / "report.md"


def main(argv: list[str]) -> int:
    parser = CommandParser(
        prog="embodied report",
        allow_abbrev=False,
        description="Tables and curves with confidence intervals from run directories (rliable).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "dir",
        type=Path,
        nargs="+",
        help="a sweep's output, any directory of runs, one run directory, or a study's records.jsonl; "
        "several: their runs pooled (e.g. two studies' records on the same seeds)",
    )
    parser.add_argument("--metric", default="eval/success_rate", help="metric key in metrics.jsonl")
    parser.add_argument(
        "--group-by", nargs="*", default=None, help="config keys to group by (default: those that vary)"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("X", "Y"),
        help="report P(X > Y) between two groups, each named by its label or by settings that only its runs have "
        "(method=parl); repeatable",
    )
    parser.add_argument(
        "--threshold", type=finite_float, default=None, help="report steps needed to reach this metric value"
    )
    parser.add_argument(
        "--cost-key",
        default=None,
        help="with --threshold: a cumulative metric to report at that step (e.g. feedback/labels)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has this value, or (KEY!=VALUE) has not (repeatable)",
    )
    parser.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run whose config lacks KEY (made before the option existed) counts as having VALUE (repeatable)",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="only runs of these seeds, comma-separated or a range like 0-9 (default: every seed)",
    )
    parser.add_argument(
        "--unfinished", action="store_true", help="include runs without summary.json (their last value)"
    )
    parser.add_argument(
        "--at-step",
        type=int,
        default=None,
        help="compare at this step: each run's last value at or "
        "before it; runs that stopped earlier are left out (for runs stopped by a time budget)",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        metavar="KEY",
        help="a config key whose values are tasks (e.g. target_task): groups are compared over all of them, "
        "runs resampled within each task (rliable's stratified bootstrap), each task weighing the same",
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file (default: DIR/report.md, or NAME-report.md beside a records file NAME.jsonl, for the "
        "first source); PNG beside it",
    )
    args = parse_command_args(parser, argv)
    if args is None:
        return 0
    if not 100 <= args.reps <= MAX_REPS:  # each resample is an array of every run's score: 1e9 of them swapped
        raise EmbodiedError(f"--reps must be from 100 to {MAX_REPS:,}, got {args.reps}")
    if args.at_step is not None and args.at_step <= 0:
        raise EmbodiedError("--at-step must be a positive env step")
    for source in args.dir:
        if not source.expanduser().exists():  # before --out's directory is created inside it
            raise EmbodiedError(f"no such directory: {source}")
    seeds = None
    if args.seeds is not None:
        from embodied.sweep import parse_seeds

        seeds = parse_seeds(args.seeds)
    out = args.out or default_report_path(args.dir[0])
    if out.is_dir():
        raise EmbodiedError(f"--out {out} is a directory; give the markdown file to write")
    check_writable_dir(out)  # before the bootstrap, not after it
    plot = out.with_name(out.stem + "_curves.png")
    text = build_report(
        list(args.dir),
        args.metric,
        args.group_by,
        [tuple(c) for c in args.compare],
        args.threshold,
        args.cost_key,
        args.reps,
        plot,
        args.where,
        args.unfinished,
        args.at_step,
        args.tasks,
        seeds,
        args.default,
    )
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {out}" + (f" and {plot}" if plot.exists() else ""))
    return 0
