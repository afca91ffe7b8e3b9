"""vidseq.progress: a tqdm bar on a terminal, plain timed lines in logs (files, pipes, CI)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from vidseq.progress import LineProgress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bar(total, clock, out, **kwargs):
    return progress_bar(total, desc="extract", unit="video", interval=10, file=out, clock=clock, **kwargs)


def test_a_terminal_gets_a_tqdm_bar_and_a_log_gets_line_progress():
    from tqdm.auto import tqdm

    with progress_bar(3, desc="x", unit="video", file=Terminal()) as bar:
        assert isinstance(bar, tqdm)
    with progress_bar(3, desc="x", unit="video", file=io.StringIO()) as bar:
        assert isinstance(bar, LineProgress)


def test_lines_come_at_most_once_per_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    with _bar(40, clock, out) as bar:
        for _ in range(12):  # one video every 2 s: a line at 10 s and at 20 s
            clock.now += 2
            bar.set_postfix_str(f"{bar.n} failed")
            bar.update(1)
        assert bar.format_dict["elapsed"] == 24
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "extract: 5/40 videos (12%) in 0:10, 2.0 s/video, 4 failed",
        "extract: 10/40 videos (25%) in 0:20, 2.0 s/video, 9 failed",
        "extract: 12/40 videos (30%) in 0:24, 2.0 s/video, 11 failed",
    ]


def test_no_repeat_line_at_close_nothing_when_disabled_and_an_unknown_total():
    clock, out = FakeClock(), io.StringIO()
    with _bar(4, clock, out) as bar:
        clock.now += 10
        bar.update(4)  # prints: nothing new to say at close
    assert out.getvalue() == "extract: 4/4 videos (100%) in 0:10, 2.5 s/video\n"
    quiet = io.StringIO()
    with _bar(4, clock, quiet, enabled=False) as bar:
        clock.now += 60
        bar.update(4)
    assert quiet.getvalue() == ""
    out = io.StringIO()
    with _bar(None, clock, out, initial=2) as bar:  # synth learns its total from the first callback
        bar.total = 8
        clock.now += 0.5
        bar.update(6)
    assert out.getvalue() == "extract: 8/8 videos (100%) in 0:00, 12.0 videos/s\n"  # rate counts from initial


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("VIDSEQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_synth_and_extract_write_plain_lines_to_a_pipe(tmp_path):
    synth = _run(
        "synth",
        "data",
        "--per-class",
        "2",
        "--frames",
        "8",
        "--size",
        "64",
        "-o",
        "synth.classes=[move_left, move_right]",
        cwd=tmp_path,
    )
    assert synth.returncode == 0, synth.stderr
    extract = _run(
        "extract",
        "data",
        "--out",
        "features",
        "-o",
        "backbone.input_size=64",
        "-o",
        "sampling.count=2",
        "-o",
        "extract.num_workers=0",
        cwd=tmp_path,
    )
    assert extract.returncode == 0, extract.stderr
    for run, line in (
        (synth, r"synth: 4/4 videos \(100%\) in 0:\d\d, .*"),
        (extract, r"extract: 4/4 videos \(100%\) in 0:\d\d, .*frames/s, 0 failed"),
    ):
        assert "\r" not in run.stderr and "\x1b" not in run.stderr
        assert any(re.fullmatch(line, text) for text in run.stderr.splitlines()), run.stderr
