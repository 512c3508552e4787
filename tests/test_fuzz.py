"""The fuzz suite's short deterministic run: every kind of file the project reads, mutated, loaded under a
1 GiB address-space cap and a timeout, must load or give one error line (``bench/fuzz.py`` for the long run)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mutated_files_of_every_kind_load_or_give_one_error_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--cases", "135", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "0 failures" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    assert "135 cases" in done.stdout
