"""Streams added to videos tracked before: pose and crop motion from the tracks a store holds.

Place in the data flow: a per-person store's trajectory stream (each track's frames and boxes,
``stored_tracks``) + the video -> **streams_of_stored_tracks** -> per track the ``pose`` and/or
``motion`` vectors a fresh extraction would have written. ``actor_extraction`` calls it for
videos done without a stream asked for now: only the tracked frames (and, for motion, their
partners ``motion.step`` frames later) are decoded again; no detector, tracker or backbone runs.

Both streams cut their crops from boxes rounded to 0.1 pixel (as the trajectory stream stores
them): ``actor_pose.pose_crop`` for pose, ``motion_crops`` for motion (the backbone's crop,
``actors.margin`` and its input size, cut from the grid frame and from its partner), and
``track_video`` cuts them the same way, so the vectors here equal a fresh run's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidseq.features.actor_pose import pose_crop
from vidseq.features.actors import Track, square_crop
from vidseq.features.motion import FlowPooler, pair_indices
from vidseq.features.pose import PoseEstimator
from vidseq.features.store import FeatureStore, VideoFeatures
from vidseq.io import open_video


def motion_crops(
    frame: np.ndarray, later: np.ndarray, box: np.ndarray, scale: float = 1.0, *, margin: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The crop whose flow is pooled: ``box`` (``x1, y1, x2, y2`` in the video's own pixels,
    rounded to 0.1 as stored) cut from ``frame`` and from its partner ``later``, both decoded at
    ``scale`` of the video's size; ``uint8 (size, size, 3)`` each."""
    box = np.round(np.asarray(box, dtype=np.float32), 1)
    if scale != 1.0:
        box = box * scale
    return square_crop(frame, box, margin=margin, size=size), square_crop(later, box, margin=margin, size=size)


def stored_tracks(trajectory: FeatureStore, vid: str) -> list[tuple[Track, VideoFeatures, dict[str, str]]]:
    """The tracks of video ``vid`` as the trajectory store holds them (frames and boxes), each with
    its entry and record, by id."""
    found = []
    for path in sorted(trajectory.records_dir.glob(f"{vid}~*.json")):
        record = trajectory.get_record(path.stem) or {}
        if record.get("status") != "done" or not record.get("file"):
            continue
        item = FeatureStore.read(trajectory.directory / record["file"])
        boxes = np.asarray(item.meta["boxes"], dtype=np.float32).reshape(-1, 4)
        track = Track(int(item.meta["track"]["track"]), item.frame_indices, boxes, np.ones(len(boxes), np.float32))
        found.append((track, item, record))
    return sorted(found, key=lambda each: each[0].track_id)


def streams_of_stored_tracks(
    path: str | Path,
    tracks: list[Track],
    *,
    backend: str,
    max_side: int,
    batch: int = 8,
    pose: PoseEstimator | None = None,
    flow: FlowPooler | None = None,
    margin: float = 0.15,
    size: int = 224,
) -> dict[str, dict[int, np.ndarray]]:
    """Stream -> track id -> ``(len(track), dim)``: ``pose`` (with an estimator) and ``motion``
    (with ``flow``; ``margin`` and ``size``: the backbone's crop) in each tracked frame, decoded as
    extraction decodes them (long side at most ``max_side``), ``batch`` tracked frames (and their
    partners) at a time. Raises ``MotionError`` when the video is too short for a frame pair."""
    streams = [name for name, wanted in (("pose", pose), ("motion", flow)) if wanted is not None]
    wanted = np.unique(np.concatenate([t.frames for t in tracks])) if tracks else np.zeros(0, np.int64)
    where = {t.track_id: {int(f): n for n, f in enumerate(t.frames)} for t in tracks}
    parts: dict[str, dict[int, list]] = {name: {t.track_id: [] for t in tracks} for name in streams}
    with open_video(path, backend=backend) as reader:
        info = reader.info
        scale = min(1.0, max_side / max(info.width, info.height))
        decode = None if scale >= 1.0 else (round(info.height * scale), round(info.width * scale))
        cut = scale if decode is not None else 1.0
        partners = pair_indices(wanted, info.num_frames, flow.config.step)[1] if flow is not None else None
        for start in range(0, len(wanted), batch):
            indices = wanted[start : start + batch]
            if partners is None:
                frames, later = reader.read(indices, size=decode), None
            else:  # as track_video reads them: each grid frame and its partner in one read
                pairs = partners[start : start + batch]
                both = np.unique(np.concatenate([indices, pairs]))
                decoded = reader.read(both, size=decode)
                frames, later = decoded[np.searchsorted(both, indices)], decoded[np.searchsorted(both, pairs)]
            for k, (index, frame) in enumerate(zip(indices, frames)):
                for track in tracks:
                    n = where[track.track_id].get(int(index))
                    if n is None:
                        continue
                    if pose is not None:
                        crop = pose_crop(frame, track.boxes[n], cut)
                        parts["pose"][track.track_id].append((n, pose(crop[None])))
                    if flow is not None:
                        first, second = motion_crops(frame, later[k], track.boxes[n], cut, margin=margin, size=size)
                        parts["motion"][track.track_id].append((n, flow(first[None], second[None])))
    out: dict[str, dict[int, np.ndarray]] = {name: {} for name in streams}
    for name in streams:
        for track in tracks:
            found = sorted(parts[name][track.track_id], key=lambda p: p[0])
            if len(found) != len(track):
                lost = len(track) - len(found)
                raise ValueError(f"{lost} tracked frames of t{track.track_id} were not decoded again")
            out[name][track.track_id] = np.concatenate([vector for _, vector in found])
    return out
