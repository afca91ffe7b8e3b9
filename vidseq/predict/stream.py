"""Live streams: frames as they arrive -> one feature per sampled frame -> a label per hop.

Place in the data flow: a camera, URL or file read with OpenCV, frame by frame (BGR -> RGB)
-> ``Predictor.vectors`` of each *sampled* frame on arrival (a model that reads the motion stream:
when its partner frame ``step`` frames later arrives) -> a rolling window of feature
vectors (never frames, so memory is flat however long the stream runs) -> ``Predictor.classify``
every ``hop`` seconds of stream time -> ``StreamLabel`` rows.

Stream time is ``frame index / fps`` for a file (so a file gives the same labels however fast
it is read) and wall-clock seconds since the first frame for a camera or URL. A frame is kept
when its stream time reaches the next point of a sampling grid at ``predictor.frame_rate(window)``
frames/s (the rate the model was trained at; a file's own fps where that is lower, so a window
always spans ``window`` seconds); frames in between are only grabbed, not converted to RGB.
A live source delivers frames as fast as they are processed: when embedding a kept frame takes
longer than the camera's frame interval, OpenCV's buffer makes later frames stale, which shows
as a growing gap between wall-clock stream time and what the camera sees.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidseq.predict._predictor import PredictError, Predictor

if TYPE_CHECKING:
    import cv2

DEFAULT_FPS = 25.0  # a file whose header has no usable frame rate
_EPS = 1e-9  # float slack when a frame time meets a grid point


@dataclass
class StreamLabel:
    """One classified window of the stream (times in seconds of stream time)."""

    index: int  # 0, 1, 2 ... labels emitted
    start: float  # stream time of the window's first frame
    end: float  # stream time of its last frame
    label: str
    probability: float
    latency: float  # seconds from the arrival of the window's last frame to this label being ready
    frames_read: int  # frames read from the source so far


def open_stream(source: str | int) -> cv2.VideoCapture:
    """An open capture of a camera index (``0`` or ``"0"``), a video file or a URL.

    Raises PredictError naming the source when OpenCV cannot open it.
    """
    import cv2

    target = _camera_index(source)
    if target is None:
        target = str(source)
        if not _is_url(target) and not Path(target).exists():
            raise PredictError(f"{source}: no such file; give a video file, a URL or a camera index")
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        raise PredictError(_cannot_open(source, camera=isinstance(target, int)))
    return capture


def stream_labels(
    predictor: Predictor,
    source: str | int,
    *,
    window: float,
    hop: float,
    max_seconds: float | None = None,
    realtime: bool = False,
) -> Iterator[StreamLabel]:
    """Labels of ``window``-second windows of ``source``, one every ``hop`` seconds of stream time.

    The first label comes once a window is full. ``max_seconds`` stops after that much stream
    time; ``realtime=True`` paces a file at its frame rate (as a camera would deliver it).
    Arguments are checked here; the source is opened on the first ``next()`` and released when
    the stream ends, fails or the generator is closed.
    """
    window, hop = _seconds("window", window), _seconds("hop", hop)
    if max_seconds is not None:
        max_seconds = _seconds("max_seconds", max_seconds, finite=False)
    return _labels(
        predictor,
        source,
        window=window,
        rate=predictor.frame_rate(window),
        hop=hop,
        max_seconds=max_seconds,
        realtime=realtime,
    )


def _seconds(name: str, value: float, *, finite: bool = True) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (seconds > 0 and (math.isfinite(seconds) or not finite)):
        raise PredictError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _labels(
    predictor: Predictor,
    source: str | int,
    *,
    window: float,
    rate: float,
    hop: float,
    max_seconds: float | None,
    realtime: bool,
) -> Iterator[StreamLabel]:
    capture = open_stream(source)
    try:
        clock = _Clock(
            capture,
            live=_camera_index(source) is not None or _is_url(str(source)),
            realtime=realtime,
        )
        if not clock.live:  # a file slower than the rate: every frame is kept, and a window
            rate = min(rate, clock.fps)  # holds the frames of `window` seconds, as in training
        frames = _Window(max(1, round(window * rate)), period=1.0 / rate, hop=hop)
        pairs = _Pairs(predictor.pair_step)
        for frames_read, (seconds, arrived) in enumerate(clock.frames(max_seconds), start=1):
            kept = frames.wants(seconds)
            if not (pairs.tick() or kept):
                continue
            ok, bgr = capture.retrieve()
            if not ok:  # grabbed but not decodable (a camera's dropped frame): skip it
                continue
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            for when, vector in pairs.complete(rgb, predictor, kept=kept, seconds=seconds):
                frames.add(when, vector)
                if frames.due():
                    yield frames.label(predictor, arrived, frames_read)
    finally:
        capture.release()


class _Pairs:
    """Kept frames waiting for their motion partner (the frame ``step`` frames later).

    A model without motion has no step: a kept frame's vector is ready at once. With motion, a
    kept frame's vector is ready when its partner arrives (a delay of ``step`` frames); every
    frame read counts down the waiting ones, as the extraction pairs frame i with i + step.
    """

    def __init__(self, step: int | None) -> None:
        self.step = step
        self.pending: deque[list] = deque()  # [seconds, frame, frames still to come]

    def tick(self) -> bool:
        """A frame was read: count down the waiting ones; True when it completes one (decode it)."""
        for entry in self.pending:
            entry[2] -= 1
        return bool(self.pending) and self.pending[0][2] <= 0

    def complete(self, rgb: np.ndarray, predictor: Predictor, *, kept: bool, seconds: float):
        """``(seconds, vector)`` of the kept frames this frame completes, in order."""
        if self.step is None:
            return [(seconds, predictor.vectors(rgb[None])[0])] if kept else []
        ready = []
        while self.pending and self.pending[0][2] <= 0:
            when, first, _ = self.pending.popleft()
            ready.append((when, predictor.vectors(first[None], rgb[None])[0]))
        if kept:
            self.pending.append([seconds, rgb, self.step])
        return ready


class _Clock:
    """Grabs frames and gives each its stream time and wall-clock arrival (``perf_counter``)."""

    def __init__(self, capture: cv2.VideoCapture, *, live: bool, realtime: bool) -> None:
        import cv2

        self.capture, self.live, self.realtime = capture, live, realtime and not live
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS

    def frames(self, max_seconds: float | None) -> Iterator[tuple[float, float]]:
        """``(stream time, arrival)`` per grabbed frame, until the end or ``max_seconds``."""
        first = None
        index = 0
        while self.capture.grab():
            arrived = time.perf_counter()
            first = arrived if first is None else first
            seconds = arrived - first if self.live else index / self.fps
            if max_seconds is not None and seconds > max_seconds + _EPS:
                return
            if self.realtime:  # a file delivered at its own pace, like a camera
                time.sleep(max(0.0, first + seconds - arrived))
                arrived = time.perf_counter()
            index += 1
            yield seconds, arrived


class _Window:
    """The sampling grid, the last ``size`` feature vectors and when the next label is due."""

    def __init__(self, size: int, *, period: float, hop: float) -> None:
        self.size, self.period, self.hop = size, period, hop
        self.features: deque[np.ndarray] = deque(maxlen=size)
        self.times: deque[float] = deque(maxlen=size)
        self.next_sample = 0.0
        self.next_label: float | None = None
        self.count = 0

    def wants(self, seconds: float) -> bool:
        """True when ``seconds`` reached the next grid point (which then moves past it)."""
        if seconds + _EPS < self.next_sample:
            return False
        self.next_sample = _next_on_grid(seconds, self.next_sample, self.period)
        return True

    def add(self, seconds: float, features: np.ndarray) -> None:
        self.times.append(seconds)
        self.features.append(features)

    def due(self) -> bool:
        """True when the window is full and its last frame reached the next label time."""
        if len(self.features) < self.size:
            return False
        end = self.times[-1]
        if self.next_label is None:  # the first full window: labels go on a grid from here
            self.next_label = end
        if end + _EPS < self.next_label:
            return False
        self.next_label = _next_on_grid(end, self.next_label, self.hop)
        return True

    def label(self, predictor: Predictor, arrived: float, frames_read: int) -> StreamLabel:
        probs = predictor.classify([np.stack(self.features)])[0]
        best = int(np.argmax(probs))
        result = StreamLabel(
            self.count,
            self.times[0],
            self.times[-1],
            predictor.labels[best],
            float(probs[best]),
            time.perf_counter() - arrived,
            frames_read,
        )
        self.count += 1
        return result


def _next_on_grid(seconds: float, point: float, step: float) -> float:
    """The first point of the grid ``point + k * step`` (k >= 1) that lies after ``seconds``."""
    k = max(1, math.floor((seconds - point) / step + _EPS) + 1)
    return point + k * step


def _camera_index(source: str | int) -> int | None:
    if isinstance(source, int) and not isinstance(source, bool):
        return source
    text = str(source).strip()
    return int(text) if text.isdigit() else None


def _cannot_open(source: str | int, *, camera: bool) -> str:
    if camera:
        return (
            f"camera {source}: cannot be opened; check the index (0 is the first camera) and "
            "that no other program holds it"
        )
    if _is_url(str(source)):
        return f"{source}: cannot be opened; check the URL and that the stream is reachable from here"
    return f"{source}: cannot be opened as a video; check that it is a video file OpenCV can read"


def _is_url(text: str) -> bool:
    return "://" in text
