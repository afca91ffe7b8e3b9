"""What both extraction engines share: decode one video in chunks, run the backbone on a batch,
and assemble features into store entries.

Place in the data flow: io + sampling -> **video_chunks** (fitted frames, the motion stream's
pooled flow and the pose stream's vectors, in a decode worker or a Ray task) -> **BatchForward**
(the backbone, in this process or a Ray actor) -> **VideoSink** (whole videos -> atomic store
entries and manifest rows; one sink per stream, one ``RunProgress`` over videos for all of them). ``extraction``
(the local engine) and ``ray_engine`` only schedule these; neither has a copy of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidseq import __version__
from vidseq.backbones import Backbone, BackboneSpec, FrameEncoder, decode_size, fit_frames
from vidseq.config import ExtractConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.features.motion import FlowPooler, MotionError, pair_indices
from vidseq.features.pose import PoseEstimator, present
from vidseq.features.store import VideoFeatures, write_entry
from vidseq.io import VideoReader, open_video
from vidseq.sampling import indices_from_config

if TYPE_CHECKING:
    from vidseq.features.plan import ExtractionPlan

_IN_MEMORY_LIMIT = 64 << 20  # bytes of one video's features kept in RAM before a memmap is used
_VIEW_EVERY_SECONDS = 30.0  # between rebuilds of the manifest view during a run (records are written at once)


# -- decode --------------------------------------------------------------------------------


def video_chunks(
    job: int,
    path: str,
    *,
    spec: BackboneSpec,
    sampling: SamplingConfig,
    backend: str,
    chunk: int,
    appearance: bool = True,
    flow: FlowPooler | None = None,
    pose: PoseEstimator | None = None,
) -> Iterator[dict[str, Any]]:
    """One video's sampled frames fitted to the backbone, ``uint8 (n, S, S, 3)`` per chunk, or one error.

    Chunks: ``{"job", "start", "total", "indices", "fps", "frames", "motion", "motion_error",
    "pose", "error": ""}``; a failure (at open or mid-video) ends the video with ``{"job", "error"}``.
    ``flow`` (the motion stream wanted): each chunk's frames and their pair partners are read in
    one ``reader.read``, and ``"motion"`` holds the chunk's pooled flow ``(n, motion_dim)``
    (else None); a video too short for a pair gives ``"motion_error"`` instead. ``pose`` (the
    pose stream wanted): ``"pose"`` holds the chunk's pose vectors ``(n, pose_dim)`` (else None),
    from the decoded sampled frames *before* the backbone's centre crop or letterbox: a crop can
    cut off the person at the side of a wide frame (a pose needs the whole body in view, while
    the backbone was trained on centre crops); the decoded frames are at the backbone's decode
    size (short side ``resize``, 256 for most backbones: about the input size of MediaPipe's own
    detector and landmark models, so little is lost). A frame where nobody is found is a vector
    with presence 0, not an error. ``appearance`` False (only other streams wanted): ``"frames"``
    is empty, only what they need is decoded. The reader is opened here, in the process that runs
    this (a DataLoader worker, a Ray task), never before a fork.
    """
    try:
        with open_video(path, backend=backend) as reader:
            info = reader.info
            indices = indices_from_config(info.num_frames, info.fps, sampling)
            size = decode_size(info.height, info.width, spec)
            pairs, motion_error = _pairs(indices, info.num_frames, flow)
            base = {"job": job, "total": len(indices), "fps": info.fps, "motion_error": motion_error, "error": ""}
            if not appearance and pose is None and pairs is None:  # only motion wanted, and it cannot be had
                yield {**base, "start": 0, "indices": indices[:0], "frames": _no_frames(spec), "motion": None}
                return
            if pose is not None:
                pose.reset()  # mode video: a new video's frames are no continuation of the last one's
            for start in range(0, len(indices), chunk):
                part = slice(start, start + chunk)
                frames, motion, vectors = _read_chunk(
                    reader,
                    indices[part],
                    size=size,
                    spec=spec,
                    appearance=appearance,
                    pairs=None if pairs is None else (pairs[0][part], pairs[1][part]),
                    flow=flow,
                    pose=pose,
                )
                yield {
                    **base,
                    "start": start,
                    "indices": indices[part],
                    "frames": frames,
                    "motion": motion,
                    "pose": vectors,
                }
    except Exception as exc:  # noqa: BLE001 - any failure of one video is that video's row
        yield {"job": job, "error": _describe_error(exc)}


def _pairs(
    indices: np.ndarray, num_frames: int, flow: FlowPooler | None
) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The sampled frames' flow pairs, or None with why (no flow wanted: ""; a too short video)."""
    if flow is None:
        return None, ""
    try:
        return pair_indices(indices, num_frames, flow.config.step), ""
    except MotionError as exc:
        return None, str(exc)


def _read_chunk(
    reader: VideoReader,
    indices: np.ndarray,
    *,
    size: int | tuple[int, int],
    spec: BackboneSpec,
    appearance: bool,
    pairs: tuple[np.ndarray, np.ndarray] | None,
    flow: FlowPooler | None,
    pose: PoseEstimator | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A chunk's fitted sampled frames (empty unless ``appearance``), its pooled flow and its pose
    vectors (each None where not wanted).

    With pairs, the sorted union of the sampled frames and their partners is decoded in one read
    (the partner of frame i is usually i + 1: the decoder just goes on), at the backbone's decode
    size and fit, so the flow sees the frames the backbone sees. The pose sees the same decoded
    frames before the fit (see ``video_chunks``).
    """
    if pairs is None or flow is None:
        decoded = reader.read(indices, size=size)
        frames = fit_frames(decoded, spec) if appearance else _no_frames(spec)
        return frames, None, None if pose is None else pose(decoded)
    sampled = appearance or pose is not None
    wanted = np.unique(np.concatenate([indices, *pairs] if sampled else pairs))
    decoded = reader.read(wanted, size=size)
    frames = fit_frames(decoded, spec)
    motion = flow(frames[np.searchsorted(wanted, pairs[0])], frames[np.searchsorted(wanted, pairs[1])])
    at = np.searchsorted(wanted, indices) if sampled else None
    vectors = None if pose is None else pose(decoded[at])
    return (frames[at] if appearance else _no_frames(spec)), motion, vectors


def _no_frames(spec: BackboneSpec) -> np.ndarray:
    return np.zeros((0, spec.input_size, spec.input_size, 3), dtype=np.uint8)


_POOLERS: dict[tuple[int, str], FlowPooler] = {}


def flow_pooler(config: MotionConfig) -> FlowPooler:
    """This process's ``FlowPooler`` for ``config``, built on first use (one per decode worker or
    Ray worker process: OpenCV's flow objects are never shared across a fork)."""
    key = (os.getpid(), config.model_dump_json())
    if key not in _POOLERS:
        _POOLERS[key] = FlowPooler(config)
    return _POOLERS[key]


_ESTIMATORS: dict[tuple[int, str], PoseEstimator] = {}


def pose_estimator(config: PoseConfig) -> PoseEstimator:
    """This process's ``PoseEstimator`` for ``config``, built on first use (one MediaPipe graph per
    decode worker or Ray worker process, built after the fork: its threads never cross one)."""
    key = (os.getpid(), config.model_dump_json())
    if key not in _ESTIMATORS:
        _ESTIMATORS[key] = PoseEstimator(config)
    return _ESTIMATORS[key]


def _describe_error(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return reason if hasattr(exc, "reason") else f"{type(exc).__name__}: {reason}"


# -- the model side ------------------------------------------------------------------------


class BatchForward(FrameEncoder):
    """Both engines' forward: the one ``FrameEncoder`` (``uint8 (N, S, S, 3)`` fitted frames ->
    ``(N, D)`` float32 numpy), set from the run's ``extract.precision``, ``channels_last``,
    ``runtime`` (torch or onnxruntime) and ``batch_size`` (every forward exactly that many frames:
    stored features do not depend on which videos shared a batch)."""

    def __init__(self, model: Backbone, config: ExtractConfig, device: torch.device) -> None:
        super().__init__(
            model,
            precision=config.precision,
            channels_last=config.channels_last,
            device=device,
            batch=config.batch_size,
            runtime=config.runtime,
        )


class _Accumulator:
    """One video's features as they arrive; memory-mapped to a temporary file when large."""

    def __init__(self, directory: Path, total: int, dim: int, fps: float) -> None:
        self.total, self.fps, self.filled, self.tmp = total, fps, 0, None
        self.indices = np.zeros(total, dtype=np.int64)
        if total * dim * 4 > _IN_MEMORY_LIMIT:
            self.tmp = directory / f".tmp-{os.getpid()}-{id(self)}.npy"
            self.features = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        else:
            self.features = np.empty((total, dim), dtype=np.float32)

    def put(self, positions: slice | np.ndarray, indices: np.ndarray, values: np.ndarray) -> bool:
        """Store features of the sampled frames at ``positions``; True when the video is complete."""
        self.features[positions] = values
        self.indices[positions] = indices
        self.filled += len(values)
        return self.filled >= self.total

    def discard(self) -> None:
        self.features = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class RunProgress:
    """The run's progress over videos, fed by the sinks of its streams (one each): a video counts,
    on the bar and for ``on_video_done``, once every stream it needed has its entry or its failure.

    ``needs[job]``: how many streams video ``job`` still needs. ``on_video_done`` gets, once per
    video, the manifest row of the first stream (appearance, motion, pose) the video needed.
    """

    def __init__(self, needs: list[int], *, on_video_done: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.pending, self.on_video_done, self.bar = list(needs), on_video_done, None
        self.sinks: list[VideoSink] = []
        self._rows: dict[int, tuple[int, dict[str, Any]]] = {}

    def register(self, sink: VideoSink) -> int:
        """Add a stream's sink; its rank (the order streams' rows are preferred in)."""
        self.sinks.append(sink)
        return len(self.sinks) - 1

    def video_done(self, job: int, row: dict[str, Any], rank: int) -> None:
        """Stream ``rank`` is done with video ``job`` (its ``row`` is written or failed)."""
        if job not in self._rows or rank < self._rows[job][0]:
            self._rows[job] = (rank, row)
        self.pending[job] -= 1
        if self.pending[job] > 0:
            return
        first = self._rows.pop(job)[1]
        if self.bar is not None:
            results = [sink.plan.result for sink in self.sinks]
            frames = max(result.frames for result in results)  # every stream has the same frames
            failed = len({row["path"] for result in results for row in result.failed})
            elapsed = max(self.bar.format_dict.get("elapsed", 0.0), 1e-9)
            self.bar.set_postfix_str(f"{frames / elapsed:.0f} frames/s, {failed} failed")
            self.bar.update(1)
        if self.on_video_done is not None:
            self.on_video_done(first)


class VideoSink:
    """Assembles one stream's features of each video as they come back (any order); writes its
    entry and row.

    Both engines feed it features (``put``) or a video's error (``fail``: later features of it are
    ignored). ``items``: the videos that job numbers index (default ``plan.todo``); ``jobs``: the
    ones this stream wants (default all): ``put`` and ``fail`` of any other are ignored, so the
    engines may hand every stream every video. It reports done videos to ``progress`` (a run's
    sinks share one), writes each video's record with its entry and drops its claim.
    """

    def __init__(
        self,
        plan: ExtractionPlan,
        feature_dim: int,
        *,
        items: list | None = None,
        jobs: Iterable[int] | None = None,
        progress: RunProgress | None = None,
    ) -> None:
        self.plan, self.dim = plan, feature_dim
        self.items = plan.todo if items is None else items
        self.progress = progress or RunProgress([1] * len(self.items))
        self.rank = self.progress.register(self)
        self.videos: dict[int, _Accumulator] = {}
        self.closed: set[int] = set()  # finished, failed, or not this stream's
        self._view_written = time.monotonic()
        if jobs is not None:
            self.closed = set(range(len(self.items))) - set(jobs)

    def put(
        self,
        job: int,
        positions: slice | np.ndarray,
        indices: np.ndarray,
        features: np.ndarray,
        *,
        total: int,
        fps: float,
    ) -> None:
        """Features of video ``job``'s sampled frames at ``positions`` (its ``total`` frames in all)."""
        if job in self.closed:
            return
        self.plan.store.claims.heartbeat()  # other writers see this process still works on its claims
        acc = self.videos.get(job)
        if acc is None:
            acc = self.videos[job] = _Accumulator(self.plan.store.features_dir, total, self.dim, fps)
        if acc.put(positions, indices, features):
            self._finish(job)

    def fail(self, job: int, error: str) -> None:
        """Video ``job`` failed: its manifest row says why; whatever came of it is dropped."""
        if job in self.closed:
            return
        self.closed.add(job)
        acc = self.videos.pop(job, None)
        if acc is not None:
            acc.discard()
        row = self.plan.row_of(self.items[job])
        row.update(status="failed", error=error, frames=0, file="")
        self.plan.store.put_record(row)
        self.plan.store.claims.release(row["key"])
        self.plan.result.failed.append(row)
        self._video_done(job, row)

    def close(self) -> None:
        """The end of the stream: a video still incomplete failed (not all its features came back)."""
        for job in list(self.videos):
            acc = self.videos[job]
            self.fail(job, f"incomplete: features of {acc.filled} of {acc.total} sampled frames came back")

    def discard(self) -> None:
        """Drop unfinished videos and their temporary files (a run that stops on an exception)."""
        for acc in self.videos.values():
            acc.discard()
        self.videos.clear()

    def _finish(self, job: int) -> None:
        self.closed.add(job)
        acc = self.videos.pop(job)
        item, store = self.items[job], self.plan.store
        row = self.plan.row_of(item)
        timestamps = acc.indices / acc.fps if acc.fps > 0 else np.zeros(acc.total)
        meta = {
            "path": str(item.path),
            "label": item.label,
            "fps": acc.fps,
            "vidseq": __version__,
            "video": row["video"],
            "subject": row["subject"],
        }
        entry = store.entry_path(item.path, row["subject"], vid=row["video"])
        if self.plan.result.present is not None:  # the pose stream: frames where a person was found
            self.plan.result.present += int(np.count_nonzero(present(acc.features)))
        try:
            write_entry(entry, VideoFeatures(acc.features, acc.indices, timestamps, meta))
        finally:
            acc.discard()
        row.update(status="done", error="", frames=acc.total, file=entry.relative_to(store.directory))
        store.put_record(row)  # the entry is there first: a kill between the two leaves an entry that loads
        store.claims.release(row["key"])
        self.plan.result.extracted += 1
        self.plan.result.frames += acc.total
        self._video_done(job, row)

    def _video_done(self, job: int, row: dict[str, Any]) -> None:
        if time.monotonic() - self._view_written > _VIEW_EVERY_SECONDS:
            self._view_written = time.monotonic()
            self.plan.store.write_manifest_view()  # for people watching; vidseq reads the records
        self.progress.video_done(job, row, self.rank)


def put_stream(sink: VideoSink | None, chunk: dict[str, Any], stream: str) -> None:
    """Hand a ``video_chunks`` chunk's ``stream`` (``motion`` or ``pose``) to its sink: its vectors,
    or why there are none (the video's error, or the stream's own: ``motion_error``)."""
    if sink is None:
        return
    if chunk["error"] or chunk.get(f"{stream}_error"):
        sink.fail(chunk["job"], chunk["error"] or chunk[f"{stream}_error"])
    elif chunk.get(stream) is not None:
        start, count = chunk["start"], len(chunk["indices"])
        sink.put(
            chunk["job"],
            slice(start, start + count),
            chunk["indices"],
            chunk[stream],
            total=chunk["total"],
            fps=chunk["fps"],
        )
