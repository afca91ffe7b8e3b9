"""`vidseq probe` never cuts a path: piped, on a narrow terminal, or folded in a table."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vidseq.io import write_video

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def deep_video(tmp_path_factory) -> Path:
    import numpy as np

    folder = tmp_path_factory.mktemp("probe").joinpath(*(f"level_{i}_of_a_deep_tree" for i in range(5)))
    folder.mkdir(parents=True)
    path = folder / ("a_video_with_a_long_descriptive_name_" + "x" * 40 + ".mp4")
    write_video(path, np.zeros((4, 32, 32, 3), np.uint8), fps=10)
    return path


def _env(columns: int) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "xterm"}
    env.pop("VIDSEQ_DEBUG", None)
    return env


def _probe_on_a_terminal(path: Path, columns: int) -> str:
    """`vidseq probe PATH` with stdout on a pseudo-terminal COLUMNS wide; what it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidseq", "probe", str(path)], stdout=slave, stderr=subprocess.PIPE, env=_env(columns)
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_piped_output_has_the_whole_path_in_tab_separated_lines(deep_video):
    out = subprocess.run(
        [sys.executable, "-m", "vidseq", "probe", str(deep_video.parent.parent)],
        capture_output=True,
        text=True,
        env=_env(40),
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split("\t")[:3] == ["path", "frames", "fps"]
    assert row.split("\t")[:2] == [str(deep_video), "4"]


def test_a_narrow_terminal_gets_the_path_unbroken_on_its_own_line(deep_video):
    shown = _probe_on_a_terminal(deep_video, 40)
    assert str(deep_video) in shown.splitlines()
    assert "frames 4" in shown and "…" not in shown


def test_a_table_folds_a_long_path_and_the_pieces_give_it_back(deep_video):
    shown = _probe_on_a_terminal(deep_video, 150)
    cells = [line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│")]
    assert len(cells) > 1  # folded onto several lines
    assert "".join(cells) == str(deep_video)
