"""bench/latent_probe.py end to end at a tiny size, and its probe on constructed features."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_probe():
    spec = importlib.util.spec_from_file_location("latent_probe", ROOT / "bench" / "latent_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ridge_probe_finds_a_linear_target_and_not_noise():
    probe = load_probe()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 40))
    w = rng.normal(size=(40, 3))
    linear = x @ w + 0.05 * rng.normal(size=(600, 3))
    noise = rng.normal(size=(600, 3))
    assert probe.ridge_r2(x[:400], linear[:400], x[400:], linear[400:]) > 0.95
    assert probe.ridge_r2(x[:400], noise[:400], x[400:], noise[400:]) < 0.05


def test_the_probe_runs_end_to_end_and_reports_every_model_and_target(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "bench" / "latent_probe.py"), "--out", str(out), "--data", str(tmp_path / "d"),
           "--train-episodes", "3", "--test-episodes", "2", "--episode-steps", "40", "--updates", "2", "--batch", "2",
           "--seq-len", "8", "--seeds", "0", "--axes", "background,camera", "--workers", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["model"] for r in records) == ["dreamer", "pixels", "repo", "untrained"]
    assert set(records[0]["r2"]) == {"task", "hand", "goal", "background", "camera"}
    report = (out / "report.md").read_text()
    assert "| hand |" in report and "--train-episodes 3" in report
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # finished jobs are kept, not redone
    assert again.returncode == 0 and len((out / "records.jsonl").read_text().splitlines()) == 4
