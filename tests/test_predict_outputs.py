"""`vidseq predict --out`: reruns retry the videos that failed; JSON lines hold JSON types.

Real runs of the CLI (in process, ``CliRunner`` on ``vidseq.cli.app``) with a small trained
model on tiny synthetic videos plus a broken file (text named ``bad.mp4``); the broken file is
then replaced by a real video and the run repeated. JSON lines are read with a strict parser
that rejects NaN and Infinity, and every field's type is checked.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _trained import CLASSES, small_model
from typer.testing import CliRunner

from vidseq.cli import app

VIDEO_KEYS = ["path", "label", "probability", "top_labels", "top_probabilities", "frames", "seconds", "error"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """``best.pt`` of the small two-class model (trained once per session)."""
    return small_model(tmp_path_factory)


def write_clip(path: Path, class_name: str, seed: int) -> Path:
    """A tiny real video (16 frames at 64 px) of one synthetic action."""
    from vidseq.io import write_video
    from vidseq.synth import render_clip

    write_video(path, render_clip(class_name, np.random.default_rng(seed), num_frames=16, size=64), fps=8.0)
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Two real videos and ``bad.mp4``, a text file."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "a.mp4", CLASSES[0], seed=1)
    write_clip(videos / "b.mp4", CLASSES[1], seed=2)
    (videos / "bad.mp4").write_text("this is not a video\n" * 20)
    return videos


def predict(*args: str | Path):
    """Run ``vidseq predict ... -q --workers 0`` in process; the click result."""
    runner = CliRunner()
    return runner.invoke(app, ["predict", *map(str, args), "-q", "--workers", "0", "--device", "cpu"])


def strict_json(line: str) -> dict[str, Any]:
    """One JSON line, parsed as strict JSON (NaN, Infinity and -Infinity are errors)."""

    def reject(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant} in {line!r}")

    return json.loads(line, parse_constant=reject)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of a CSV or the (strictly parsed) objects of a JSON-lines output."""
    if out.suffix == ".csv":
        with out.open(newline="") as fh:
            return list(csv.DictReader(fh))
    return [strict_json(line) for line in out.read_text().splitlines()]


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by file name; fails when one video has two rows."""
    names = [Path(row["path"]).name for row in rows]
    assert len(names) == len(set(names)), f"a video has two rows: {names}"
    return dict(zip(names, rows))


def assert_typed(record: dict[str, Any], top_k: int) -> None:
    """One video's JSON object uses JSON types: numbers, lists, null, never a number as string."""
    assert list(record) == VIDEO_KEYS
    assert isinstance(record["path"], str) and isinstance(record["error"], str)
    assert type(record["frames"]) is int and type(record["seconds"]) is float
    assert math.isfinite(record["seconds"]) and record["seconds"] >= 0
    if record["error"]:
        assert record["label"] is None and record["probability"] is None and record["frames"] == 0
        assert record["top_labels"] == [] and record["top_probabilities"] == []
        return
    assert record["label"] in CLASSES and record["frames"] > 0
    assert type(record["probability"]) is float and 0 <= record["probability"] <= 1
    labels, probs = record["top_labels"], record["top_probabilities"]
    assert isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    assert isinstance(probs, list) and all(type(p) is float for p in probs)
    assert len(labels) == len(probs) == top_k and labels[0] == record["label"]
    assert probs == sorted(probs, reverse=True) and probs[0] == record["probability"]


# -- reruns retry what failed ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_rerun_retries_failed_videos_and_skips_done_ones(model, folder, tmp_path, suffix):
    out = tmp_path / f"predictions{suffix}"
    first = predict(folder, "--model", model, "--out", out)
    assert first.exit_code == 1, first.output
    assert "2 predicted, 0 already in" in first.stdout and "1 failed" in first.stdout
    rows = by_name(read_rows(out))
    assert sorted(rows) == ["a.mp4", "b.mp4", "bad.mp4"] and rows["bad.mp4"]["error"]
    done_lines = [line for line in out.read_text().splitlines() if "bad.mp4" not in line]

    still_bad = predict(folder, "--model", model, "--out", out)  # retried, fails again
    assert still_bad.exit_code == 1, still_bad.output
    assert "0 predicted, 2 already in" in still_bad.stdout and "1 failed" in still_bad.stdout
    assert "bad.mp4" in still_bad.stderr
    assert sorted(by_name(read_rows(out))) == ["a.mp4", "b.mp4", "bad.mp4"]  # one row each

    write_clip(folder / "bad.mp4", CLASSES[0], seed=3)  # fixed: now a real video
    fixed = predict(folder, "--model", model, "--out", out)
    assert fixed.exit_code == 0, fixed.output
    assert "1 predicted, 2 already in" in fixed.stdout and "0 failed" in fixed.stdout
    lines = out.read_text().splitlines()
    assert lines[: len(done_lines)] == done_lines  # the done rows are kept as they were written
    rows = by_name(read_rows(out))
    assert sorted(rows) == ["a.mp4", "b.mp4", "bad.mp4"]
    assert rows["bad.mp4"]["error"] == "" and rows["bad.mp4"]["label"] in CLASSES
    assert int(rows["bad.mp4"]["frames"]) > 0

    again = predict(folder, "--model", model, "--out", out)  # nothing left to do
    assert again.exit_code == 0 and "0 predicted, 3 already in" in again.stdout, again.output
    assert out.read_text().splitlines() == lines
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary file left beside it


@pytest.mark.slow
def test_only_the_named_failed_videos_are_retried_and_a_missing_one_stays_failed(model, folder, tmp_path):
    out = tmp_path / "p.jsonl"
    other = tmp_path / "other"
    other.mkdir()
    (other / "junk.mp4").write_bytes(b"\x00junk" * 40)
    missing = tmp_path / "missing.mp4"
    assert predict(folder, other, missing, "--model", model, "--out", out).exit_code == 1
    assert sorted(by_name(read_rows(out))) == ["a.mp4", "b.mp4", "bad.mp4", "junk.mp4", "missing.mp4"]

    rerun = predict(missing, folder / "a.mp4", "--model", model, "--out", out)  # junk, bad: not named
    assert rerun.exit_code == 1, rerun.output
    assert "0 predicted, 1 already in" in rerun.stdout and "1 failed" in rerun.stdout
    rows = by_name(read_rows(out))  # the others' failed rows are kept, missing.mp4's replaced
    assert sorted(rows) == ["a.mp4", "b.mp4", "bad.mp4", "junk.mp4", "missing.mp4"]
    assert rows["missing.mp4"]["error"] == "file does not exist"
    assert list(rows)[-1] == "missing.mp4"  # its new row, appended


# -- JSON lines use JSON types -----------------------------------------------------------------


@pytest.mark.slow
def test_json_lines_use_numbers_lists_and_null(model, folder, tmp_path):
    out = tmp_path / "p.jsonl"
    result = predict(folder, tmp_path / "missing.mp4", "--model", model, "--out", out, "--top-k", "2")
    assert result.exit_code == 1, result.output
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = by_name(read_rows(out))
    assert sorted(rows) == ["a.mp4", "b.mp4", "bad.mp4", "missing.mp4"]
    for record in rows.values():
        assert_typed(record, top_k=2)
    assert rows["a.mp4"]["error"] == "" and rows["bad.mp4"]["error"] and rows["missing.mp4"]["error"]


@pytest.mark.slow
def test_json_lines_with_windows_use_numbers_lists_and_null(model, folder, tmp_path):
    out = tmp_path / "w.jsonl"
    result = predict(folder, tmp_path / "missing.mp4", "--model", model, "--out", out, "--window", "1")
    assert result.exit_code == 1, result.output
    rows = by_name(read_rows(out))
    assert sorted(rows) == ["a.mp4", "b.mp4", "bad.mp4", "missing.mp4"]
    for name, record in rows.items():
        assert list(record) == ["path", "duration", "frames", "seconds", "error", "windows", "segments"]
        assert type(record["frames"]) is int and type(record["seconds"]) is float
        assert type(record["duration"]) is float and isinstance(record["error"], str)
        assert isinstance(record["windows"], list) and isinstance(record["segments"], list)
        if name in ("bad.mp4", "missing.mp4"):
            assert record["error"] and record["windows"] == record["segments"] == []
            continue
        assert record["error"] == "" and record["windows"] and record["segments"]
        for item in record["windows"] + record["segments"]:
            assert item["label"] in CLASSES and type(item["probability"]) is float
            assert type(item["start"]) is float and type(item["end"]) is float


@pytest.mark.slow
def test_csv_rows_keep_their_text_format(model, folder, tmp_path):
    out = tmp_path / "p.csv"
    assert predict(folder, tmp_path / "missing.mp4", "--model", model, "--out", out, "--top-k", "2").exit_code == 1
    assert out.read_text().splitlines()[0] == ",".join(VIDEO_KEYS)
    rows = by_name(read_rows(out))
    done = rows["a.mp4"]
    top = done["top_probabilities"].split("|")
    assert len(top) == 2 and all(len(p.split(".")[1]) == 4 for p in top)  # "0.5123|0.4877"
    assert float(done["probability"]) == float(top[0]) and len(done["top_labels"].split("|")) == 2
    for name in ("bad.mp4", "missing.mp4"):
        failed = rows[name]
        assert failed["error"] and failed["frames"] == "0"
        assert failed["label"] == failed["probability"] == failed["top_labels"] == failed["top_probabilities"] == ""
    assert rows["missing.mp4"]["seconds"] == ""  # never read: no time either


@pytest.mark.slow
def test_the_served_pyfunc_model_answers_a_failed_video_with_null_not_nan(tmp_path, tmp_path_factory):
    """`mlflow models serve` writes what the scoring server's predictions_to_json makes of the
    model's DataFrame: a failed video's probability must be null there (NaN is not JSON)."""
    import io

    import mlflow
    from _trained import small_model
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from vidseq.io import write_video
    from vidseq.predict import write_bundle
    from vidseq.synth import render_clip
    from vidseq.tracking import open_tracker

    bundle = write_bundle(small_model(tmp_path_factory), tmp_path / "bundle")
    clip, bad = tmp_path / "a.mp4", tmp_path / "bad.mp4"
    write_video(clip, render_clip("grow", np.random.default_rng(0), num_frames=16, size=64), fps=8.0)
    bad.write_text("not a video\n")
    tracker = open_tracker(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="serve")
    with tracker.run("r") as run:
        uri = run.log_model(bundle, labels=["grow", "shrink"])
    frame = mlflow.pyfunc.load_model(uri).predict([str(clip), str(bad)])
    buffer = io.StringIO()
    predictions_to_json(frame, buffer)

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    answer = json.loads(buffer.getvalue(), parse_constant=reject)
    rows = answer["predictions"]
    assert isinstance(rows[0]["probability"], float) and rows[0]["error"] == ""
    assert rows[1]["probability"] is None and rows[1]["error"]
