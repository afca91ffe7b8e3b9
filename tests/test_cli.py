"""The `vidseq` command line end to end: real processes on real and generated videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def vidseq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("VIDSEQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_help_lists_the_commands():
    out = vidseq("--help")
    assert out.returncode == 0
    for command in ("probe", "synth", "dataset", "config"):
        assert command in out.stdout
    assert vidseq("probe", "--help").returncode == 0
    assert "0.1" in vidseq("--version").stdout


def test_config_errors_are_one_clear_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  mdoe: dense\n")
    out = vidseq("config", "check", str(bad))
    assert out.returncode == 2
    assert "bad.yaml" in out.stderr and "unknown key 'sampling.mdoe'" in out.stderr
    assert "Traceback" not in out.stderr
    out = vidseq("config", "show", "-o", "sampling.count=3")
    assert out.returncode == 0 and "count: 3" in out.stdout


@pytest.mark.slow
def test_probe_real_clips_and_bad_files_gives_a_row_each(tmp_path, clip_paths):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(50_000))
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n" * 100)
    missing = tmp_path / "missing.mp4"
    real = clip_paths[:3]
    out = vidseq("probe", "--json", *map(str, real), str(empty), str(noise), str(text), str(missing))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert len(rows) == len(real) + 4
    for path in real:
        assert rows[path.name]["error"] == "" and rows[path.name]["frames"] > 0
    for bad in (empty, noise, text, missing):
        assert rows[bad.name]["error"], bad.name
    assert "4 of 7" in out.stderr


@pytest.mark.slow
def test_synth_then_probe_and_dataset(tmp_path):
    out_dir = tmp_path / "synth"
    out = vidseq(
        "synth",
        str(out_dir),
        "--per-class",
        "2",
        "--frames",
        "12",
        "--size",
        "64",
        "-o",
        "synth.classes=[move_left, move_right]",
    )
    assert out.returncode == 0, out.stderr
    videos = sorted(out_dir.rglob("*.mp4"))
    assert len(videos) == 4
    out = vidseq("probe", "--json", str(out_dir))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4
    assert all(r["frames"] == 12 and r["width"] == 64 and r["height"] == 64 for r in rows)
    out = vidseq("dataset", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert "move_left" in out.stdout and "move_right" in out.stdout
    # a second synth into the same folder without --overwrite is refused cleanly only if foreign;
    # a missing source for `dataset` is a clear error
    out = vidseq("dataset", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "nowhere" in out.stderr and "Traceback" not in out.stderr
