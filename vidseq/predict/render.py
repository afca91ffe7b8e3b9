"""Annotated videos: a video and its timeline of labels -> the same video with the label drawn.

Place in the data flow: the end of prediction. Every frame of the input is decoded in order
(``vidseq.io.iter_frames``, chunk by chunk, so memory is flat in the video's length); the label
and probability of the timeline entry at the frame's time (``index / fps``) are drawn in a box
at the top left (OpenCV, scaled to the frame); the frames are encoded to H.264 with PyAV at the
input's frame rate, one output frame per input frame (OpenCV's mp4v where PyAV has no libx264,
``vidseq.io.VideoWriter``). The file appears atomically (a temporary file in the same
folder, then ``os.replace``), and the input is never overwritten. ``render_frames`` is that
loop with any drawing: ``vidseq.predict.actors`` draws each tracked person's box (``draw_box``).
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import atomic
from vidseq.io import CONTAINERS, VideoWriter, encoder_name, iter_frames, probe
from vidseq.predict._predictor import PredictError

DEFAULT_FPS = 25.0  # an input whose header has no usable frame rate
_BOX_RGB = (16, 16, 16)
_TEXT_RGB = (255, 255, 255)
_TEXT_HEIGHT = 0.045  # of the frame height
_EPS = 1e-9


@dataclass
class RenderResult:
    """Where the annotated video is, how many frames it has and at which rate."""

    out: Path
    frames: int
    fps: float


@dataclass(frozen=True)
class _Entry:
    start: float
    end: float
    label: str
    probability: float | None


def render_video(path: str | Path, out: str | Path, timeline: Iterable[Any], *, backend: str = "auto") -> RenderResult:
    """Write ``path`` to ``out`` (.mp4, .mov or .mkv) with the labels of ``timeline`` drawn on it.

    ``timeline``: ``(start_s, end_s, label, probability)`` tuples, or objects with those
    attributes (windows, segments, ``StreamLabel``s). A frame at ``t`` seconds shows the latest
    entry whose start is at or before ``t``; frames before the first entry are left as they are.
    ``backend`` picks the decoder (see ``vidseq.io``). Raises VideoDecodeError naming an
    unreadable input, PredictError for ``out == path``, an unknown suffix or a bad entry.
    """
    _check_out(Path(path), Path(out))
    entries = _entries(timeline)
    starts = [entry.start for entry in entries]

    def draw(frame: np.ndarray, index: int, seconds: float) -> np.ndarray:
        entry = _entry_at(entries, starts, seconds)
        return frame if entry is None else draw_label(frame, entry.label, entry.probability)

    return render_frames(path, out, draw, backend=backend)


def render_frames(
    path: str | Path,
    out: str | Path,
    draw: Callable[[np.ndarray, int, float], np.ndarray],
    *,
    backend: str = "auto",
) -> RenderResult:
    """Write ``path`` to ``out`` (.mp4, .mov or .mkv), every frame passed through
    ``draw(frame, index, seconds)`` (``uint8 (H, W, 3)`` RGB in and out; ``seconds = index / fps``):
    the loop shared by ``render_video`` and the per-person boxes of ``vidseq.predict.actors``."""
    path, out = Path(path), Path(out)
    _check_out(path, out)
    info = probe(path, backend=backend)
    fps = info.fps if info.fps and math.isfinite(info.fps) and info.fps > 0 else DEFAULT_FPS
    with atomic.replacing(out) as tmp, _Encoder(tmp, width=info.width, height=info.height, fps=fps) as encoder:
        for first, frames in iter_frames(path, backend=backend, chunk_size=16):
            for index, frame in enumerate(frames, start=first):
                encoder.write(draw(frame, index, index / fps))
    return RenderResult(out, encoder.count, fps)


def draw_label(frame: np.ndarray, label: str, probability: float | None = None) -> np.ndarray:
    """A copy of ``frame`` (``uint8 (H, W, 3)`` RGB) with ``label`` and ``probability`` in a box."""
    import cv2

    text = _text(label, probability)
    layout = _layout(frame.shape[0], frame.shape[1], text)
    x0, y0, x1, y1 = layout.box
    canvas = np.ascontiguousarray(frame).copy()
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), _BOX_RGB, thickness=cv2.FILLED)
    cv2.putText(
        canvas,
        text,
        layout.origin,
        cv2.FONT_HERSHEY_SIMPLEX,
        layout.scale,
        _TEXT_RGB,
        layout.thickness,
        cv2.LINE_AA,
    )
    return canvas


def draw_box(
    frame: np.ndarray, box: Sequence[float], text: str, colour: tuple[int, int, int] = (0, 200, 255)
) -> np.ndarray:
    """``frame`` (drawn on in place, ``uint8 (H, W, 3)`` RGB, contiguous) with the rectangle
    ``box`` (``x1, y1, x2, y2`` pixels) in ``colour`` and ``text`` on a filled tab of that colour
    above its top-left corner (below it where the box touches the top of the frame)."""
    import cv2

    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = max(0, min(width - 1, x1)), max(0, min(width - 1, x2))
    y1, y2 = max(0, min(height - 1, y1)), max(0, min(height - 1, y2))
    line = max(1, round(height / 300))
    cv2.rectangle(frame, (x1, y1), (x2, y2), colour, line)
    scale = max(0.35, height * _TEXT_HEIGHT * 0.6 / _text_size(text, 1.0, 2)[1])
    thickness = max(1, round(scale * 1.6))
    text_w, text_h = _text_size(text, scale, thickness)
    pad = max(2, round(text_h * 0.3))
    tab_h = text_h + 2 * pad + max(1, round(text_h * 0.3))
    top = y1 - tab_h if y1 - tab_h >= 0 else y1
    left = max(0, min(x1, width - text_w - 2 * pad))
    cv2.rectangle(frame, (left, top), (left + text_w + 2 * pad, top + tab_h), colour, thickness=cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 380 else _TEXT_RGB
    origin = (left + pad, top + pad + text_h)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)
    return frame


def label_box(height: int, width: int, label: str, probability: float | None = None) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (end-exclusive) of the box ``draw_label`` draws on such a frame."""
    return _layout(height, width, _text(label, probability)).box


@dataclass(frozen=True)
class _Layout:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (end-exclusive)
    origin: tuple[int, int]  # bottom-left of the text
    scale: float
    thickness: int


def _layout(height: int, width: int, text: str) -> _Layout:
    """Text about 4.5% of the frame height (never below a legible minimum), narrowed to fit
    the width, in a box at the top left with a margin and padding of about a third of it."""
    scale = max(0.35, height * _TEXT_HEIGHT / _text_size(text, 1.0, 2)[1])
    text_w, text_h = _text_size(text, scale, max(1, round(scale * 1.6)))
    pad = max(2, round(text_h * 0.35))
    if text_w + 3 * pad > width:  # a long label on a narrow frame: shrink to fit
        scale = max(0.3, scale * (width - 3 * pad) / text_w)
    thickness = max(1, round(scale * 1.6))
    text_w, text_h = _text_size(text, scale, thickness)
    descent = max(1, round(text_h * 0.3))  # room below the baseline (g, p, _)
    x1 = min(width, 2 * pad + text_w + pad)
    y1 = min(height, 2 * pad + text_h + descent + pad)
    box = (min(pad, x1 - 1), min(pad, y1 - 1), x1, y1)
    return _Layout(box, (box[0] + pad, y1 - pad - descent), scale, thickness)


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    import cv2

    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0]


def _text(label: str, probability: float | None) -> str:
    return str(label) if probability is None else f"{label} {probability:.2f}"


def _check_out(path: Path, out: Path) -> None:
    same = out.resolve() == path.resolve() or (out.exists() and path.exists() and os.path.samefile(out, path))
    if same:
        raise PredictError(f"{out}: this is the input video; write the annotated video to another path")
    if out.suffix.lower() not in CONTAINERS:
        raise PredictError(f"{out}: unknown video suffix; name the output .mp4, .mov or .mkv")


def _entries(timeline: Iterable[Any]) -> list[_Entry]:
    """The timeline as entries sorted by start (stable: equal starts keep their order)."""
    entries = [_entry(item, i) for i, item in enumerate(timeline)]
    return sorted(entries, key=lambda entry: entry.start)


def _entry(item: Any, position: int) -> _Entry:
    try:
        if isinstance(item, Sequence) and not isinstance(item, str):
            start, end, label, probability = item
        else:
            start, end, label, probability = item.start, item.end, item.label, item.probability
        entry = _Entry(
            float(start),
            float(end),
            str(label),
            None if probability is None else float(probability),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise PredictError(
            f"timeline entry {position} ({item!r}) is not (start_s, end_s, label, probability): {exc}"
        ) from None
    if not (math.isfinite(entry.start) and math.isfinite(entry.end)):
        raise PredictError(f"timeline entry {position} ({item!r}) has a start or end that is not a finite number")
    return entry


def _entry_at(entries: list[_Entry], starts: list[float], seconds: float) -> _Entry | None:
    """The latest entry whose start is at or before ``seconds``; None before the first."""
    i = bisect.bisect_right(starts, seconds + _EPS) - 1
    return entries[i] if i >= 0 else None


class _Encoder(VideoWriter):
    """``vidseq.io.VideoWriter`` at even sides (yuv420p plays everywhere): an odd side is padded
    by repeating the last row/column; a frame of another size is resized."""

    def __init__(self, path: Path, *, width: int, height: int, fps: float) -> None:
        super().__init__(path, width=width + width % 2, height=height + height % 2, fps=fps, codec=encoder_name())

    def write(self, rgb: np.ndarray) -> None:
        super().write(self._fit(rgb))

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        """The frame at the encoder's size: odd sides padded (a frame of another size resized)."""
        height, width = rgb.shape[:2]
        if (height + height % 2, width + width % 2) != (self.height, self.width):
            import cv2

            return cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if (height, width) != (self.height, self.width):
            rgb = np.pad(rgb, ((0, self.height - height), (0, self.width - width), (0, 0)), mode="edge")
        return np.ascontiguousarray(rgb)
