"""Who is in the picture: people detected and tracked on a regular grid of frames, each track cut
out as square crops, and each track's trajectory as a stream of its own.

Place in the data flow: decoded frames (``vidseq.io``, RGB) -> **PersonTracker** (an Ultralytics
detector + Ultralytics' ByteTrack or BoT-SORT, run frame by frame in time order) -> per frame
``(n, 6)`` rows ``x1, y1, x2, y2, track id, score`` -> **square_crops** (crops fitted to the
backbone, encoded by the one ``FrameEncoder``) and **trajectory** (centre, size and their
velocities) -> ``actor_extraction`` writes one store entry per track (subject ``t<id>``).

A crop that follows its person removes that person's own displacement: walking left and
walking right look alike inside the crop, so the trajectory stream keeps what the crop loses.
Its 8 numbers per frame are the box centre ``cx/W, cy/H``, its size ``w/W, h/H`` (the frame's
width and height: independent of the video's resolution) and the four velocities per second.

Ultralytics is imported only when a tracker is built. Offline, ``actors.weights`` must be a
local checkpoint (Ultralytics downloads names like ``yolo11n.pt`` only when online), and the
``lap`` package must be installed (vidseq depends on it: Ultralytics would pip-install it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidseq.config import ActorsConfig
from vidseq.errors import ConfigError
from vidseq.io import resize_frame

TRAJECTORY_DIMS = 8
TRAJECTORY_NAMES = ("cx", "cy", "w", "h", "vx", "vy", "vw", "vh")
_GREY = 114  # padding of crops that reach past the frame (Ultralytics' letterbox grey)


@dataclass
class Track:
    """One person through a video: the grid frames they were tracked in, and their boxes there."""

    track_id: int
    frames: np.ndarray  # (n,) int64 frame indices of the source video, increasing
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 in pixels of the decoded frames
    scores: np.ndarray  # (n,) float32 detection confidence

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def subject(self) -> str:
        """The store's subject of this track's entries."""
        return subject_of(self.track_id)


def subject_of(track_id: int) -> str:
    return f"t{int(track_id)}"


def load_detector(weights: str, classes: list[int]):
    """An Ultralytics ``YOLO`` detection model from ``weights``; ConfigError with what to do when
    it cannot be loaded (a missing file, offline without the file, not a detector, wrong classes)."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ConfigError(f"actors need the ultralytics package: {exc}") from None
    path = Path(weights).expanduser()
    looks_like_path = path.parent != Path(".") or path.exists()
    if looks_like_path and not path.is_file():
        raise ConfigError(f"actors.weights: {weights} does not exist; give an Ultralytics detection checkpoint (.pt)")
    try:
        model = YOLO(str(path) if path.is_file() else weights)
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many kinds; the user needs one line
        raise ConfigError(
            f"actors.weights: cannot load {weights!r} ({type(exc).__name__}: {exc}); offline, pass a local "
            "Ultralytics detection checkpoint: -o actors.weights=path/to/detector.pt"
        ) from None
    if getattr(model, "task", "detect") not in ("detect", "segment", "pose"):
        raise ConfigError(f"actors.weights: {weights} is a {model.task} model; actors need a detector (boxes)")
    names = dict(getattr(model, "names", {}) or {})
    unknown = [c for c in classes if names and c not in names]
    if unknown:
        raise ConfigError(f"actors.classes: {unknown} are not classes of {weights} (it has {names})")
    return model


def tracker_settings(config: ActorsConfig, grid_fps: float):
    """Ultralytics' own tracker settings (its packaged yaml), with the lost-track buffer counted
    in frames of the tracking grid (``lost_seconds`` at ``grid_fps``)."""
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    settings = YAML.load(check_yaml(f"{config.tracker}.yaml"))
    settings["track_buffer"] = max(1, math.ceil(config.lost_seconds * grid_fps))
    settings["track_low_thresh"] = min(settings.get("track_low_thresh", 0.1), config.conf)
    if config.tracker == "botsort":
        settings["with_reid"] = False  # a ReID model would be a download
    return IterableSimpleNamespace(**settings)


class PersonTracker:
    """Detect people and track them through one video at a time, frame after frame.

    ``begin(grid_fps)`` starts a video (new ids from 1); ``update(frames)`` takes RGB frames of
    the grid in time order (a batch goes through the detector at once, then the tracker frame by
    frame) and returns, per frame, ``float32 (n, 6)`` rows ``x1, y1, x2, y2, id, score`` of the
    people tracked there (confirmed tracks only).
    """

    def __init__(self, config: ActorsConfig, *, device: str = "cpu", model=None) -> None:
        self.config, self.device = config, device
        self.model = model if model is not None else load_detector(config.weights, config.classes)
        self.tracker = None

    def begin(self, grid_fps: float) -> None:
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        settings = tracker_settings(self.config, grid_fps)
        self.tracker = (BOTSORT if self.config.tracker == "botsort" else BYTETracker)(args=settings)

    def update(self, frames: np.ndarray) -> list[np.ndarray]:
        if self.tracker is None:
            raise RuntimeError("PersonTracker.begin() must start a video before update()")
        if not len(frames):
            return []
        bgr = [np.ascontiguousarray(frame[..., ::-1]) for frame in frames]
        threads = torch.get_num_threads()
        results = self.model.predict(
            bgr,
            imgsz=self.config.imgsz,
            conf=self.config.conf,
            classes=list(self.config.classes),
            device=self.device,
            verbose=False,
        )
        if torch.get_num_threads() != threads:  # Ultralytics' device selection resets torch's threads:
            torch.set_num_threads(threads)  # the caller's thread budget (vidseq.threads) stands
        out = []
        for result, image in zip(results, bgr):
            tracked = self.tracker.update(result.boxes.cpu().numpy(), image)
            rows = np.zeros((len(tracked), 6), dtype=np.float32)
            if len(tracked):
                rows[:, :4] = tracked[:, :4]
                rows[:, 4] = tracked[:, 4]
                rows[:, 5] = tracked[:, 5]
            out.append(rows)
        return out


class TrackBuilder:
    """Collects a video's per-frame tracker rows into ``Track`` s (one per id)."""

    def __init__(self) -> None:
        self._rows: dict[int, list[tuple[int, np.ndarray, float]]] = {}

    def add(self, frame_index: int, rows: np.ndarray) -> None:
        for row in rows:
            self._rows.setdefault(int(row[4]), []).append((int(frame_index), row[:4].copy(), float(row[5])))

    def tracks(self, *, min_frames: int = 1) -> list[Track]:
        """The tracks with at least ``min_frames`` frames, by id."""
        out = []
        for track_id in sorted(self._rows):
            rows = sorted(self._rows[track_id], key=lambda r: r[0])
            if len(rows) < min_frames:
                continue
            out.append(
                Track(
                    track_id,
                    np.array([r[0] for r in rows], dtype=np.int64),
                    np.stack([r[1] for r in rows]).astype(np.float32),
                    np.array([r[2] for r in rows], dtype=np.float32),
                )
            )
        return out


def square_box(box: np.ndarray, margin: float) -> np.ndarray:
    """The square ``x1, y1, x2, y2`` around ``box``'s centre, its side the box's long side plus
    ``margin`` of it (so the whole person and a little context are in)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def square_crop(frame: np.ndarray, box: np.ndarray, *, margin: float, size: int) -> np.ndarray:
    """``uint8 (size, size, 3)``: the square around ``box`` (``square_box``) cut from ``frame``
    (grey where it reaches past the frame), resized to ``size``."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in square_box(box, margin))
    side = max(1, x2 - x1)
    canvas = np.full((side, side, 3), _GREY, dtype=np.uint8)
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(width, x1 + side), min(height, y1 + side)
    if fx2 > fx1 and fy2 > fy1:
        canvas[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1] = frame[fy1:fy2, fx1:fx2]
    return resize_frame(canvas, (size, size))


def trajectory(boxes: np.ndarray, timestamps: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """``float32 (n, 8)``: per tracked frame the box centre and size as fractions of the frame,
    then their velocities in fractions per second (central differences; one frame: zeros)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height], dtype=np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale
    size = (boxes[:, 2:] - boxes[:, :2]) / scale
    place = np.concatenate([centre, size], axis=1)
    if len(place) < 2:
        velocity = np.zeros_like(place)
    else:
        times = np.asarray(timestamps, dtype=np.float64)
        if np.any(np.diff(times) <= 0):  # no usable clock: per grid step
            times = np.arange(len(place), dtype=np.float64)
        velocity = np.gradient(place, times, axis=0)
    return np.concatenate([place, velocity], axis=1).astype(np.float32)


def track_summary(track: Track, *, width: int, height: int, fps: float) -> dict:
    """Plain numbers about a track (stored with its entry): first/last time, frames, mean box
    area and distance of its mean centre from the frame centre (both as fractions of the frame):
    what picks a clip's main actor."""
    boxes = track.boxes.astype(np.float64)
    area = float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / (width * height))
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2).mean(axis=0) / np.array([width, height])
    return {
        "track": int(track.track_id),
        "frames": len(track),
        "first": float(track.frames[0] / fps) if fps > 0 else 0.0,
        "last": float(track.frames[-1] / fps) if fps > 0 else 0.0,
        "area": area,
        "offcentre": float(np.hypot(*(centre - 0.5))),
        "width": int(width),
        "height": int(height),
    }


MAIN_ACTOR_RULES = ("longest", "largest", "central")


def main_actor(summaries: list[dict], rule: str = "longest") -> int:
    """The index in ``summaries`` (``track_summary`` dicts of one clip) of its main actor:
    ``longest`` (most tracked frames, then largest), ``largest`` (mean box area) or ``central``
    (mean centre nearest the frame's centre). Ties go to the lower track id."""
    if rule not in MAIN_ACTOR_RULES:
        raise ConfigError(f"main actor rule must be one of {', '.join(MAIN_ACTOR_RULES)}, got {rule!r}")
    if not summaries:
        raise ValueError("no tracks to pick a main actor from")
    keys = {
        "longest": lambda s: (-s["frames"], -s["area"], s["track"]),
        "largest": lambda s: (-s["area"], -s["frames"], s["track"]),
        "central": lambda s: (s["offcentre"], -s["frames"], s["track"]),
    }
    return min(range(len(summaries)), key=lambda i: keys[rule](summaries[i]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def assign_labels(tracks: list[Track], people: list, *, fps: float, min_iou: float = 0.3) -> tuple[dict, list]:
    """Match per-person labels (``vidseq.datasets.people.PersonLabel``) to a video's tracks.

    A label with a track id goes to that track; one with a box at a time goes to the track whose
    box at its tracked frame nearest that time (within one grid step either side of it) overlaps
    the box most, with IoU at least ``min_iou``. Returns ``({track id: label}, [labels that
    matched no track])``; a track named twice keeps the first label.
    """
    assigned: dict[int, object] = {}
    unmatched = []
    by_id = {t.track_id: t for t in tracks}
    for person in people:
        if person.track is not None:
            target = by_id.get(person.track)
        else:
            target, best = None, min_iou
            frame = person.time * fps if fps > 0 else person.time
            for track in tracks:
                nearest = int(np.argmin(np.abs(track.frames - frame)))
                steps = np.diff(track.frames)
                step = float(np.median(steps)) if len(steps) else 1.0
                if abs(track.frames[nearest] - frame) > step + 1:
                    continue  # the track is not there at that time
                iou = box_iou(track.boxes[nearest], np.asarray(person.box, dtype=np.float32))
                if iou >= best:
                    target, best = track, iou
        if target is None:
            unmatched.append(person)
        else:
            assigned.setdefault(target.track_id, person)
    return assigned, unmatched
