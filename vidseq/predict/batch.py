"""Batch prediction over files, folders and lists, written as CSV or JSON lines, resumable.

Place in the data flow: inputs -> the videos they name (``vidseq.datasets.discover_videos``)
-> ``Predictor.predict`` in chunks (parallel decode, batched backbone) or, with a window, one
``Timeline`` per video -> rows appended to the output after each chunk. An existing output is
read first and its videos are skipped, so a killed run continues where it stopped. A file that
cannot be read gets a row with its error; the run goes on.

Rows: without a window, one per video (``path, label, probability, top_labels,
top_probabilities, frames, seconds, error``). With a window, in CSV one row per window and per
segment (``path, kind, start, end, label, probability, frames, seconds, error``; ``kind`` is
``window``, ``segment`` or ``video`` for a video that failed); in JSON lines one object per
video with its ``windows`` and ``segments`` lists.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseq.datasets import discover_videos
from vidseq.errors import VidseqError
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
    skipped: int = 0  # already in the output
    failed: int = 0
    passed_over: list[str] = field(default_factory=list)  # non-video files found in folders
    rows: list[dict[str, Any]] = field(default_factory=list)  # this run's rows (video or window mode)
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


def predict_batch(predictor: Predictor, inputs: Iterable[str | Path], *, out: str | Path | None = None,
                  top_k: int = 1, window: float | None = None, hop: float | None = None,
                  smooth: int = 1, carry_state: bool = False, progress: bool = True,
                  on_row: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
    """Predict every video of ``inputs``; append rows to ``out`` (``.csv`` or ``.jsonl``)."""
    out = Path(out) if out is not None else None
    windowed = window is not None
    writer = _Writer(out, windowed) if out is not None else None
    done = writer.done if writer else set()
    paths, bad, passed_over = collect_inputs(inputs)
    todo = [p for p in paths if p not in done]
    result = BatchResult(out, skipped=len(paths) - len(todo) + sum(1 for p in bad if p in done),
                         passed_over=passed_over)
    emit = _emitter(result, writer, on_row)
    for path, error in bad.items():
        if path not in done:
            result.failed += 1
            emit(path, _error_rows(path, error, windowed))
    with _bar(len(todo), progress) as bar:
        if windowed:
            for path in todo:
                timeline = predict_timeline(predictor, path, window=window, hop=hop or window / 2, smooth=smooth,
                                            carry_state=carry_state)
                result.timelines.append(timeline)
                _count(result, not timeline.error)
                emit(path, _timeline_rows(timeline) if writer is None or writer.csv else [_timeline_object(timeline)])
                bar.update(1)
        else:
            for first in range(0, len(todo), CHUNK_VIDEOS):
                for pred in predictor.predict(todo[first : first + CHUNK_VIDEOS], top_k=top_k):
                    _count(result, not pred.error)
                    emit(pred.path, [_video_row(pred)])
                    bar.update(1)
    return result


def _emitter(result: BatchResult, writer: _Writer | None, on_row):
    def emit(path: str, rows: list[dict[str, Any]]) -> None:
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
    return {"path": pred.path, "label": pred.label or "", "probability": _round(pred.probability),
            "top_labels": "|".join(label for label, _ in pred.top),
            "top_probabilities": "|".join(f"{p:.4f}" for _, p in pred.top),
            "frames": pred.frames, "seconds": round(pred.seconds, 3), "error": pred.error}


def _timeline_rows(timeline: Timeline) -> list[dict[str, Any]]:
    if timeline.error:
        return _error_rows(timeline.path, timeline.error, True)
    common = {"path": timeline.path, "frames": timeline.frames, "seconds": round(timeline.seconds, 3), "error": ""}
    rows = [{**common, "kind": "window", "start": round(w.start, 3), "end": round(w.end, 3), "label": w.label,
             "probability": _round(w.probability)} for w in timeline.windows]
    rows += [{**common, "kind": "segment", "start": round(s.start, 3), "end": round(s.end, 3), "label": s.label,
              "probability": _round(s.probability)} for s in timeline.segments]
    return rows


def _timeline_object(timeline: Timeline) -> dict[str, Any]:
    return {"path": timeline.path, "duration": round(timeline.duration, 3), "frames": timeline.frames,
            "seconds": round(timeline.seconds, 3), "error": timeline.error,
            "windows": [_plain(w) for w in timeline.windows], "segments": [_plain(s) for s in timeline.segments]}


def _plain(obj: Any) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(obj).items()}


def _error_rows(path: str, error: str, windowed: bool) -> list[dict[str, Any]]:
    if windowed:
        return [{"path": path, "kind": "video", "frames": 0, "error": error}]
    return [{"path": path, "label": "", "frames": 0, "error": error}]


def _round(value: float | None) -> float | str:
    return "" if value is None else round(float(value), 4)


class _Writer:
    """Appends rows to a CSV or JSON-lines file; knows which videos it already holds."""

    def __init__(self, out: Path, windowed: bool) -> None:
        if out.suffix.lower() not in (".csv", ".jsonl"):
            raise PredictError(f"{out}: the output must end in .csv or .jsonl")
        self.out, self.csv = out, out.suffix.lower() == ".csv"
        self.columns = WINDOW_COLUMNS if windowed else VIDEO_COLUMNS
        self.done = self._read_done()

    def _read_done(self) -> set[str]:
        if not self.out.is_file() or self.out.stat().st_size == 0:
            return set()
        text = self.out.read_text()
        if self.csv:
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames != self.columns:
                raise PredictError(f"{self.out} holds other columns ({', '.join(reader.fieldnames or [])}): "
                                   "it was written with or without --window; use another --out")
            return {row["path"] for row in reader}
        done = set()
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: that video is done again
        return done

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
            buffer.writelines(json.dumps(row, default=str) + "\n" for row in rows)
        with self.out.open("a", newline="") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="video", desc="predict", disable=not enabled, dynamic_ncols=True)
