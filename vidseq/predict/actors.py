"""Prediction per person: a model trained on per-person stores labels each tracked person.

Place in the data flow: a video -> ``actor_tracking.track_video`` (the same detector, tracker,
grid, crops and ``FrameEncoder`` as ``vidseq extract --actors``, from the recipe the model's
store recorded) -> each track's streams side by side (crops' features, trajectory, and where the
model reads them the flow inside the crops and each person's pose, ``actor_pose``) -> the head
-> one row per track: its id, first and last time, label and probability.

With a window, each track's sequence is also labelled window by window and the windows joined
into segments (``windows.window_labels`` and ``merge_segments``, as for whole-frame timelines):
a timeline per person. ``render_actors`` draws each tracked box with its id and its label at
that time on every frame of the video (``render.render_frames``; between two grid frames the
box is interpolated). ``ActorStream`` tracks a live source as its frames arrive (the grid of
``actors.fps``, ``stream._Clock``) and labels each person's last ``window`` seconds every
``hop`` seconds, with the latency from the source frame to the label.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import ActorsConfig
from vidseq.errors import VidseqError
from vidseq.features.actor_pose import pose_crop
from vidseq.features.actor_tracking import MAX_DECODE_SIDE, track_video
from vidseq.features.actors import PersonTracker, square_crop, trajectory
from vidseq.features.motion import FlowPooler
from vidseq.io import resize_frame
from vidseq.predict.render import RenderResult, draw_box, render_frames
from vidseq.predict.stream import _camera_index, _Clock, _is_url, _seconds, _Window, open_stream
from vidseq.predict.windows import Segment, Window, merge_segments, window_labels
from vidseq.progress import progress_bar
from vidseq.threads import thread_budget, torch_threads
from vidseq.training.evaluate import predict_proba

ACTOR_STREAMS = ("appearance", "trajectory", "motion", "pose")  # motion: the flow inside each crop
ROW_COLUMNS = ["path", "track", "first", "last", "frames", "label", "probability", "error"]
TIMELINE_COLUMNS = ["path", "track", "kind", "start", "end", "label", "probability", "frames", "windows", "error"]
_PALETTE = (  # RGB, one per track id (id modulo its length)
    (0, 200, 255), (255, 170, 0), (80, 220, 80), (255, 80, 160), (170, 120, 255),
    (255, 240, 60), (0, 140, 140), (240, 90, 60), (120, 200, 255), (200, 200, 200),
)  # fmt: skip


@dataclass
class ActorPrediction:
    """One tracked person's result (``track`` is None on a row about the whole video: an error,
    or nobody tracked). ``windows``/``segments``: the person's timeline when a window was asked
    for. ``fps`` is the video's frame rate and ``rate`` the tracking grid's (frames per second)."""

    path: str
    track: int | None
    first: float | None
    last: float | None
    frames: int
    label: str | None
    probability: float | None
    probabilities: list[float] | None
    boxes: list[list[float]] | None = None
    frame_indices: list[int] | None = None
    error: str = ""
    windows: list[Window] | None = None
    segments: list[Segment] | None = None
    fps: float = 0.0
    rate: float = 0.0

    def as_row(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "track": self.track,
            "first": None if self.first is None else round(self.first, 3),
            "last": None if self.last is None else round(self.last, 3),
            "frames": self.frames,
            "label": self.label,
            "probability": None if self.probability is None else round(self.probability, 4),
            "error": self.error,
        }

    def timeline_rows(self) -> list[dict[str, Any]]:
        """``TIMELINE_COLUMNS`` rows: the track (kind ``track``), then its windows and segments."""
        head = {"path": self.path, "track": self.track, "kind": "track" if self.track is not None else "video"}
        rows = [{**head, "start": _round(self.first), "end": _round(self.last), "label": self.label,
                 "probability": _round(self.probability, 4), "frames": self.frames,
                 "windows": None if self.windows is None else len(self.windows), "error": self.error}]  # fmt: skip
        for kind, spans in (("window", self.windows or []), ("segment", self.segments or [])):
            for span in spans:
                rows.append({**head, "kind": kind, "start": round(span.start, 3), "end": round(span.end, 3),
                             "label": span.label, "probability": round(span.probability, 4), "frames": None,
                             "windows": getattr(span, "windows", 1), "error": ""})  # fmt: skip
        return rows

    def label_at(self, seconds: float) -> tuple[str | None, float | None]:
        """The person's label at ``seconds``: the segment there where a timeline was made (the
        nearest one before or after the track's ends), else the track's label."""
        if not self.segments:
            return self.label, self.probability
        for segment in self.segments:
            if seconds < segment.end:
                return segment.label, segment.probability
        return self.segments[-1].label, self.segments[-1].probability

    def box_at(self, frame_index: int) -> np.ndarray | None:
        """The person's box on frame ``frame_index`` of the video: the tracked box on a grid
        frame, interpolated between two tracked grid frames at most two grid steps apart, the
        nearest tracked one within half a grid step; None where the person was not tracked."""
        if not self.frame_indices:
            return None
        frames = np.asarray(self.frame_indices)
        step = self.fps / self.rate if self.fps > 0 and self.rate > 0 else 1.0
        i = int(np.searchsorted(frames, frame_index))
        if i < len(frames) and frames[i] == frame_index:
            return np.asarray(self.boxes[i], dtype=np.float64)
        before, after = (i - 1 if i > 0 else None), (i if i < len(frames) else None)
        if before is not None and after is not None and frames[after] - frames[before] <= 2 * step + 1e-6:
            share = (frame_index - frames[before]) / (frames[after] - frames[before])
            return (1 - share) * np.asarray(self.boxes[before]) + share * np.asarray(self.boxes[after])
        near = [j for j in (before, after) if j is not None and abs(frames[j] - frame_index) <= step / 2 + 1e-6]
        return np.asarray(self.boxes[near[0]], dtype=np.float64) if near else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def actors_config(predictor) -> ActorsConfig:
    """The tracking settings of the model's per-person store; VidseqError when the model was
    trained on whole frames."""
    recipe = getattr(predictor, "actors", None)
    if recipe is None:
        raise VidseqError("--actors needs a model trained on per-person sequences (`vidseq extract --actors`)")
    return recipe


def _check_streams(predictor) -> None:
    unknown = [s for s in predictor.streams if s not in ACTOR_STREAMS]
    if unknown:
        raise VidseqError(f"per-person prediction reads {', '.join(ACTOR_STREAMS)}; this model also reads {unknown}")


def pose_estimator(predictor):
    """A ``PoseEstimator`` for a model that reads each person's pose (static, as extraction ran
    it), else None. Its settings are the model's (``Predictor.pose``, from its pose store)."""
    if "pose" not in predictor.streams:
        return None
    settings = getattr(predictor, "pose", None)
    if settings is None:
        raise VidseqError("this model reads the pose stream but its checkpoint does not record the pose settings")
    from vidseq.features.pose import PoseEstimator  # the pose extra: only for pose models

    return PoseEstimator(settings.model_copy(update={"mode": "static"}))


def grid_rate(actors: ActorsConfig, fps: float) -> float:
    """Frames per second of the tracking grid: ``actors.fps``, or every frame of a slower video."""
    return min(actors.fps, fps) if fps and fps > 0 else actors.fps


def predict_actors(
    predictor,
    paths: Iterable[str | Path],
    *,
    window: float | None = None,
    hop: float | None = None,
    smooth: int = 1,
    carry_state: bool = False,
    tracker: PersonTracker | None = None,
    progress: bool = False,
) -> list[ActorPrediction]:
    """A row per tracked person of every video (a row with its error for a video that fails or
    shows nobody). ``window`` (seconds; ``hop`` default half of it): each person's timeline too,
    windows of their sequence labelled and joined into segments (``smooth``, ``carry_state`` as
    in ``predict_timeline``)."""
    actors = actors_config(predictor)
    _check_streams(predictor)
    if window is not None:
        hop = window / 2 if hop is None else hop
        window, hop = _seconds("--window", window), _seconds("--hop", hop)
        if smooth < 1:
            raise VidseqError(f"smooth must be at least 1 window, got {smooth}")
    estimator = pose_estimator(predictor)  # before the detector: no extra, one line
    tracker = tracker or PersonTracker(actors, device=str(predictor.device))
    paths = [str(p) for p in paths]
    rows: list[ActorPrediction] = []
    try:
        with progress_bar(len(paths), desc="predict", unit="video", enabled=progress) as bar:
            for path in paths:
                rows.extend(_one_video(predictor, path, tracker, actors, window, hop, smooth, carry_state, estimator))
                bar.update(1)
    finally:
        if estimator is not None:
            estimator.close()
    return rows


def _one_video(
    predictor,
    path: str,
    tracker: PersonTracker,
    actors: ActorsConfig,
    window: float | None,
    hop: float | None,
    smooth: int,
    carry_state: bool,
    estimator=None,
) -> list[ActorPrediction]:
    try:
        flow = FlowPooler(predictor.motion) if "motion" in predictor.streams else None
        backend = predictor.io.backend
        tracked = track_video(path, tracker, predictor.encoder, actors, backend, flow=flow, pose=estimator)
        tracks, crops, geometry, grid = tracked.tracks, tracked.crops, tracked.geometry, tracked.grid
    except Exception as exc:  # noqa: BLE001 - one video's failure is its row
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return [ActorPrediction(path, None, None, None, 0, None, None, None, error=reason)]
    if not tracks:
        why = f"no person tracked ({len(grid)} frames at {actors.fps:g} fps)"
        return [ActorPrediction(path, None, None, None, 0, None, None, None, error=why)]
    fps = geometry.fps
    rate = grid_rate(actors, fps)
    sequences, times_of = [], []
    for track in tracks:
        times = track.frames / fps if fps > 0 else np.arange(len(track), dtype=np.float64) / rate
        parts = {
            "appearance": lambda t=track: np.concatenate(crops[t.track_id]),
            "trajectory": lambda t=track, s=times: trajectory(t.boxes, s, width=geometry.width, height=geometry.height),
            "motion": lambda t=track: np.concatenate(tracked.motion[t.track_id]),
            "pose": lambda t=track: np.concatenate(tracked.pose[t.track_id]),
        }
        sequences.append(np.concatenate([parts[name]() for name in predictor.streams], axis=1))
        times_of.append(times)
    probs = predict_proba(predictor.model, sequences, device=predictor.device)
    out = []
    for track, prob, sequence, times in zip(tracks, probs, sequences, times_of):
        best = int(np.argmax(prob))
        row = ActorPrediction(
            path,
            int(track.track_id),
            float(times[0]),
            float(times[-1]),
            len(track),
            predictor.labels[best],
            float(prob[best]),
            [float(p) for p in prob],
            boxes=track.boxes.round(1).tolist(),
            frame_indices=[int(i) for i in track.frames],
            fps=float(fps or 0.0),
            rate=float(rate),
        )
        if window is not None:
            size, step, spacing = max(1, round(window * rate)), max(1, round(hop * rate)), 1.0 / rate
            row.windows = window_labels(
                predictor,
                sequence,
                times,
                size=size,
                step=step,
                spacing=spacing,
                smooth=smooth,
                carry_state=carry_state,
            )
            row.segments = merge_segments(row.windows, duration=float(times[-1] + spacing), start=float(times[0]))
        out.append(row)
    return out


# -- rendering -----------------------------------------------------------------------------------


def render_actors(
    path: str | Path, out: str | Path, predictions: Iterable[ActorPrediction], *, backend: str = "auto"
) -> RenderResult:
    """Write ``path`` to ``out`` with every tracked person of ``predictions`` (those of this
    path) drawn on every frame: their box (``ActorPrediction.box_at``), track id and label at
    that time (``ActorPrediction.label_at``: the window label where a timeline was made)."""
    people = [p for p in predictions if p.track is not None and str(p.path) == str(path) and p.frame_indices]

    def draw(frame: np.ndarray, index: int, seconds: float) -> np.ndarray:
        canvas = None
        for person in people:
            box = person.box_at(index)
            if box is None:
                continue
            if canvas is None:
                canvas = np.ascontiguousarray(frame).copy()
            label, probability = person.label_at(seconds)
            text = f"#{person.track} {label}" + ("" if probability is None else f" {probability:.2f}")
            draw_box(canvas, box, text, _PALETTE[person.track % len(_PALETTE)])
        return frame if canvas is None else canvas

    return render_frames(path, out, draw, backend=backend)


# -- live streams --------------------------------------------------------------------------------


@dataclass
class ActorStreamLabel:
    """One person's label on a live source: the last ``window`` seconds of their track."""

    track: int
    index: int  # labels emitted for this person so far
    start: float  # stream time of the window's first tracked frame
    end: float  # ... and of its last
    label: str
    probability: float
    latency: float  # seconds from the arrival of the window's last frame to this label
    frames_read: int  # frames read from the source so far
    box: list[float] = field(default_factory=list)  # the person's box on the window's last frame


class _TrackWindow(_Window):
    """A person's last ``size`` grid frames on a stream: crop features, boxes, poses, times (the
    label clock of ``stream._Window``)."""

    def __init__(self, size: int, *, period: float, hop: float) -> None:
        super().__init__(size, period=period, hop=hop)
        self.boxes: deque[np.ndarray] = deque(maxlen=size)
        self.poses: deque[np.ndarray] = deque(maxlen=size)
        self.labels = 0

    def sequence(self, streams: list[str], *, width: int, height: int) -> np.ndarray:
        """The window as the model reads it: its streams side by side, per frame (the
        trajectory's velocities at the window's edges are one-sided differences)."""
        parts = {
            "appearance": lambda: np.stack(self.features),
            "trajectory": lambda: trajectory(np.stack(self.boxes), np.array(self.times), width=width, height=height),
            "pose": lambda: np.stack(self.poses),
        }
        return np.concatenate([parts[name]() for name in streams], axis=1)


class ActorStream:
    """People of a live source (camera index, file, URL) tracked as its frames arrive, each
    person labelled every ``hop`` seconds from their last ``window`` seconds.

    Iterate it for ``ActorStreamLabel`` s. Frames are kept on a grid of ``actors.fps`` frames/s
    of stream time (a file's own rate where that is lower); a kept frame goes through the
    detector and tracker, and the crops of everyone tracked there through the backbone in one
    batch. Memory is flat: per person the last ``window`` seconds of features and boxes, and a
    person not seen for ``actors.lost_seconds`` is forgotten. After (or during) the run,
    ``stream_seconds``, ``wall_seconds``, ``frames_read`` and ``grid_frames`` say how fast it went
    (``realtime_factor``: stream seconds per wall second).
    """

    def __init__(
        self,
        predictor,
        source: str | int,
        *,
        window: float,
        hop: float,
        max_seconds: float | None = None,
        realtime: bool = False,
        tracker: PersonTracker | None = None,
    ) -> None:
        self.actors = actors_config(predictor)
        _check_streams(predictor)
        if "motion" in predictor.streams:
            raise VidseqError(
                "--stream --actors reads the appearance and trajectory streams; this model also reads motion "
                "(predict files with --actors, or train a model without the motion stream)"
            )
        self.predictor, self.source, self.realtime = predictor, source, realtime
        self.window, self.hop = _seconds("window", window), _seconds("hop", hop)
        self.max_seconds = None if max_seconds is None else _seconds("max_seconds", max_seconds, finite=False)
        self.pose = pose_estimator(predictor)
        self.tracker = tracker or PersonTracker(self.actors, device=str(predictor.device))
        self.stream_seconds = self.wall_seconds = 0.0
        self.frames_read = self.grid_frames = 0
        self.rate = self.actors.fps

    @property
    def realtime_factor(self) -> float:
        return self.stream_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __iter__(self) -> Iterator[ActorStreamLabel]:
        with torch_threads(self._prepare()):  # torch's threads as they were once the stream ends
            try:
                yield from self._labels()
            finally:
                if self.pose is not None:  # its MediaPipe graph freed; a next run builds another
                    self.pose.close()
                    self.pose = None

    def _labels(self) -> Iterator[ActorStreamLabel]:
        capture = open_stream(self.source)
        started = time.perf_counter()
        try:
            live = _camera_index(self.source) is not None or _is_url(str(self.source))
            clock = _Clock(capture, live=live, realtime=self.realtime)
            self.rate = self.actors.fps if clock.live else min(self.actors.fps, clock.fps)
            grid = _Window(1, period=1.0 / self.rate, hop=self.hop)  # its sampling grid only
            self.tracker.begin(self.rate)
            people: dict[int, _TrackWindow] = {}
            for frames_read, (seconds, arrived) in enumerate(clock.frames(self.max_seconds), start=1):
                self.frames_read, self.stream_seconds = frames_read, seconds + 1.0 / clock.fps
                self.wall_seconds = time.perf_counter() - started
                if not grid.wants(seconds):
                    continue
                ok, bgr = capture.retrieve()
                if not ok:  # grabbed but not decodable (a camera's dropped frame): skip it
                    continue
                self.grid_frames += 1
                yield from self._frame(np.ascontiguousarray(bgr[..., ::-1]), seconds, arrived, people)
                self._forget(people, seconds)
                self.wall_seconds = time.perf_counter() - started
        finally:
            capture.release()
            self.wall_seconds = time.perf_counter() - started

    def _prepare(self) -> int:
        """The detector run once on a blank frame (Ultralytics sets torch's threads its own way the
        first time) and the backbone built; returns torch's threads for the stream: the budget's
        cores where ``--threads``/``VIDSEQ_THREADS`` names them, else half of them (at least one).
        One frame and a few crops at a time are small operations: on 2 shared cores the stream ran
        2-6x faster on 1 thread than on 2, whose OpenMP threads spin while other work runs."""
        self.tracker.begin(self.rate)
        self.tracker.update(np.zeros((1, 64, 64, 3), np.uint8))
        _ = self.predictor.encoder
        self.pose = self.pose or pose_estimator(self.predictor)
        budget = thread_budget()
        return budget.cores if budget.explicit else max(1, budget.cores // 2)

    def _frame(
        self, rgb: np.ndarray, seconds: float, arrived: float, people: dict[int, _TrackWindow]
    ) -> Iterator[ActorStreamLabel]:
        """Track one grid frame, add everyone tracked there to their window, label the due ones."""
        height, width = rgb.shape[:2]
        scale = min(1.0, MAX_DECODE_SIDE / max(width, height))
        small = rgb if scale >= 1.0 else resize_frame(rgb, (round(height * scale), round(width * scale)))
        [rows] = self.tracker.update(small[None])
        if not len(rows):
            return
        encoder, size = self.predictor.encoder, self.predictor.encoder.spec.input_size
        crops = np.stack([square_crop(small, row[:4], margin=self.actors.margin, size=size) for row in rows])
        features = encoder(crops) if "appearance" in self.predictor.streams else np.zeros((len(rows), 0), np.float32)
        if self.pose is not None:  # each person's pose, cut as extraction cuts it (boxes in the source's pixels)
            poses = self.pose(np.stack([pose_crop(small, row[:4] / scale, scale) for row in rows]))
        frames = max(1, round(self.window * self.rate))
        due = []
        for n, (row, feature) in enumerate(zip(rows, features)):
            track_id = int(row[4])
            person = people.get(track_id)
            if person is None:
                person = people[track_id] = _TrackWindow(frames, period=1.0 / self.rate, hop=self.hop)
            person.add(seconds, feature)
            person.boxes.append(row[:4] / scale)
            if self.pose is not None:
                person.poses.append(poses[n])
            if person.due():
                due.append((track_id, person))
        if not due:
            return
        sequences = [p.sequence(self.predictor.streams, width=width, height=height) for _, p in due]
        probs = self.predictor.classify(sequences)
        ready = time.perf_counter()
        for (track_id, person), prob in zip(due, probs):
            best = int(np.argmax(prob))
            yield ActorStreamLabel(
                track_id,
                person.labels,
                person.times[0],
                person.times[-1],
                self.predictor.labels[best],
                float(prob[best]),
                ready - arrived,
                self.frames_read,
                [round(float(v), 1) for v in person.boxes[-1]],
            )
            person.labels += 1

    def _forget(self, people: dict[int, _TrackWindow], seconds: float) -> None:
        """Drop the people the tracker can no longer give back (unseen for ``lost_seconds``)."""
        horizon = self.actors.lost_seconds + 1.0 / self.rate
        for track_id in [t for t, p in people.items() if seconds - p.times[-1] > horizon + 1e-9]:
            del people[track_id]


def latency_summary(latencies: list[float]) -> str:
    """``median ... ms, 95th percentile ... ms, max ... ms`` of label latencies (seconds)."""
    if not latencies:
        return "no labels"
    values = np.asarray(latencies) * 1000
    return (
        f"median {np.median(values):.0f} ms, 95th percentile {np.percentile(values, 95):.0f} ms, "
        f"max {values.max():.0f} ms"
    )
