import subprocess
import sys

import imageio.v3 as iio

from embodied.cli import main
from embodied.data import load_episodes


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "embodied", *args], capture_output=True, text=True, timeout=300)


def test_envs_lists_ids_with_spaces(capsys):
    assert main(["envs", "door-open"]) == 0
    out = capsys.readouterr().out
    assert "embodied/door-open-v3 " in out and "uint8[64, 64, 3]" in out and "float32[39]" in out


def test_collect_then_video_then_eval(tmp_path, capsys):
    data = tmp_path / "d.hdf5"
    assert main(["collect", "--env", "embodied/reach-v3", "--episodes", "3", "--noise", "0,0.5",
                 "--max-steps", "40", "--out", str(data)]) == 0
    assert len(load_episodes(data)) == 3
    video = tmp_path / "v.mp4"
    assert main(["video", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "10", "--size", "64",
                 "--out", str(video)]) == 0
    assert iio.imread(video).shape == (11, 64, 128, 3)
    assert main(["eval", "--env", "embodied/reach-v3", "--episodes", "2", "--max-steps", "150"]) == 0
    assert '"success_rate": 1.0' in capsys.readouterr().out


def test_bad_input_gives_one_error_line_and_no_file(tmp_path):
    cases = [
        ("collect", "--env", "embodied/reach-v9", "--out", str(tmp_path / "a.hdf5")),
        ("video", "--size", "0", "--out", str(tmp_path / "b.mp4")),
        ("video", "--camera", "nowhere", "--max-steps", "2", "--out", str(tmp_path / "c.mp4")),
        ("eval", "--policy", str(tmp_path / "missing.pt")),
        ("collect", "--episodes", "1", "--out", "/proc/forbidden/x.hdf5"),
        ("train", "nonexistent-agent"),
    ]
    for args in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [l for l in result.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert list(tmp_path.iterdir()) == []
