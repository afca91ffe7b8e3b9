"""One video's people: its grid frames decoded once -> tracks, and per track its crops' streams.

Place in the data flow: io + sampling -> **track_video** (``actors.PersonTracker`` on the grid
frames, each tracked person's crop through the one ``FrameEncoder``; with ``flow`` the pooled
flow inside the crop, with ``pose`` MediaPipe inside a wider crop, ``actor_pose``) ->
``TrackedVideo``. ``actor_extraction`` writes it to the per-person stores; ``predict.actors``
labels it. Frames are decoded at most ``MAX_DECODE_SIDE`` on their long side; boxes are kept in
the video's own pixels whatever size was decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from vidseq.backbones import FrameEncoder
from vidseq.config import ActorsConfig
from vidseq.features.actor_pose import pose_crop
from vidseq.features.actor_streams import motion_crops
from vidseq.features.actors import PersonTracker, Track, TrackBuilder, square_crop
from vidseq.features.motion import FlowPooler, pair_indices
from vidseq.features.pose import PoseEstimator
from vidseq.io import open_video
from vidseq.sampling import sample_indices

MAX_DECODE_SIDE = 1280  # frames are decoded at most this large (long side) for detection and crops


@dataclass(frozen=True)
class VideoGeometry:
    """A tracked video's frame size and rate (what boxes and trajectories are measured in)."""

    width: int
    height: int
    fps: float


class TrackedVideo(NamedTuple):
    """What ``track_video`` found in one video."""

    tracks: list[Track]  # kept tracks (at least ``min_frames`` frames), by id
    crops: dict[int, list[np.ndarray]]  # track id -> its crops' features, (1, D) arrays in frame order
    geometry: VideoGeometry
    grid: np.ndarray  # the frame indices detected and tracked
    motion: dict[int, list[np.ndarray]] | None = None  # track id -> pooled flow inside its crops (with ``flow``)
    pose: dict[int, list[np.ndarray]] | None = None  # track id -> (1, pose_dim) per tracked frame (with ``pose``)


def track_video(
    path,
    tracker: PersonTracker,
    encoder: FrameEncoder,
    actors: ActorsConfig,
    backend: str,
    *,
    flow: FlowPooler | None = None,
    pose: PoseEstimator | None = None,
) -> TrackedVideo:
    """Decode the grid frames once; detect, track and crop them; encode the crops in batches.

    ``flow`` (the motion stream wanted): each grid frame's partner (``motion.step`` frames later)
    is decoded in the same read, and each person's crop box is cut from both frames: the pooled
    flow inside the crop (how the body moves, without the person's displacement, which the
    trajectory holds). ``pose``: each person's pose in a crop of their own (``actor_pose``) of
    the same frame.
    """
    size = encoder.spec.input_size
    builder = TrackBuilder()
    pending: list[tuple[int, int, np.ndarray]] = []  # (track id, frame index, crop)
    features: dict[int, list[np.ndarray]] = {}
    motion: dict[int, list[np.ndarray]] | None = {} if flow is not None else None
    poses: dict[int, list[np.ndarray]] | None = {} if pose is not None else None

    def encode(all_of_them: bool) -> None:
        batch = encoder.batch or 32
        while pending and (all_of_them or len(pending) >= batch):
            part, pending[:] = pending[:batch], pending[batch:]
            values = encoder(np.stack([crop for _, _, crop in part]))
            for (track_id, _, _), value in zip(part, values):
                features.setdefault(track_id, []).append(value[None])

    with open_video(path, backend=backend) as reader:
        info = reader.info
        if info.fps:
            grid = sample_indices(info.num_frames, mode="stride", fps=info.fps, target_fps=actors.fps)
        else:  # no frame rate known: every frame is the grid
            grid = np.arange(info.num_frames, dtype=np.int64)
        if flow is not None:
            partners = pair_indices(grid, info.num_frames, flow.config.step)[1]  # MotionError: too short
        scale = min(1.0, MAX_DECODE_SIDE / max(info.width, info.height))
        decode = None if scale >= 1.0 else (round(info.height * scale), round(info.width * scale))
        cut = scale if decode is not None else 1.0  # boxes in video pixels -> the decoded frame's
        tracker.begin(min(actors.fps, info.fps or actors.fps))
        for start in range(0, len(grid), actors.batch):
            indices = grid[start : start + actors.batch]
            if flow is None:
                frames, later = reader.read(indices, size=decode), None
            else:
                pairs = partners[start : start + actors.batch]
                wanted = np.unique(np.concatenate([indices, pairs]))
                decoded = reader.read(wanted, size=decode)
                frames = decoded[np.searchsorted(wanted, indices)]
                later = decoded[np.searchsorted(wanted, pairs)]
            for n, (index, frame, rows) in enumerate(zip(indices, frames, tracker.update(frames))):
                if decode is not None:  # boxes in the video's own pixels, whatever size was decoded
                    rows = rows.copy()
                    rows[:, :4] /= scale
                builder.add(int(index), rows)
                for box_row in rows:
                    box = box_row[:4] * scale if decode is not None else box_row[:4]
                    crop = square_crop(frame, box, margin=actors.margin, size=size)
                    pending.append((int(box_row[4]), int(index), crop))
                    if motion is not None:  # from the box rounded as stored (actor_streams adds motion the same way)
                        first, moved = motion_crops(frame, later[n], box_row[:4], cut, margin=actors.margin, size=size)
                        motion.setdefault(int(box_row[4]), []).append(flow(first[None], moved[None]))
                    if poses is not None:  # from the box in video pixels, as a stored track gives it back
                        body = pose_crop(frame, box_row[:4], cut)
                        poses.setdefault(int(box_row[4]), []).append(pose(body[None]))
            encode(False)
        encode(True)
    geometry = VideoGeometry(info.width, info.height, info.fps)
    return TrackedVideo(builder.tracks(min_frames=actors.min_frames), features, geometry, grid, motion, poses)
