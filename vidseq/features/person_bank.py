"""A bank of real people: videos -> people detected and tracked -> each person's box crops, frame after
frame, for ``vidseq synth --kind actors``.

Place in the data flow: io (frames) -> ``actors.PersonTracker`` + ``TrackBuilder`` on a grid of
frames (``actors.fps``) -> **collect_people** -> ``vidseq.synth.actors.PersonCutout`` s, which the
synth writer pastes over real backgrounds. It sits here, above ``vidseq.synth``, because it needs
the detector; the synth layer only receives the cut-outs.

The detector runs on the grid; the crops are cut from *every* decoded frame between the first and
last grid frame of a person's longest good run, with the box interpolated in between, so a
cut-out plays its person's real motion at the video's frame rate. A grid box is good when it is
large enough (``min_height`` pixels), clear of the frame's edges (not truncated) and not covered
much by another tracked person's box. Each crop is the box grown by ``margin`` of its height on
every side, widened to one aspect ratio per person, resized to ``height`` pixels high.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from vidseq.config import ActorsConfig
from vidseq.errors import ConfigError, VidseqError
from vidseq.features.actors import PersonTracker, Track, TrackBuilder
from vidseq.io import open_video
from vidseq.synth.actors import PersonCutout

MAX_SIDE = 640  # frames are decoded at most this large (long side)


def find_videos(folder: str | Path) -> list[Path]:
    """The video files under ``folder`` (recursively, hidden ones left out), sorted."""
    from vidseq.datasets import VIDEO_EXTENSIONS

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"synth.people: {root} is not a folder; point it at a folder of videos with people in them")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in VIDEO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def collect_people(
    videos: Iterable[str | Path],
    actors: ActorsConfig,
    *,
    min_frames: int = 4,
    max_people: int = 64,
    seconds: float = 10.0,
    height: int = 128,
    margin: float = 0.1,
    min_height: int = 48,
    edge: float = 2.0,
    max_cover: float = 0.3,
    root: str | Path | None = None,
    tracker: PersonTracker | None = None,
    failed: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PersonCutout]:
    """The people of ``videos`` (the first ``seconds`` of each), at most ``max_people`` in all.

    Each good track (at least ``min_frames`` good grid frames in a row) becomes a ``PersonCutout``
    ``(n, height, w, 3)`` whose ``source`` is the video's path relative to ``root`` (else its name).
    ``tracker``: a ``PersonTracker`` to reuse (else one from ``actors``). A video that cannot be
    read is appended to ``failed`` (``"path: reason"``) and skipped, or raised without ``failed``.
    """
    videos = [Path(v) for v in videos]
    tracker = tracker if tracker is not None else PersonTracker(actors)
    people: list[PersonCutout] = []
    for done, path in enumerate(videos, start=1):
        if len(people) >= max_people:
            break
        source = path.relative_to(root).as_posix() if root is not None else path.name
        try:
            frames, fps = _decode(path, seconds)
        except VidseqError as exc:
            if failed is None:
                raise
            failed.append(f"{path}: {getattr(exc, 'reason', exc)}")
            continue
        tracks, step = _track(tracker, frames, fps, actors)
        found = (_good_run(t, tracks, step, frames.shape[1:3], min_height, edge, max_cover) for t in tracks)
        runs = [r for r in found if r is not None]
        runs = [r for r in runs if len(r[1]) >= min_frames]
        for track, grid in sorted(runs, key=lambda r: (-len(r[1]), r[0].track_id)):
            if len(people) >= max_people:
                break
            crops, inner = _cutout(frames, track, grid, height=height, margin=margin)
            people.append(PersonCutout(source, f"{source}#t{track.track_id}", crops, inner, fps))
        if progress is not None:
            progress(done, len(videos))
    return people


def _decode(path: Path, seconds: float) -> tuple[np.ndarray, float]:
    """The first ``seconds`` of the video, RGB, at most ``MAX_SIDE`` on the long side; its fps."""
    with open_video(path) as reader:
        info = reader.info
        fps = float(info.fps) if info.fps and info.fps > 0 else 25.0
        count = max(1, min(info.num_frames, math.ceil(seconds * fps)))
        scale = min(1.0, MAX_SIDE / max(info.width, info.height))
        size = (max(2, round(info.height * scale)), max(2, round(info.width * scale)))
        return np.asarray(reader.read(np.arange(count), size=size)), fps


def _track(tracker: PersonTracker, frames: np.ndarray, fps: float, actors: ActorsConfig) -> tuple[list[Track], int]:
    """The tracks of ``frames`` on a grid of ``actors.fps``, and the grid's step (in frames)."""
    step = max(1, round(fps / actors.fps))
    grid = np.arange(0, len(frames), step)
    tracker.begin(fps / step)
    builder = TrackBuilder()
    for start in range(0, len(grid), actors.batch):
        chunk = grid[start : start + actors.batch]
        for index, rows in zip(chunk, tracker.update(frames[chunk])):
            builder.add(int(index), rows)
    return builder.tracks(min_frames=1), step


def _good_run(
    track: Track, tracks: list[Track], step: int, shape: tuple[int, int], min_height: int, edge: float, max_cover: float
) -> tuple[Track, np.ndarray] | None:
    """The longest run of consecutive grid frames where ``track``'s box is good; None if none is."""
    height, width = shape
    boxes = track.boxes.astype(np.float64)
    good = (
        (boxes[:, 3] - boxes[:, 1] >= min_height)
        & (boxes[:, 0] > edge) & (boxes[:, 1] > edge)
        & (boxes[:, 2] < width - edge) & (boxes[:, 3] < height - edge)
    )  # fmt: skip
    for other in tracks:
        if other is track:
            continue
        at = {int(f): b for f, b in zip(other.frames, other.boxes.astype(np.float64))}
        for i, (frame, box) in enumerate(zip(track.frames, boxes)):
            if int(frame) in at and _cover(box, at[int(frame)]) > max_cover:
                good[i] = False
    best: list[int] = []
    run: list[int] = []
    for i in range(len(boxes)):
        if good[i] and run and track.frames[i] - track.frames[run[-1]] == step:
            run.append(i)
        else:
            run = [i] if good[i] else []
        if len(run) > len(best):
            best = list(run)
    return (track, np.array(best, dtype=np.int64)) if best else None


def _cover(box: np.ndarray, other: np.ndarray) -> float:
    """The fraction of ``box`` that ``other`` covers."""
    w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return w * h / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)


def _cutout(
    frames: np.ndarray, track: Track, run: np.ndarray, *, height: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every frame from the run's first to its last grid frame (boxes interpolated):
    ``uint8 (n, height, w, 3)`` and the person's box in each crop as fractions ``float32 (n, 4)``."""
    import cv2

    grid = track.frames[run].astype(np.float64)
    boxes = track.boxes[run].astype(np.float64)
    indices = np.arange(int(grid[0]), int(grid[-1]) + 1)
    box = np.stack([np.interp(indices, grid, boxes[:, k]) for k in range(4)], axis=1)
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    crop_h = h * (1 + 2 * margin)
    aspect = float(np.quantile((w + 2 * margin * h) / crop_h, 0.9))  # wide enough for most frames
    out_w = max(8, round(height * aspect))
    crop_w = crop_h * out_w / height
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    crops = np.empty((len(indices), height, out_w, 3), dtype=np.uint8)
    for i, index in enumerate(indices):
        scale = height / crop_h[i]  # output pixel = scale * (source pixel - crop corner)
        x0, y0 = cx[i] - crop_w[i] / 2, cy[i] - crop_h[i] / 2
        matrix = np.array([[scale, 0, -scale * x0 + 0.5 * scale - 0.5], [0, scale, -scale * y0 + 0.5 * scale - 0.5]])
        frame = frames[index] if scale > 0.7 else cv2.GaussianBlur(frames[index], (0, 0), 0.4 / scale)  # no aliasing
        crops[i] = cv2.warpAffine(
            frame, matrix, (out_w, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    inner = np.stack(
        [
            np.clip(0.5 - w / crop_w / 2, 0, 1),
            np.full(len(indices), margin / (1 + 2 * margin)),
            np.clip(0.5 + w / crop_w / 2, 0, 1),
            np.full(len(indices), (1 + margin) / (1 + 2 * margin)),
        ],
        axis=1,
    ).astype(np.float32)
    return crops, inner
