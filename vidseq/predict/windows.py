"""Long videos as timelines: labels per sliding window, and the windows merged into segments.

Place in the data flow: one video -> features on a regular time grid (the extraction loop with
``stride`` sampling at the rate the model was trained at, so each frame is decoded and embedded
once, in chunks, whatever the video's length) -> the head on every window of consecutive grid
features -> ``Window`` rows -> ``Segment`` rows (consecutive windows of one label joined).
Cost is linear in the video's length; memory holds only the grid features (an hour at 4
frames/s of 1280-d features is about 70 MB) and one batch of windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidseq.config import SamplingConfig
from vidseq.predict._predictor import PredictError, Predictor

WINDOW_BATCH = 256  # windows classified at once (bounds memory on long videos)


@dataclass
class Window:
    """The label of the window ``[start, end)`` seconds."""

    start: float
    end: float
    label: str
    probability: float


@dataclass
class Segment:
    """Consecutive windows of one label, joined: ``[start, end)`` seconds."""

    start: float
    end: float
    label: str
    probability: float  # mean probability of the label over its windows
    windows: int


@dataclass
class Timeline:
    """A video's windows and segments (or its error)."""

    path: str
    duration: float = 0.0
    windows: list[Window] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    error: str = ""


def grid(predictor: Predictor, window: float, hop: float) -> tuple[float, int, int]:
    """``(rate, frames per window, frames per hop)`` of the sampling grid."""
    if window <= 0 or hop <= 0:
        raise PredictError(f"--window and --hop must be positive seconds, got {window} and {hop}")
    rate = predictor.frame_rate(window)
    return rate, max(1, round(window * rate)), max(1, round(hop * rate))


def predict_timeline(
    predictor: Predictor,
    path: str | Path,
    *,
    window: float,
    hop: float,
    smooth: int = 1,
    carry_state: bool = False,
    progress: bool = False,
) -> Timeline:
    """Windows of ``window`` seconds every ``hop`` seconds along the video, and its segments.

    ``smooth`` > 1 averages each window's class probabilities with its neighbours (a centred
    moving average over that many windows) before labelling: fewer one-window flickers where
    a window straddles two actions.

    ``carry_state``: instead of reading each window afresh, feed the grid features to the
    recurrent head ``hop`` by ``hop`` and carry its state along the whole video (O(1) work per
    hop); a label then reflects everything seen so far, fading with the state's memory. Needs
    a model that can stream (unidirectional, ``pooling: last``, ``center: false``)."""
    if smooth < 1:
        raise PredictError(f"smooth must be at least 1 window, got {smooth}")
    rate, size, step = grid(predictor, window, hop)
    start = time.perf_counter()
    sampling = SamplingConfig(mode="stride", target_fps=rate)
    found, errors = predictor.features([path], sampling=sampling, progress=progress)
    key = str(path)
    if key in errors:
        return Timeline(key, error=errors[key], seconds=time.perf_counter() - start)
    item = found[key]
    fps = float(item.meta.get("fps") or 0) or rate
    times = np.asarray(item.timestamps, dtype=np.float64)
    spacing = 1.0 / min(rate, fps)
    duration = float(times[-1] + spacing) if len(times) else 0.0
    windows = window_labels(
        predictor, item.features, times, size=size, step=step, spacing=spacing, smooth=smooth, carry_state=carry_state
    )
    timeline = Timeline(key, duration, windows, merge_segments(windows, duration=duration), len(times))
    timeline.seconds = time.perf_counter() - start
    return timeline


def window_labels(
    predictor: Predictor,
    features: np.ndarray,
    times: np.ndarray,
    *,
    size: int,
    step: int,
    spacing: float,
    smooth: int = 1,
    carry_state: bool = False,
) -> list[Window]:
    """The labels of windows of ``size`` consecutive rows of ``features`` (one row per grid
    frame, at ``times`` seconds, ``spacing`` seconds apart), every ``step`` rows: a video's grid
    features, or one tracked person's sequence (``vidseq.predict.actors``). ``smooth`` and
    ``carry_state`` as in ``predict_timeline``."""
    if carry_state:
        return _carried(predictor, features, times, size, step, spacing)
    return _windows(predictor, features, times, size, step, spacing, smooth)


def _windows(
    predictor: Predictor, features: np.ndarray, times: np.ndarray, size: int, step: int, spacing: float, smooth: int
) -> list[Window]:
    """Window labels in order; a video shorter than one window is one (shorter) window."""
    count = len(features)
    starts = list(range(0, max(1, count - size + 1), step))
    if count > size and starts[-1] + size < count:
        starts.append(count - size)  # the tail is never left unlabelled
    probs = np.concatenate([
        predictor.classify([features[s : s + size] for s in starts[first : first + WINDOW_BATCH]])
        for first in range(0, len(starts), WINDOW_BATCH)
    ])  # fmt: skip
    probs = _moving_average(probs, smooth)
    best = probs.argmax(axis=1)
    return [
        Window(float(times[s]), float(times[min(s + size, count) - 1] + spacing), predictor.labels[b], float(p[b]))
        for s, p, b in zip(starts, probs, best)
    ]


def _carried(
    predictor: Predictor, features: np.ndarray, times: np.ndarray, size: int, step: int, spacing: float
) -> list[Window]:
    """One ``step`` of the recurrent head per hop, its state carried from the video's start."""
    import torch

    model = predictor.model
    if not getattr(model, "supports_streaming", False):
        raise PredictError(
            "carrying the recurrent state needs a unidirectional LSTM/GRU trained with "
            "pooling: last and center: false; this model reads windows only"
        )
    windows, state = [], None
    with torch.inference_mode():
        for first in range(0, len(features), step):
            chunk = torch.from_numpy(np.ascontiguousarray(features[first : first + step])).to(predictor.device)
            logits, state = model.step(chunk[None], state)
            probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
            last = min(first + step, len(features)) - 1
            best = int(probs.argmax())
            start = float(times[max(0, last + 1 - size)])
            windows.append(Window(start, float(times[last] + spacing), predictor.labels[best], float(probs[best])))
    return windows


def _moving_average(probs: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over windows (edges average what they have)."""
    if width <= 1 or len(probs) < 2:
        return probs
    kernel = np.ones(width)
    pad = width // 2
    total = np.stack(
        [np.convolve(probs[:, c], kernel, mode="full")[pad : pad + len(probs)] for c in range(probs.shape[1])], axis=1
    )
    counts = np.convolve(np.ones(len(probs)), kernel, mode="full")[pad : pad + len(probs)]
    return total / counts[:, None]


def merge_segments(windows: list[Window], *, duration: float, start: float = 0.0) -> list[Segment]:
    """Join consecutive windows of one label. Each window stands for the time around its
    centre; a boundary lies halfway between the centres of two windows that disagree; the first
    segment starts at ``start`` (a video's 0, a tracked person's first time) and the last ends
    at ``duration``."""
    segments: list[Segment] = []
    for i, win in enumerate(windows):
        if segments and segments[-1].label == win.label:
            seg = segments[-1]
            seg.probability += win.probability
            seg.windows += 1
            continue
        boundary = start if i == 0 else (_centre(windows[i - 1]) + _centre(win)) / 2
        if segments:
            segments[-1].end = boundary
        segments.append(Segment(boundary, duration, win.label, win.probability, 1))
    for seg in segments:
        seg.probability /= seg.windows
    return segments


def _centre(window: Window) -> float:
    return (window.start + window.end) / 2
