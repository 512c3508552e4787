"""embodied sweep --address on a real two-node Ray cluster, both nodes on this machine's loopback address,
with Ray's token authentication on (RAY_AUTH_MODE=token; the token in HOME/.ray/auth_token, HOME a
temporary folder): the second node and the sweep's driver find the token the head uses, as a token
copied to every machine would be on a real cluster (docs/experiments.md); a driver without it is refused
in one line that says what to do."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--task", "reach-v3", "--method", "sac", "--max-episode-steps", "100", "--seed-steps", "100",
        "--sac.batch-size", "32", "--sac.hidden", "32", "--eval-every", "200", "--eval-episodes", "1", "--no-video",
        "--total-steps", "200"]  # fmt: skip
PORT = "6391"


def ray_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.run([str(ray), *args], env=env, capture_output=True, text=True, timeout=180)


def ray_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", r"/ray/|^ray::|-m ray\."], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} - {os.getpid()}


def stop_started(before: set[int]) -> set[int]:
    """Stop the Ray processes that were not running before the test (not `ray stop`, which stops every Ray
    cluster of the user on this machine); returns those still alive."""
    started = ray_pids() - before
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in started:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
        started &= ray_pids()
    record = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would remove: a later ray.init() would read it
    if record.exists() and record.read_text().strip().endswith(f":{PORT}"):
        record.unlink()
    return started


def sweep(out: Path, env: dict, seeds: str = "0,1") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "embodied.cli", "sweep", "--agent", "parl", "--seeds", seeds, "--out", str(out),
           "--address", f"127.0.0.1:{PORT}", "--", *TINY]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.xdist_group("ray")
def test_a_sweep_joins_a_two_node_cluster_with_token_auth_and_its_trials_run_on_both(tmp_path):
    home, stranger = tmp_path / "home", tmp_path / "stranger"
    home.mkdir()
    stranger.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_worker_niceness": "0"}
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    before = ray_pids()
    assert ray_cli("get-auth-token", "--generate", env=env).returncode == 0
    assert (home / ".ray" / "auth_token").exists()
    try:
        head = ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", PORT, "--num-cpus", "1",
                       "--include-dashboard", "false", "--disable-usage-stats", env=env)  # fmt: skip
        assert head.returncode == 0, head.stderr[-2000:]
        worker = ray_cli("start", "--address", f"127.0.0.1:{PORT}", "--node-ip-address", "127.0.0.1",
                         "--num-cpus", "1", "--disable-usage-stats", env=env)  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-2000:]

        refused = sweep(tmp_path / "refused", {**env, "HOME": str(stranger)}, seeds="0")
        err = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(err) == 1 and "auth_token" in err[0], refused.stderr[-2000:]

        out = tmp_path / "out"
        done = sweep(out, env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        trials = json.loads((out / "sweep.json").read_text())["trials"]
        assert [t["status"] for t in trials] == ["finished", "finished"]
        assert len({t["node"] for t in trials}) == 2, "one CPU a node and two one-CPU trials: one on each node"
        assert all((out / t["name"] / "summary.json").exists() for t in trials), "the results came back"
    finally:
        left = stop_started(before)
    assert not left, "every Ray process the test started is stopped"
