"""Batch prediction over files, folders and lists, written as CSV or JSON lines, resumable.

Place in the data flow: inputs -> the videos they name (``vidseq.datasets.discover_videos``)
-> ``Predictor.predict`` in chunks (parallel decode, batched backbone) or, with a window, one
``Timeline`` per video -> rows appended to the output after each chunk. An existing output is
read first: its videos that were predicted are skipped, so a killed run continues where it
stopped; its videos that failed are retried (their old rows are dropped from the file first, in
one atomic rewrite, so it never holds two results for one video). A file that cannot be read
gets a row with its error; the run goes on.

Rows: without a window, one per video (``path, label, probability, top_labels,
top_probabilities, frames, seconds, error``). With a window, in CSV one row per window and per
segment (``path, kind, start, end, label, probability, frames, seconds, error``; ``kind`` is
``window``, ``segment`` or ``video`` for a video that failed); in JSON lines one object per
video with its ``windows`` and ``segments`` lists. JSON lines use JSON types: numbers, lists
and null (``probability`` null and ``top_labels``/``top_probabilities`` empty for a failed
video; never NaN, never a number written as a string).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import atomic
from vidseq.datasets import discover_videos
from vidseq.errors import VidseqError
from vidseq.outputs import check_writable
from vidseq.predict._predictor import PredictError, Prediction, Predictor
from vidseq.predict.windows import Timeline, predict_timeline

VIDEO_COLUMNS = ["path", "label", "probability", "top_labels", "top_probabilities", "frames", "seconds", "error"]
WINDOW_COLUMNS = ["path", "kind", "start", "end", "label", "probability", "frames", "seconds", "error"]
CHUNK_VIDEOS = 32  # videos per extraction call between writes (resume granularity)


@dataclass
class BatchResult:
    """What a run did."""

    out: Path | None
    predicted: int = 0
    skipped: int = 0  # already predicted in the output
    failed: int = 0
    retried: int = 0  # had failed in the output; tried again (counted in predicted or failed too)
    passed_over: list[str] = field(default_factory=list)  # non-video files found in folders
    rows: list[dict[str, Any]] = field(default_factory=list)  # this run's rows, as written
    timelines: list[Timeline] = field(default_factory=list)


def collect_inputs(inputs: Iterable[str | Path]) -> tuple[list[str], dict[str, str], list[str]]:
    """Video paths of files, folders (recursive) and list files, in order, without repeats; an
    error for each named or listed file that is not a video or does not exist; and the files
    of folders that were passed over as not videos (by their extension)."""
    paths: list[str] = []
    errors: dict[str, str] = {}
    passed_over: list[str] = []
    for source in inputs:
        path = Path(source)
        if not path.exists():
            errors[str(path)] = "file does not exist"
            continue
        try:
            found = discover_videos(path)
        except VidseqError as exc:  # a single non-video file, an unreadable list
            errors[str(path)] = str(exc)
            continue
        paths.extend(str(item.path) for item in found.items)
        errors.update({str(p): "listed but not found" for p in found.missing})
        if path.is_dir():
            passed_over.extend(str(p) for p in found.skipped)
        else:
            errors.update({str(p): "not a video file" for p in found.skipped})
    return list(dict.fromkeys(paths)), errors, passed_over


def predict_batch(
    predictor: Predictor,
    inputs: Iterable[str | Path],
    *,
    out: str | Path | None = None,
    top_k: int = 1,
    window: float | None = None,
    hop: float | None = None,
    smooth: int = 1,
    carry_state: bool = False,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Predict every video of ``inputs``; append rows to ``out`` (``.csv`` or ``.jsonl``).

    Videos already predicted in ``out`` are skipped; those that failed there are tried again."""
    if getattr(predictor, "actors", None) is not None:
        raise VidseqError("this model was trained on per-person sequences: predict with --actors (a row per person)")
    out = Path(out) if out is not None else None
    windowed = window is not None
    writer = _Writer(out, windowed) if out is not None else None
    done = writer.done if writer else set()
    paths, bad, passed_over = collect_inputs(inputs)
    retried = writer.forget_failed([*paths, *bad]) if writer is not None else set()
    todo = [p for p in paths if p not in done]
    result = BatchResult(
        out,
        skipped=len(paths) - len(todo) + sum(1 for p in bad if p in done),
        retried=len(retried),
        passed_over=passed_over,
    )
    emit = _emitter(result, writer, on_row)
    for path, error in bad.items():
        if path not in done:
            result.failed += 1
            failed = Timeline(path, error=error) if windowed else _failed_prediction(path, error)
            emit(_error_rows(path, error, windowed), [_json_record(failed)])
    with _bar(len(todo), progress) as bar:
        if windowed:
            for path in todo:
                timeline = predict_timeline(
                    predictor, path, window=window, hop=hop or window / 2, smooth=smooth, carry_state=carry_state
                )
                result.timelines.append(timeline)
                _count(result, not timeline.error)
                emit(_timeline_rows(timeline), [_json_record(timeline)])
                bar.update(1)
        else:
            for first in range(0, len(todo), CHUNK_VIDEOS):
                for pred in predictor.predict(todo[first : first + CHUNK_VIDEOS], top_k=top_k):
                    _count(result, not pred.error)
                    emit([_video_row(pred)], [_json_record(pred)])
                    bar.update(1)
    return result


def _emitter(result: BatchResult, writer: _Writer | None, on_row):
    """``emit(csv_rows, json_records)``: one video's rows, written in the output's format (CSV
    rows when there is no output) and kept in ``result.rows``."""

    def emit(csv_rows: list[dict[str, Any]], json_records: list[dict[str, Any]]) -> None:
        rows = json_records if writer is not None and not writer.csv else csv_rows
        if writer is not None:
            writer.write(rows)
        result.rows.extend(rows)
        for row in rows:
            if on_row is not None:
                on_row(row)

    return emit


def _count(result: BatchResult, ok: bool) -> None:
    if ok:
        result.predicted += 1
    else:
        result.failed += 1


def _video_row(pred: Prediction) -> dict[str, Any]:
    return {
        "path": pred.path,
        "label": pred.label or "",
        "probability": _round(pred.probability),
        "top_labels": "|".join(label for label, _ in pred.top),
        "top_probabilities": "|".join(f"{p:.4f}" for _, p in pred.top),
        "frames": pred.frames,
        "seconds": round(pred.seconds, 3),
        "error": pred.error,
    }


def _timeline_rows(timeline: Timeline) -> list[dict[str, Any]]:
    if timeline.error:
        return _error_rows(timeline.path, timeline.error, True)
    common = {"path": timeline.path, "frames": timeline.frames, "seconds": round(timeline.seconds, 3), "error": ""}
    rows = [
        {
            **common,
            "kind": "window",
            "start": round(w.start, 3),
            "end": round(w.end, 3),
            "label": w.label,
            "probability": _round(w.probability),
        }
        for w in timeline.windows
    ]
    rows += [
        {
            **common,
            "kind": "segment",
            "start": round(s.start, 3),
            "end": round(s.end, 3),
            "label": s.label,
            "probability": _round(s.probability),
        }
        for s in timeline.segments
    ]
    return rows


def _failed_prediction(path: str, error: str) -> Prediction:
    """The result of a video that was never read (a missing or non-video input)."""
    return Prediction(path, None, None, None, [], 0, 0.0, error)


def _json_record(result: Prediction | Timeline) -> dict[str, Any]:
    """One video's JSON-lines object with JSON types: numbers, lists, null for what is missing."""
    if isinstance(result, Timeline):
        record = {
            "path": result.path,
            "duration": round(result.duration, 3),
            "frames": result.frames,
            "seconds": round(result.seconds, 3),
            "error": result.error,
            "windows": [_plain(w) for w in result.windows],
            "segments": [_plain(s) for s in result.segments],
        }
    else:  # the CSV columns, in order
        record = {
            "path": result.path,
            "label": result.label,
            "probability": _rounded(result.probability),
            "top_labels": [label for label, _ in result.top],
            "top_probabilities": [_rounded(p) for _, p in result.top],
            "frames": result.frames,
            "seconds": round(result.seconds, 3),
            "error": result.error,
        }
    return _jsonable(record)


def _rounded(value: float | None) -> float | None:
    """A probability for JSON: a number to 4 decimals, or None when there is none."""
    return None if value is None else round(float(value), 4)


def _plain(obj: Any) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(obj).items()}


def _jsonable(value: Any) -> Any:
    """``value`` with JSON types only: numpy scalars as numbers, tuples as lists, paths as
    strings, NaN and infinities as None (strict JSON has no NaN; a reader would reject it)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value) if isinstance(value, Path) else value


def _error_rows(path: str, error: str, windowed: bool) -> list[dict[str, Any]]:
    if windowed:
        return [{"path": path, "kind": "video", "frames": 0, "error": error}]
    return [{"path": path, "label": "", "frames": 0, "error": error}]


def _round(value: float | None) -> float | str:
    return "" if value is None else round(float(value), 4)


class _Writer:
    """Appends rows to a CSV or JSON-lines file; knows which videos it holds as predicted
    (``done``) and as failed (``failed``), and drops the failed ones' rows before a retry."""

    def __init__(self, out: Path, windowed: bool) -> None:
        if out.suffix.lower() not in (".csv", ".jsonl"):
            raise PredictError(f"{out}: the output must end in .csv or .jsonl")
        check_writable(out.parent, what="predict --out, the file's folder")  # before any video is read
        self.out, self.csv = out, out.suffix.lower() == ".csv"
        self.columns = WINDOW_COLUMNS if windowed else VIDEO_COLUMNS
        self.done, self.failed = self._read_held()

    def _read_held(self) -> tuple[set[str], set[str]]:
        """Videos with a row without an error (done), and videos with only error rows (failed)."""
        done: set[str] = set()
        errored: set[str] = set()
        for path, error in self._results():
            (errored if error else done).add(path)
        return done, errored - done

    def _results(self) -> list[tuple[str, str]]:
        """``(path, error)`` of every readable row of the output ("" error: predicted)."""
        if not self.out.is_file() or self.out.stat().st_size == 0:
            return []
        text = self._text()
        if self.csv:
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames != self.columns:
                raise PredictError(
                    f"{self.out} holds other columns ({', '.join(reader.fieldnames or [])}): "
                    "it was written with or without --window; use another --out"
                )
            return [(row["path"], row["error"] or "") for row in reader]
        results = []
        for line in io.StringIO(text):
            record = _json_object(line)
            if record is not None:  # else a line cut short by a kill: that video is done again
                results.append((str(record["path"]), str(record.get("error") or "")))
        return results

    def _text(self) -> str:
        """The output as written (CSV line ends kept: csv parses them itself)."""
        with self.out.open(newline="" if self.csv else None) as fh:
            return fh.read()

    def forget_failed(self, paths: Iterable[str]) -> set[str]:
        """Drop the rows of those of ``paths`` that failed in the output, so that they are
        predicted again and their new rows replace the old (one atomic rewrite, so a kill leaves
        the old file or the new one). Returns the videos dropped."""
        drop = self.failed.intersection(paths)
        if not drop:
            return drop
        text = self._text()
        if self.csv:
            header, *rows = csv.reader(io.StringIO(text))
            at = header.index("path")
            buffer = io.StringIO()
            kept_rows = [r for r in rows if len(r) <= at or r[at] not in drop]
            csv.writer(buffer).writerows([header, *kept_rows])
            kept = buffer.getvalue()
        else:
            lines = io.StringIO(text)
            kept = "".join(line for line in lines if _json_path(line) not in drop)
        _replace(self.out, kept)
        self.failed -= drop
        return drop

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append one video's rows in one write, flushed to disk (a kill loses at most it)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        if self.csv:
            writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
            if not self.out.is_file() or self.out.stat().st_size == 0:
                writer.writeheader()
            writer.writerows(rows)
        else:
            buffer.writelines(json.dumps(_jsonable(row), allow_nan=False) + "\n" for row in rows)
        with self.out.open("a", newline="") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())


def _json_object(line: str) -> dict[str, Any] | None:
    """The object of one JSON line that names a path, else None (blank, cut short, not ours)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "path" in record else None


def _json_path(line: str) -> str | None:
    """The path a JSON line names, else None."""
    record = _json_object(line)
    return None if record is None else record["path"]


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``vidseq.atomic``), keeping the file's permissions."""
    atomic.write_text(path, text, mode=stat.S_IMODE(path.stat().st_mode))


def _bar(total: int, enabled: bool):
    from vidseq.progress import progress_bar

    return progress_bar(total, desc="predict", unit="video", enabled=enabled)
