"""The README's first hour runs as written (each `embodied` line of it, in order, in a fresh folder), at a
tiny size: the training and video lines get options appended that shrink them (argparse keeps an option's last value),
so every word the README shows is still parsed and used."""

import re
import shlex
from pathlib import Path

from embodied.cli import main as cli_main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {  # appended to the README's line: the same command, shrunk
    "train": [
        "--total-steps",
        "300",
        "--max-episode-steps",
        "50",
        "--seed-steps",
        "100",
        "--eval-every",
        "300",
        "--eval-episodes",
        "1",
    ],
    "video": ["--max-steps", "50", "--size", "64"],
}


def first_hour_commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## The first hour") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "embodied":
            commands.append(words[1:])
    return commands


def test_the_first_hour_of_the_readme_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = first_hour_commands()
    assert [c[0] for c in commands] == ["envs", "train", "train", "video", "report"], commands
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        if argv[0] in TINY and "--help" not in argv:
            argv = argv + TINY[argv[0]]
        try:
            code = cli_main(argv)
        except SystemExit as stop:  # --help pages exit through argparse
            code = stop.code
        assert code in (0, None), (argv, capsys.readouterr())
    assert (tmp_path / "reach.mp4").stat().st_size > 0
    assert (tmp_path / "runs" / "parl-reach-v3-sac-s0" / "report.md").exists()
