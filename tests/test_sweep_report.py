"""embodied sweep (Ray) and embodied report (rliable)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embodied.errors import EmbodiedError
from embodied.cli import main as cli_main
from embodied.report import aggregate, build_report, find_runs, final_scores, group_runs, improvement

TINY = [
    "--task",
    "reach-v3",
    "--method",
    "sac",
    "--max-episode-steps",
    "100",
    "--seed-steps",
    "100",
    "--sac.batch-size",
    "32",
    "--sac.hidden",
    "32",
    "--eval-every",
    "300",
    "--eval-episodes",
    "1",
    "--no-video",
]


def ray_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), so that a check sees what one command started, not what a
    test on another worker started at the same time."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--agent", "nope", "--out", "x"], "unknown agent"),
        (["--agent", "parl", "--out", "x", "--grid", "bogus=1,2"], "not an option of this agent (see embodied train"),
        (["--agent", "parl", "--out", "x", "--grid", "taks=a"], "not an option of this agent (did you mean task?)"),
        (["--agent", "parl", "--out", "x", "--grid", "method"], "KEY=V1,V2"),
        (["--agent", "parl", "--out", "x", "--grid", "method=parl,telepathy"], "method must be one of"),
        (["--agent", "parl", "--out", "x", "--seeds", "a,b"], "integers"),
        (["--agent", "parl", "--out", "x", "--seeds", "0-2,1"], "distinct"),
        (["--agent", "parl", "--out", "x", "--seeds", "3-1"], "distinct"),
        (["--agent", "parl", "--out", "x", "--", "--seed", "3"], "set by the sweep"),
        (["--agent", "parl", "--out", "x", "--", "--seed=3"], "set by the sweep"),
        (["--agent", "parl", "--out", "x", "--gpus-per-trial", "nan"], "finite number"),  # was a traceback
        (["--agent", "parl", "--out", "x", "--seeds", "0-5000", "--grid", "method=parl,sac"], "10002 trials"),
        (["--agent", "parl", "--out", "x", "--seeds", "0-199999"], "more than 10000 seeds"),  # planned for minutes
        (["--agent", "parl", "--out", "x", "--seeds", "0-1000000000000"], "more than 10000 seeds"),  # took all memory
        (["--agent", "parl", "--out", "x", "--seeds", str(2**32)], "in [0, 4294967295]"),
        (["--agent", "parl", "--out", "x", "--backend", "local", "--cpus-per-trial", "4096"], "more than this"),
        (["--agent", "parl", "--out", "x", "--grid", "total_steps=10,20", "--", "--total-steps", "5"], "set by --grid"),
        (["--agent", "parl", "--out", "x", "--grid", "video=true,false", "--", "--no-video"], "set by --grid"),
        (["--agent", "parl", "--out", "x", "--", "--bogus", "1"], "unknown option"),
    ],
)
def test_bad_sweeps_fail_with_one_line_before_starting(tmp_path, capsys, monkeypatch, argv, message):
    import embodied.sweep

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a sweep that should have been refused")

    monkeypatch.setattr(embodied.sweep, "_run_on_ray", no_ray)
    assert cli_main(["sweep", *[a if a != "x" else str(tmp_path / "out") for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_seeds_are_lists_ranges_or_both():
    from embodied.sweep import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-2, 7") == [0, 1, 2, 7]
    for bad in ("", "-1", "1-x", "2,2", "0-10000", "5000-9999,0-5000", str(2**32)):
        with pytest.raises(EmbodiedError):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "gpus, found, message",
    [
        ("0.5", 0, "needs a CUDA GPU, and this machine has none"),
        ("1.5", 2, "a fraction in (0, 1] or a whole number"),
        ("-1", 1, "a fraction in (0, 1] or a whole number"),
        ("2", 1, "more than this machine's 1 GPUs"),
    ],
)
def test_gpu_shares_are_refused_in_one_line_where_they_cannot_run(tmp_path, capsys, monkeypatch, gpus, found, message):
    import embodied.sweep

    monkeypatch.setattr(embodied.sweep, "local_gpu_count", lambda: found)
    monkeypatch.setattr(embodied.sweep, "_run_on_ray", lambda *a, **k: pytest.fail("Ray started"))
    out = tmp_path / "out"
    assert cli_main(["sweep", "--agent", "parl", "--out", str(out), "--gpus-per-trial", gpus]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_gpu_share_reaches_each_trials_ray_task_and_mps_wraps_a_shared_gpu(tmp_path, monkeypatch):
    """The share goes from the command line to Ray's task options; a fraction below 1 on a local Ray
    runs inside the MPS context (which is a no-op where MPS is not installed)."""
    import embodied.sweep

    seen = {}
    monkeypatch.setattr(embodied.sweep, "local_gpu_count", lambda: 1)

    class FakeMPS:
        def __enter__(self):
            seen["mps"] = True

        def __exit__(self, *exc):
            pass

    def fake_ray(agent, trials, out, address, cpus, retries, gpus):
        seen.update(options=embodied.sweep.task_options(cpus, gpus, retries), trials=len(trials))
        return [{"name": t.name, "status": "finished"} for t in trials]

    monkeypatch.setattr(embodied.sweep, "_MPS", FakeMPS)
    monkeypatch.setattr(embodied.sweep, "_run_on_ray_now", fake_ray)
    assert (
        cli_main(
            [
                "sweep",
                "--agent",
                "parl",
                "--seeds",
                "0,1",
                "--out",
                str(tmp_path / "out"),
                "--cpus-per-trial",
                "2",
                "--gpus-per-trial",
                "0.25",
            ]
        )
        == 0
    )
    assert seen == {
        "mps": True,
        "trials": 2,
        "options": {"num_cpus": 2, "num_gpus": 0.25, "max_retries": 3, "retry_exceptions": False},
    }
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert record["gpus_per_trial"] == 0.25 and record["cpus_per_trial"] == 2


def sweep_cmd(out: Path, seeds: str, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "embodied.cli",
        "sweep",
        "--agent",
        "parl",
        "--seeds",
        seeds,
        "--out",
        str(out),
        "--grid",
        "queries_per_session=10,20",
        *extra,
        "--",
        *TINY,
        "--total-steps",
        str(steps),
    ]


@pytest.mark.xdist_group("ray")  # one local Ray at a time: this test checks that the sweep stops its own
def test_sweep_runs_skips_finished_trials_and_retries_a_killed_worker(tmp_path):
    before = ray_pids()
    out = tmp_path / "sweep"
    first = subprocess.run(sweep_cmd(out, "0", 300), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["parl-queries_per_session=10-s0", "parl-queries_per_session=20-s0"]
    for name in names:
        assert json.loads((out / name / "config.json").read_text())["threads"] == 1  # its CPU share
        assert json.loads((out / name / "summary.json").read_text())["curve"][-1][0] == 300
    assert sum(line.startswith("[") and "finished" in line for line in first.stdout.splitlines()) == 2

    again = subprocess.run(sweep_cmd(out, "0", 300), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "2 finished already" in again.stdout
    assert not any(line.startswith("[") for line in again.stdout.splitlines())

    # a new seed: kill the Ray worker that runs one of its trials mid-run; Ray retries, the trial resumes
    proc = subprocess.Popen(sweep_cmd(out, "0,1", 3000), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = out / "parl-queries_per_session=10-s1"
    deadline = time.time() + 300
    while time.time() < deadline and not (target / "checkpoints" / "last.pt").exists():
        time.sleep(0.2)
    child = int((target / ".lock").read_text())
    stat = Path(f"/proc/{child}/stat").read_text().split(")")[1].split()  # fields from the 3rd on
    assert int(stat[16]) == os.nice(0), "trials run at the sweep's own priority (Ray's default worker nice is 15)"
    worker = int(stat[1])  # the Ray worker (parent)
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    summary = json.loads((target / "summary.json").read_text())
    assert summary["curve"][-1][0] == 3000
    steps = [
        json.loads(line)["step"]
        for line in (target / "metrics.jsonl").read_text().splitlines()
        if "eval/success_rate" in line
    ]
    assert steps == sorted(set(steps)), "every evaluation logged once after the resume"
    deadline = time.time() + 30  # Ray's processes exit a moment after its shutdown, later on a loaded machine
    while not ray_pids() <= before and time.time() < deadline:
        time.sleep(0.5)
    assert ray_pids() <= before, "the sweep stopped its local Ray"


@pytest.mark.xdist_group("ray")  # it checks that no Ray starts: none of the Ray tests beside it
def test_a_local_sweep_runs_without_ray_and_resumes_a_killed_trial(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        sweep_cmd(out, "0", 3000, "--backend", "local"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    target = out / "parl-queries_per_session=10-s0"
    deadline = time.time() + 300
    while time.time() < deadline and not (target / "checkpoints" / "last.pt").exists():
        time.sleep(0.2)
    assert not ray_pids() & descendants(proc.pid), "no Ray"
    os.kill(int((target / ".lock").read_text()), signal.SIGKILL)  # the trial's own process
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    assert "2 trials at a time" in stdout or "1 trials at a time" in stdout
    assert "was killed; resuming it from its checkpoint" in stdout
    for name in ("parl-queries_per_session=10-s0", "parl-queries_per_session=20-s0"):
        assert json.loads((out / name / "summary.json").read_text())["curve"][-1][0] == 3000
    steps = [json.loads(line)["step"] for line in (target / "metrics.jsonl").read_text().splitlines()]
    evals = [
        json.loads(line)["step"] for line in (target / "metrics.jsonl").read_text().splitlines() if "eval/" in line
    ]
    assert evals == sorted(set(evals)) and steps, "every evaluation logged once after the resume"
    assert json.loads((out / "sweep.json").read_text())["backend"] == "local"


def test_a_trial_outside_ray_does_not_start_one():
    """A local sweep's trial asks for its Ray node; outside a Ray task that must not start a Ray (it did: Ray's
    runtime context initialises one on demand)."""
    import ray

    from embodied.sweep import _node_id

    assert _node_id() is None and not ray.is_initialized()


def synthetic_runs(root: Path, groups: dict[str, list[list[float]]]) -> None:
    for method, runs in groups.items():
        for seed, values in enumerate(runs):
            d = root / f"{method}-s{seed}"
            d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps({"method": method, "seed": seed, "task": "t"}))
            rows = [
                {"step": 1000 * (i + 1), "eval/success_rate": v, "feedback/labels": 50 * (i + 1)}
                for i, v in enumerate(values)
            ]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (d / "summary.json").write_text(json.dumps({"final_success_rate": values[-1]}))


def test_a_group_that_mixes_two_settings_is_refused_unless_they_go_with_the_task(tmp_path):
    """An ablation's runs in a study's run directory joined its groups (the point-hold study's PARL group held
    the dose runs too, 100 runs for 20): a group whose runs of one task differ in a setting is an error naming it."""
    from embodied.report import build_report

    synthetic_runs(tmp_path, {"a": [[0.2, 0.9]] * 4, "b": [[0.1, 0.5]] * 4})
    for d in sorted(tmp_path.iterdir()):  # seeds 2, 3 of method a: an ablation with a larger step
        config = json.loads((d / "config.json").read_text())
        ratio = 4.0 if d.name in ("a-s2", "a-s3") else 0.25
        (d / "config.json").write_text(json.dumps({**config, "implicit_ratio": ratio}))
    report = lambda **kw: build_report(tmp_path, "eval/success_rate", ["method"], [], None, None, 100, None, **kw)  # noqa: E731
    with pytest.raises(EmbodiedError, match="group method=a mixes runs with implicit_ratio = 0.25, 4.0"):
        report()
    assert "| method=a | 2 |" in report(where=["implicit_ratio=0.25"])
    assert "method=a,implicit_ratio=4.0" in build_report(
        tmp_path, "eval/success_rate", ["method", "implicit_ratio"], [], None, None, 100, None
    )
    for d in sorted(tmp_path.iterdir()):  # a source task linked to its target differs between tasks: fine
        config = json.loads((d / "config.json").read_text())
        seed = config["seed"]
        config.update(implicit_ratio=0.25, target_task=f"t{seed % 2}", source_task=f"s{seed % 2}")
        (d / "config.json").write_text(json.dumps(config))
    assert "| method=a |" in report(tasks="target_task")


def test_a_report_selects_and_groups_runs_by_a_section_option(tmp_path):
    """config.json nests a section's options; reports name them by the dotted key."""
    from embodied.report import select

    synthetic_runs(tmp_path, {"a": [[0.1, 0.2]] * 2})
    for i, d in enumerate(sorted(tmp_path.iterdir())):
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "wm": {"target_kl": float(1 + 2 * i)}}))
    runs = find_runs(tmp_path)
    assert [r.config["wm.target_kl"] for r in select(runs, ["wm.target_kl=3.0"])] == [3.0]
    assert [r.config["wm.target_kl"] for r in select(runs, ["wm.target_kl!=3.0"])] == [1.0]
    assert sorted(group_runs(runs, ["wm.target_kl"])) == ["wm.target_kl=1.0", "wm.target_kl=3.0"]
    runs[0].config.pop("wm.target_kl")  # a run made before the option existed differs from every value
    assert [r.config.get("wm.target_kl") for r in select(runs, ["wm.target_kl!=3.0"])] == [None]
    assert select(runs, ["wm.target_kl=3.0"]) == [runs[1]]
    with pytest.raises(EmbodiedError, match="expected KEY=VALUE or KEY!=VALUE"):
        select(runs, ["wm.target_kl"])


def test_report_numbers_are_rliables(tmp_path):
    from rliable import library as rly, metrics

    rng = np.random.default_rng(0)
    groups = {
        "a": [list(rng.uniform(0, 1, 4)) for _ in range(6)],
        "b": [list(rng.uniform(0.3, 1, 4)) for _ in range(6)],
    }
    synthetic_runs(tmp_path, groups)
    runs = find_runs(tmp_path)
    scores = final_scores(group_runs(runs, ["method"]), "eval/success_rate")
    expected = {
        k: np.array([[v[-1]] for v in runs_]) for k, runs_ in (("method=a", groups["a"]), ("method=b", groups["b"]))
    }
    for k in expected:
        np.testing.assert_allclose(scores[k], expected[k])
    ours = aggregate(scores, reps=500, seed=3)
    assert aggregate(scores, reps=500, seed=3) == ours, "a report reproduces"
    np.random.seed(3)  # rliable draws from NumPy's global generator
    point, interval = rly.get_interval_estimates(
        expected,
        lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]),
        reps=500,
        random_state=np.random.RandomState(3),
    )
    for k in expected:
        assert ours[k]["iqm"] == pytest.approx(point[k][0]) and ours[k]["mean"] == pytest.approx(point[k][1])
        for ours_key, (row, col) in {
            "iqm_low": (0, 0),
            "iqm_high": (1, 0),
            "mean_low": (0, 1),
            "mean_high": (1, 1),
        }.items():
            assert ours[k][ours_key] == pytest.approx(interval[k][row, col])
        assert ours[k]["iqm_low"] <= ours[k]["iqm"] <= ours[k]["iqm_high"]
    p, low, high = improvement(expected["method=b"], expected["method=a"], reps=500, seed=1)
    assert p == pytest.approx(metrics.probability_of_improvement(expected["method=b"], expected["method=a"]))
    assert low <= p <= high

    text = build_report(
        tmp_path,
        "eval/success_rate",
        None,
        [("method=b", "method=a")],
        0.5,
        "feedback/labels",
        500,
        tmp_path / "curves.png",
    )
    assert "| method=a | 6 |" in text and f"{ours['method=a']['iqm']:.3f}" in text and "method=b > method=a" in text
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_a_report_over_tasks_resamples_runs_within_each_task(tmp_path):
    """--tasks KEY: each group is rliable's (runs, tasks) matrix, seeds in order, so that every task weighs the
    same and the bootstrap is stratified by task; a study writes that report beside the per-task ones."""
    from rliable import library as rly, metrics

    from embodied.study import write_reports

    rng = np.random.default_rng(1)
    values = {(m, task): [list(rng.uniform(lo, 1, 4)) for _ in range(3)] for m, lo in (("a", 0), ("b", 0.5))
              for task in ("t1", "t2")}  # fmt: skip
    values["a", "t2"].append([0.0, 0.0, 0.0, 0.0])  # a fourth seed on one task only: cut, not counted twice
    for (method, task), runs in values.items():
        for seed, curve in enumerate(runs):
            d = tmp_path / "runs" / f"{method}-{task}-s{seed}"
            d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps({"method": method, "task": task, "seed": seed}))
            rows = [{"step": 1000 * (i + 1), "eval/success_rate": v} for i, v in enumerate(curve)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (d / "summary.json").write_text("{}")
    runs = find_runs(tmp_path / "runs")
    scores = final_scores(group_runs(runs, ["method"]), "eval/success_rate", tasks="task")
    expected = {f"method={m}": np.array([[values[m, t][s][-1] for t in ("t1", "t2")] for s in range(3)]) for m in "ab"}
    for k in expected:
        np.testing.assert_allclose(scores[k], expected[k])
    from embodied.report import RunRecord, score_matrix

    by_seed = [RunRecord(Path(f"r{s}"), {"seed": s, "task": t}, []) for s, t in ((10, "t1"), (2, "t1"), (3, "t2"))]
    matrix = score_matrix(by_seed, lambda r: float(r.config["seed"]), "task")
    assert matrix.tolist() == [[2.0, 3.0]], "seeds in numeric order: the cut keeps seed 2, not 10"
    np.random.seed(0)
    point, interval = rly.get_interval_estimates(
        expected,
        lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]),
        reps=500,
        random_state=np.random.RandomState(0),
    )
    text = build_report(
        tmp_path / "runs", "eval/success_rate", None, [("method=b", "method=a")], 0.5, None, 500, None, tasks="task"
    )
    assert "over the 2 values of `task` as tasks" in text and "| method=a | 3 |" in text
    assert f"{point['method=a'][1]:.3f} [{interval['method=a'][0, 1]:.3f}, {interval['method=a'][1, 1]:.3f}]" in text
    late = np.mean([np.mean(values["b", t][s][2:]) for t in ("t1", "t2") for s in range(3)])
    assert "| method=b | late | 3 |" in text and f"{late:.3g} [" in text.split("| method=b | late | 3 |")[1]
    with pytest.raises(EmbodiedError, match="group method=b has runs on 3 of 4"):  # seed 3: method a alone
        build_report(tmp_path / "runs", "eval/success_rate", ["method"], [], None, None, 500, None, tasks="seed")
    study = {"grid": {"method": ["a", "b"], "task": ["t1", "t2"]},
             "report": {"tasks": "task", "split": "task", "compare": [["method=b", "method=a"]]}}  # fmt: skip
    written = write_reports(study, tmp_path / "runs", tmp_path / "results")
    assert [p.name for p in written] == ["report.md", "report-t1.md", "report-t2.md"]
    assert "as tasks" in written[0].read_text() and "as tasks" not in written[1].read_text()


def test_compare_names_a_group_by_the_settings_that_pick_it(tmp_path, capsys):
    """A sweep over method=parl,pebble groups by query_episodes too (each method's own default), so the group
    labels are longer than what the sweep named: --compare method=b picks the one group whose runs have it, and
    a name that fits several groups or none is one error line."""
    synthetic_runs(tmp_path, {"a": [[0.1, 0.2]] * 2, "b": [[0.8, 0.9]] * 2, "c": [[0.5, 0.5]] * 2})
    for d in sorted(tmp_path.iterdir()):
        config = json.loads((d / "config.json").read_text())
        episodes = {"a": 10, "b": 100, "c": 10}[config["method"]]
        (d / "config.json").write_text(json.dumps({**config, "query_episodes": episodes, "hidden": [64, 64]}))
    out = tmp_path / "report.md"
    assert cli_main(["report", str(tmp_path), "--compare", "method=b", "method=a", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| method=b,query_episodes=100 > method=a,query_episodes=10 | 1.000" in text
    exact = ["--compare", "method=b,query_episodes=100", "method=a,hidden=[64, 64],query_episodes=10"]
    assert cli_main(["report", str(tmp_path), *exact, "--out", str(out)]) == 0  # a value with a comma in it
    assert "| method=b,query_episodes=100 > method=a,query_episodes=10 | 1.000" in out.read_text()
    capsys.readouterr()
    for spec in ("query_episodes=10", "method=d", "method=a,query_episodes=100", "method"):
        assert cli_main(["report", str(tmp_path), "--compare", "method=b", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error:") for line in err), err
    assert "matches 2 groups" in err[0] and "no group 'method=d'" in err[1] and "expected a group label" in err[3]


def test_report_on_one_run_and_bad_input(tmp_path, capsys):
    synthetic_runs(tmp_path, {"a": [[0.1, 0.5, 0.9]]})
    assert cli_main(["report", str(tmp_path / "a-s0"), "--threshold", "0.5", "--cost-key", "feedback/labels"]) == 0
    text = (tmp_path / "a-s0" / "report.md").read_text()
    assert "| all | 1 |" in text and "| all | 1/1 | 2000 | 100 |" in text
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert cli_main(["report", str(tmp_path), "--metric", "eval/nothing"]) == 2
    assert cli_main(["report", str(tmp_path), "--compare", "x", "y"]) == 2
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path)]) == 2  # a directory: was IsADirectoryError
    assert cli_main(["report", str(tmp_path), "--out", "/proc/no/report.md"]) == 2  # was FileNotFoundError
    assert cli_main(["report", str(tmp_path), "--threshold", "nan"]) == 2  # no step ever reaches NaN
    assert cli_main(["report", str(tmp_path), "--reps", "1000000000"]) == 2  # a billion resamples: swapped the host
    (tmp_path / "a-s0" / "summary.json").unlink()  # a run still going is left out unless asked for
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 8 and all(line.startswith("error:") for line in err), err
    assert any("--reps must be from 100 to 1,000,000" in line for line in err)
    assert cli_main(["report", str(tmp_path), "--unfinished"]) == 0


def test_a_report_pools_several_sources_and_writes_beside_a_records_file(tmp_path, capsys):
    """Two studies on the same seeds compared in one report; a records file's report does not replace the
    study's own report.md beside it."""
    synthetic_runs(tmp_path / "one", {"a": [[0.1, 0.2]] * 2})
    synthetic_runs(tmp_path / "two", {"b": [[0.8, 0.9]] * 2})
    out = tmp_path / "pooled.md"
    argv = ["report", str(tmp_path / "one"), str(tmp_path / "two"), "--compare", "method=b", "method=a"]
    assert cli_main([*argv, "--out", str(out), "--reps", "200"]) == 0
    text = out.read_text()
    assert "| method=a | 2 |" in text and "| method=b | 2 |" in text and "| method=b > method=a | 1.000" in text
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "one"), str(tmp_path / "one"), "--out", str(out)]) == 2
    assert "in more than one of them" in capsys.readouterr().err
    synthetic_runs(tmp_path / "fewer", {"a": [[0.5, 0.6]] * 2})  # run names as in `one`, a shared option differs
    for config in (tmp_path / "fewer").glob("*/config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "feedback_budget": 100}))
    fewer = ["report", str(tmp_path / "one"), str(tmp_path / "fewer"), "--group-by", "method", "feedback_budget"]
    assert cli_main([*fewer, "--out", str(out), "--reps", "200"]) == 0
    text = out.read_text()
    assert "| method=a,feedback_budget=100 | 2 | 0.600" in text
    assert "| method=a,feedback_budget=None | 2 | 0.200" in text

    results = tmp_path / "study"
    results.mkdir()
    records = [
        {"name": d.name, "config": json.loads((d / "config.json").read_text()), "rows": rows}
        for d in sorted((tmp_path / "one").iterdir())
        for rows in [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]]
    ]
    (results / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (results / "report.md").write_text("the study's report")
    assert cli_main(["report", str(results / "records.jsonl"), "--reps", "200"]) == 0
    assert "| all | 2 | 0.200" in (results / "records-report.md").read_text()
    assert (results / "report.md").read_text() == "the study's report"
    (results / "records-report.md").unlink()
    assert cli_main(["report", str(results), "--reps", "200"]) == 0  # the results directory stands for its records
    assert "| all | 2 | 0.200" in (results / "records-report.md").read_text()
    assert (results / "report.md").read_text() == "the study's report"
    capsys.readouterr()
    assert cli_main(["report", str(results / "records.jsonl"), "--metric", "eval/return"]) == 2
    assert "one of what they logged: eval/success_rate" in capsys.readouterr().err


def test_a_study_and_a_report_keep_to_their_seeds_in_a_shared_run_directory(tmp_path, capsys):
    """A study extended to more seeds shares its run directory with ablations run on the first ones: each
    study's records hold its own seeds' runs only, and `embodied report --seeds` pools on named seeds."""
    out, results = tmp_path / "runs", tmp_path / "results"
    synthetic_runs(out, {"parl": [[0.1, 0.2], [0.3, 0.4], [0.9, 1.0]], "sac": [[0.5, 0.6]] * 3})
    (out / "sac-s0" / "system.json").write_text('{"versions": {"torch": "2.0"}}')
    (out / "sac-s1" / "system.json").write_text('["not what a run writes"]')
    study = tmp_path / "s.toml"
    study.write_text(
        'agent = "parl"\nseeds = [0, 1]\n[grid]\nmethod = ["parl", "sac"]\n'
        f'[report]\nout = "{out}"\ncompare = [["method=sac", "method=parl"]]\n'
    )
    assert cli_main(["study", str(study), "--report-only", "--results", str(results)]) == 0
    records = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines()]
    assert sorted(r["config"]["seed"] for r in records) == [0, 0, 1, 1]
    assert [r.get("versions") for r in records if r["config"]["method"] == "sac"] == [{"torch": "2.0"}, None]
    assert "| method=parl | 2 | 0.300" in (results / "report.md").read_text()  # seed 2's 1.0 left out

    pooled = tmp_path / "pooled.md"
    assert cli_main(["report", str(out), "--seeds", "1-2", "--out", str(pooled), "--reps", "200"]) == 0
    assert "| method=parl | 2 | 0.700" in pooled.read_text()
    capsys.readouterr()
    assert cli_main(["report", str(out), "--seeds", "7", "--out", str(pooled)]) == 2
    assert "has one of the seeds [7]" in capsys.readouterr().err


def test_a_study_with_other_seeds_or_settings_leaves_the_studys_own_results_alone(tmp_path, capsys, monkeypatch):
    """``--seeds`` and ``--set`` make a variant of a study (a small re-run): its records and reports went over the
    study's committed ``bench/results/<study>`` (seed 0's records only), and --set's runs into the study's runs."""
    monkeypatch.chdir(tmp_path)
    synthetic_runs(tmp_path / "runs" / "s", {"parl": [[0.1, 0.2], [0.3, 0.4]], "sac": [[0.5, 0.6]] * 2})
    study = tmp_path / "s.toml"
    study.write_text('agent = "parl"\nseeds = [0, 1]\n[grid]\nmethod = ["parl", "sac"]\n')
    assert cli_main(["study", str(study), "--report-only", "--seeds", "0"]) == 0
    assert "its reports go to runs/s-results" in capsys.readouterr().out
    assert len((tmp_path / "runs" / "s-results" / "records.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "bench").exists()
    assert cli_main(["study", str(study), "--report-only"]) == 0  # the study itself: its own results
    assert len((tmp_path / "bench" / "results" / "s" / "records.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    assert cli_main(["study", str(study), "--report-only", "--set", "total_steps=300"]) == 2
    assert "no runs under runs/s-set" in capsys.readouterr().err  # not the study's runs


def test_a_run_made_before_an_option_joins_the_group_its_default_names(tmp_path, capsys):
    synthetic_runs(tmp_path, {"parl": [[0.1, 0.2], [0.3, 0.4]], "sac": [[0.5, 0.6]]})
    for d in tmp_path.iterdir():  # the second parl run was made after the option existed and names its value
        if d.name == "parl-s1":
            config = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**config, "direction": "hypergradient"}))
    text = build_report(tmp_path, "eval/success_rate", ["direction"], [], None, None, 200, None, ["method=parl"])
    assert "| direction=None | 1 |" in text and "| direction=hypergradient | 1 |" in text
    out = tmp_path / "r.md"
    argv = ["report", str(tmp_path), "--where", "method=parl", "--group-by", "direction", "--out", str(out)]
    assert cli_main([*argv, "--default", "direction=hypergradient", "--reps", "200"]) == 0
    assert "| direction=hypergradient | 2 | " in out.read_text()
    capsys.readouterr()
    assert cli_main([*argv, "--default", "direction"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_report_at_step_compares_runs_stopped_by_a_budget_at_one_step(tmp_path):
    # three runs killed at different steps (no summary.json): 4, 3 and 1 evaluations of 1000 steps each
    synthetic_runs(tmp_path, {"a": [[0.1, 0.2, 0.3, 0.9], [0.2, 0.4, 0.6]], "b": [[0.5]]})
    for d in tmp_path.iterdir():
        (d / "summary.json").unlink()
    text = build_report(
        tmp_path, "eval/success_rate", ["method"], [], None, None, 200, None, unfinished=True, at_step=3000
    )
    assert "2 runs (1 short of step 3000 left out)" in text and "<= 3000" in text
    assert "| method=a | 2 | 0.450 [0.300, 0.600] |" in text, text  # 0.3 and 0.6 at step 3000, not 0.9
    assert "method=b" not in text
    assert cli_main(["report", str(tmp_path), "--unfinished", "--at-step", "5000"]) == 2  # nobody got there


def test_retention_is_given_with_a_wilson_interval(tmp_path):
    """Of 7 runs that reach 0.8, 6 end there: 0.86 with the Wilson interval of 6/7, [0.487, 0.974]."""
    synthetic_runs(tmp_path, {"a": [[0.9, 1.0]] * 6 + [[0.9, 0.1], [0.1, 0.2]]})
    text = build_report(tmp_path, "eval/success_rate", ["method"], [], 0.8, None, 200, None)
    assert "| method=a | 7/8 | 6/7 | 0.86 [0.49, 0.97] |" in text, text


def test_run_measures_on_a_constructed_curve():
    """Reach, hold, area and retention on a curve whose values are known."""
    from embodied.report import RunRecord, run_measures

    rows = [
        {"step": s, "eval/success_rate": v}
        for s, v in ((1000, 0.0), (2000, 0.8), (3000, 0.4), (4000, 1.0), (5000, 0.9))
    ]
    rows += [{"step": 1500, "feedback/labels": 50}, {"step": 2500, "feedback/labels": 100}]
    m = run_measures(RunRecord(Path("r"), {}, rows), "eval/success_rate", 0.8, "feedback/labels")
    assert m == {
        "final": 0.9,
        "area": pytest.approx(0.62),
        "late": pytest.approx((0.4 + 1.0 + 0.9) / 3),  # the evaluations after step 2500
        "steps_to_reach": 2000.0,
        "steps_to_hold": 4000.0,
        "reached": True,
        "kept": True,
        "cost_to_reach": 50.0,
        "cost_to_hold": 100.0,
    }
    never = run_measures(
        RunRecord(Path("r"), {}, rows[:1] + [{"step": 9000, "eval/success_rate": 0.5}]), "eval/success_rate", 0.8, None
    )
    assert never["steps_to_reach"] == never["steps_to_hold"] == 9000.0 and not never["reached"]
    assert never["late"] == 0.5


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "bench" / "studies").glob("*.toml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_study_file_plans_trials_whose_options_the_agent_accepts(path):
    """Each trial's full command line is parsed by the agent's own config (presets included), without Ray."""
    from embodied.study import load_study, passthrough
    from embodied.sweep import check_grid, config_class, plan

    study = load_study(path)
    cls = config_class(study["agent"])
    grid = check_grid(study["grid"], cls)
    trials = plan(study["agent"], [int(s) for s in study["seeds"]], grid, passthrough(study["options"], cls))
    assert len(trials) == len(study["seeds"]) * int(np.prod([len(v) for v in grid.values()]))


def test_a_linked_grid_axis_sets_its_options_together_instead_of_crossing_them(tmp_path):
    """Task pairs (PEARL's source -> target) are points of one axis, on the command line and in a study file."""
    from embodied.study import load_study
    from embodied.sweep import check_grid, config_class, grid_options, parse_grid, plan

    cls = config_class("pearl")
    pairs = "source_task:target_task=plate-slide-v3:plate-slide-back-v3,drawer-open-v3:door-open-v3"
    grid = parse_grid([pairs, "labels=cpa,oracle"], cls)
    trials = plan("pearl", [0], grid, [])
    assert [(t.settings["source_task"], t.settings["target_task"], t.settings["labels"]) for t in trials] == [
        ("plate-slide-v3", "plate-slide-back-v3", "cpa"),
        ("plate-slide-v3", "plate-slide-back-v3", "oracle"),
        ("drawer-open-v3", "door-open-v3", "cpa"),
        ("drawer-open-v3", "door-open-v3", "oracle"),
    ]
    argv = trials[2].argv
    assert argv[argv.index("--source-task") + 1] == "drawer-open-v3"
    assert argv[argv.index("--target-task") + 1] == "door-open-v3"
    assert grid_options(grid)["target_task"] == ["plate-slide-back-v3", "door-open-v3"]
    path = tmp_path / "pairs.toml"
    path.write_text(
        'agent = "pearl"\nseeds = [0, 1]\n[grid]\npair = [\n'
        '  {source_task = "plate-slide-v3", target_task = "plate-slide-back-v3", gw.alpha = 0.9},\n'
        '  {source_task = "drawer-open-v3", target_task = "door-open-v3", gw.alpha = 1.0},\n]\n'
        '[report]\nsplit = "target_task"\n'
    )
    study = load_study(path)
    assert study["grid"] == {
        "source_task:target_task:gw.alpha": [
            "plate-slide-v3:plate-slide-back-v3:0.9",
            "drawer-open-v3:door-open-v3:1.0",
        ]
    }
    trials = plan("pearl", [0, 1], check_grid(study["grid"], cls), [])
    assert len(trials) == 4 and trials[1].settings["gw.alpha"] == "1.0"
    path.write_text('agent = "pearl"\nseeds = [0]\n[grid]\nnoise = [[0.0, 0.3], [1.0]]\n')  # tuple values
    trials = plan("pearl", [0], check_grid(load_study(path)["grid"], cls), [])
    assert [t.argv[t.argv.index("--noise") + 1] for t in trials] == ["0.0,0.3", "1.0"]
    for bad, message in (
        ("source_task:target_task=plate-slide-v3", "one value for each"),
        ("source_task:source_task=a:b", "twice"),
        ("source_task:bogus=a:b", "'bogus' is not an option"),
    ):
        with pytest.raises(EmbodiedError, match=message):
            parse_grid([bad], cls)
    for grid_text, message in (
        ('pair = [{source_task = "a", target_task = "b"}, {source_task = "c"}]', "same keys"),
        ('pair = [{source_task = "a", target_task = "b"}, "c"]', "same keys"),
        ('pair = [{source_task = "a:x", target_task = "b"}]', "may not contain"),
    ):
        path.write_text(f'agent = "pearl"\nseeds = [0]\n[grid]\n{grid_text}\n')
        with pytest.raises(EmbodiedError, match=message):
            load_study(path)


def test_a_study_file_of_the_wrong_types_is_one_error_naming_the_key(tmp_path):
    """A string where a list belongs would be read letter by letter (``where = "method=a"`` as the filters
    'm', 'e', ...): every [report] key and the seeds are type-checked when the file loads."""
    from embodied.study import load_study

    path = tmp_path / "s.toml"
    for body, message in (
        ('seeds = ["a"]', "seeds must be distinct non-negative integers"),
        ("seeds = [0, 0]", "seeds must be distinct"),
        ("seeds = [true]", "seeds must be distinct"),
        ('seeds = [0]\n[report]\nwhere = "method=a"', "report.where must be a list of strings"),
        ('seeds = [0]\n[report]\ndefaults = "a=1"', "report.defaults must be a list of strings"),
        ('seeds = [0]\n[report]\ngroup_by = "method"', "report.group_by must be a list of strings"),
        ('seeds = [0]\n[report]\nkeep = "diag/"', "report.keep must be a list of strings"),
        ('seeds = [0]\n[report]\nmetric = ["a"]', "report.metric must be a string"),
        ('seeds = [0]\n[report]\nthreshold = "high"', "report.threshold must be a finite number"),
        ("seeds = [0]\n[report]\nthreshold = true", "report.threshold must be a finite number"),
        ("seeds = [0]\n[report]\nthreshold = nan", "report.threshold must be a finite number"),  # TOML has nan
        ('seeds = [0]\n[report]\ncompare = ["method=a"]', "report.compare must be a list of pairs"),
        ('seeds = [0]\n[report]\ncompare = [["method=a", "method=b", "method=c"]]', "report.compare"),
    ):
        path.write_text(f'agent = "parl"\n{body}\n')
        with pytest.raises(EmbodiedError, match=message):
            load_study(path)
    path.write_text('agent = "parl"\nseeds = [0, 1]\n[report]\nthreshold = 0.8\ncompare = [["method=a", "method=b"]]\n')
    assert load_study(path)["report"]["threshold"] == 0.8


def test_a_study_with_a_bad_option_value_is_one_line_and_makes_no_directory(tmp_path, capsys):
    from embodied.cli import main

    study = tmp_path / "s.toml"
    study.write_text('agent = "parl"\nseeds = [0]\n[grid]\nmethod = ["sac"]\n[options]\nvideo = false\n')
    out, results = tmp_path / "runs", tmp_path / "results"
    for bad in ("total_steps=abc", "sac.tau=2", "total-step=10"):
        argv = ["study", str(study), "--set", bad, "--out", str(out), "--results", str(results), "--backend", "local"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
    assert "total_step: did you mean total_steps?" in err[0]  # a misspelt option is named with what it meant
    assert not out.exists() and not results.exists()


def test_a_study_names_a_section_option_by_its_dotted_key(tmp_path):
    """TOML reads `wm.beta_lr = 0.01` as a nested table; the study turns it back into the option --wm.beta-lr."""
    from embodied.study import load_study, passthrough
    from embodied.sweep import check_grid, config_class, plan

    path = tmp_path / "s.toml"
    path.write_text(
        'agent = "repo"\nseeds = [0]\n[grid]\n"wm.target_kl" = [1.0, 3.0]\n'
        '[options]\npreset = "cpu-small"\nwm.beta_lr = 0.02\nbehavior.return_norm = false\n'
    )
    study = load_study(path)
    assert study["options"]["wm.beta_lr"] == 0.02
    cls = config_class("repo")
    trials = plan("repo", [0], check_grid(study["grid"], cls), passthrough(study["options"], cls))
    assert [t.settings["wm.target_kl"] for t in trials] == ["1.0", "3.0"]
    argv = trials[0].argv
    assert argv[argv.index("--wm.beta-lr") + 1] == "0.02" and "--no-behavior.return-norm" in argv
    bad = tmp_path / "bad.toml"
    bad.write_text('agent = "repo"\nseeds = [0]\n[options]\nwm.bogus = 1\n')
    with pytest.raises(EmbodiedError, match="wm.bogus"):
        passthrough(load_study(bad)["options"], cls)


@pytest.mark.xdist_group("ray")
def test_a_study_file_reruns_end_to_end_and_its_records_reproduce_the_report(tmp_path):
    """The PARL study's own file, at a tiny size: sweep, reports, records; then the report from the records alone."""
    root = Path(__file__).resolve().parents[1]
    tiny = [
        "--set",
        "total_steps=300",
        "--set",
        "seed_steps=100",
        "--set",
        "unsup_steps=50",
        "--set",
        "query_every=50",
        "--set",
        "queries_per_session=4",
        "--set",
        "segment_length=10",
        "--set",
        "max_episode_steps=50",
        "--set",
        "eval_every=150",
        "--set",
        "eval_episodes=1",
        "--set",
        "reward_epochs=1",
        "--set",
        "sac.hidden=16",
        "--set",
        "sac.batch_size=16",
    ]
    out, results = tmp_path / "runs", tmp_path / "results"
    argv = [
        "study",
        str(root / "bench" / "studies" / "parl.toml"),
        "--seeds",
        "0",
        *tiny,
        "--out",
        str(out),
        "--results",
        str(results),
    ]
    assert cli_main(argv) == 0
    report = (results / "report-drawer-close-v3.md").read_text()
    assert "| method=parl,query_episodes=10 | 1 |" in report and "| method=sac,query_episodes=10 | 1 |" in report
    assert "| method=pebble,query_episodes=100 | 1 |" in report and "Retention" in report
    assert "method=parl,query_episodes=10 vs method=pebble,query_episodes=100 | steps_to_hold" in report
    records = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["config"]["task"] == "drawer-close-v3" for r in records)
    assert any("diag/rank_corr_recent" in row for r in records for row in r["rows"])
    assert str(tmp_path) not in (results / "records.jsonl").read_text()  # committed records name no machine's paths
    import torch

    assert all(r["versions"]["torch"] == torch.__version__ for r in records)  # from each run's system.json
    import shutil

    shutil.rmtree(out)
    (results / "report-drawer-close-v3.md").unlink()
    assert (
        cli_main(
            [
                "study",
                str(root / "bench" / "studies" / "parl.toml"),
                "--report-only",
                "--out",
                str(out),
                "--results",
                str(results),
            ]
        )
        == 0
    )
    assert (results / "report-drawer-close-v3.md").read_text() == report


def test_a_record_keeps_a_path_setting_under_the_working_directory_relative_to_it(tmp_path, monkeypatch):
    from embodied.study import portable

    monkeypatch.chdir(tmp_path)
    assert portable(str(tmp_path / "data" / "target.h5")) == "data/target.h5"  # a dataset given by absolute path
    assert portable("/elsewhere/target.h5") == "/elsewhere/target.h5" and portable("data/t.h5") == "data/t.h5"
    assert portable(3) == 3 and portable(None) is None


def test_a_progress_line_gives_a_finished_trials_seconds_and_a_failed_ones_error(capsys):
    from embodied.sweep import _report_progress

    rows: list[dict] = []
    _report_progress(rows, {"name": "a-s0", "status": "finished", "seconds": 4.5, "metric": "m", "value": 0.5}, 2)
    _report_progress(rows, {"name": "a-s1", "status": "failed", "error": "error: boom"}, 2)
    first, second = capsys.readouterr().out.splitlines()
    assert first == "[1/2] finished a-s0 4.5s m 0.500"
    assert second == "[2/2] failed   a-s1 (error: boom)"  # was "a-s1 s (error: boom)"


def test_a_sweep_continues_a_finished_run_to_a_larger_budget_and_refuses_a_run_of_other_settings(tmp_path, capsys):
    """A finished trial was skipped whatever its run directory held: a study whose budget grew reported the old
    runs as its own, and one whose settings changed mixed two studies."""
    out = tmp_path / "sweep"
    target = out / "parl-method=sac-s0"

    def sweep(*options: str) -> int:
        argv = ["sweep", "--agent", "parl", "--seeds", "0", "--grid", "method=sac", "--backend", "local"]
        return cli_main([*argv, "--out", str(out), "--", "--preset", "point-hold", "--no-video", *options])

    def evaluations() -> list[int]:
        rows = [json.loads(line) for line in (target / "metrics.jsonl").read_text().splitlines()]
        return [row["step"] for row in rows if "eval/success_rate" in row]

    assert sweep("--total-steps", "300") == 0
    assert sweep("--total-steps", "300") == 0 and "1 finished already" in capsys.readouterr().out
    assert sweep("--total-steps", "600") == 0  # more budget: the finished run goes on from its last checkpoint
    assert "continues to the larger budget" in capsys.readouterr().out
    assert evaluations() == [300, 600]
    assert json.loads((target / "summary.json").read_text())["curve"][-1][0] == 600
    for options, said in (
        (["--total-steps", "300"], "--total-steps 300 (the run has 600)"),  # a smaller budget is not the run's
        (["--total-steps", "600", "--eval-every", "150"], "--eval-every 150 (the run has 300)"),
    ):
        assert sweep(*options) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was run with other settings" in err[0] and said in err[0], err
    (target / "summary.json").unlink()  # stopped early: a resume may change its budget, not what it learns with
    assert sweep("--total-steps", "600", "--sac.hidden", "64") == 2
    assert "was started with other settings" in capsys.readouterr().err
    assert evaluations() == [300, 600]  # nothing ran
