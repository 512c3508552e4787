"""A run killed with SIGKILL at a random point and resumed ends exactly like an uninterrupted one.

Each agent runs three times in subprocesses (tiny configs): uninterrupted; killed once its first
checkpoint exists plus a random delay; resumed with ``--resume``. The metric rows (timings
excluded) and the final summary must be equal, every step logged once.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARL = [
    "parl",
    "--task",
    "reach-v3",
    "--method",
    "parl",
    "--total-steps",
    "600",
    "--max-episode-steps",
    "100",
    "--seed-steps",
    "100",
    "--query-every",
    "100",
    "--queries-per-session",
    "10",
    "--feedback-budget",
    "40",
    "--segment-length",
    "10",
    "--sac.batch-size",
    "32",
    "--sac.hidden",
    "32",
    "--eval-every",
    "200",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "100",
    "--no-video",
]
REPO = [
    "repo",
    "--total-steps",
    "400",
    "--max-episode-steps",
    "80",
    "--prefill",
    "80",
    "--train-every",
    "80",
    "--train-steps",
    "2",
    "--batch-size",
    "2",
    "--seq-len",
    "8",
    "--eval-every",
    "160",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "80",
    "--no-video",
]
PEARL = [
    "pearl",
    "--source-task",
    "reach-v3",
    "--target-task",
    "reach-wall-v3",
    "--episodes",
    "4",
    "--max-steps",
    "40",
    "--segment-length",
    "10",
    "--segments",
    "60",
    "--source-queries",
    "200",
    "--target-queries",
    "200",
    "--reward-epochs",
    "3",
    "--eval-every",
    "100",
    "--eval-episodes",
    "1",
    "--checkpoint-every",
    "50",
    "--iql-steps",
    "400",
    "--no-video",
]


def train(args: list[str], run_dir: Path, name: str, resume: bool = False) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    cmd = [
        sys.executable,
        "-m",
        "embodied.cli",
        "train",
        *args,
        "--device",
        "cpu",
        "--run-dir",
        str(run_dir),
        "--run-name",
        name,
    ] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def rows(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if k != "time" and "seconds" not in k and not k.startswith("perf/")})
    return out


@pytest.mark.parametrize("args", [PARL, REPO, PEARL], ids=["parl", "repo", "pearl"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, args):
    full = train(args, tmp_path, "full")
    assert full.wait(timeout=600) == 0, full.stderr.read()[-2000:]

    cut = train(args, tmp_path, "cut")
    checkpoint = tmp_path / "cut" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and cut.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(args[0]).uniform(0.0, 1.5))
    killed = cut.poll() is None
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait()
    resumed = train(args, tmp_path, "cut", resume=True)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]

    a, b = rows(tmp_path / "full"), rows(tmp_path / "cut")
    assert len(a) == len(b), (killed, len(a), len(b))
    assert a == b, killed
    sa, sb = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("full", "cut"))
    assert {k: v for k, v in sa.items() if "seconds" not in k} == {k: v for k, v in sb.items() if "seconds" not in k}
