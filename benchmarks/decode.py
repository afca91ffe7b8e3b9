"""Benchmark of vidseq.io's backends: 16 uniformly spread frames vs decoding every frame.

Run by hand (not in CI), e.g.::

    python benchmarks/decode.py                      # shared clips + 1- and 10-minute synthetic
    python benchmarks/decode.py --minutes 1 3 --repeats 1 --backends pyav opencv

For each video and backend it prints the best-of-N wall time of ``read_frames`` for the sparse
sample (a fresh reader each time: includes opening and the packet scan) and of a full
``iter_frames`` decode, the frames/s of each, the ratio sparse/full, and the largest mean
absolute difference between the sparse frames and the same positions of that backend's full
sequential decode ("exact" when 0). Synthetic videos (H.264 in MP4, GOP 250, B-frames, written
with PyAV into a temporary folder) show how sparse cost grows with length against full cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidseq import io as vio
from vidseq.errors import BackendUnavailableError, VideoDecodeError

DEFAULT_CLIPS = (
    "mgt_pianist.avi",
    "mgt_dancer.avi",
    "opencv_vtest_pedestrians_walking.avi",
    "k400_arm_wrestling__mmaction2_demo.mp4",
    "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi",
)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "action-clips"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clips",
        nargs="*",
        type=Path,
        default=None,
        help=f"videos to time (default: {', '.join(DEFAULT_CLIPS)} from {SHARED})",
    )
    parser.add_argument(
        "--minutes",
        nargs="*",
        type=float,
        default=[1.0, 10.0],
        help="lengths of synthetic videos to generate; none: skip (default: 1 10)",
    )
    parser.add_argument(
        "--synthetic-size",
        type=int,
        nargs=2,
        default=[360, 640],
        metavar=("H", "W"),
        help="synthetic frame size (default: 360 640)",
    )
    parser.add_argument("--backends", nargs="*", default=None, help="backends to time (default: every installed one)")
    parser.add_argument("--frames", type=int, default=16, help="frames in the sparse sample")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--full-repeats", type=int, default=1, help="best of this many full decodes (default 1: they are long)"
    )
    return parser.parse_args(argv)


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def full_decode(path: Path, backend: str, keep: np.ndarray) -> tuple[int, dict[int, np.ndarray]]:
    """Decode every frame; return the count and copies of the frames at ``keep``."""
    kept, total = {}, 0
    for start, chunk in vio.iter_frames(path, backend=backend):
        for i in keep[(keep >= start) & (keep < start + len(chunk))]:
            kept[int(i)] = chunk[i - start].copy()
        total = start + len(chunk)
    return total, kept


def time_backend(path: Path, backend: str, args: argparse.Namespace) -> dict:
    num_frames = vio.probe(path, backend=backend).num_frames
    indices = np.linspace(0, num_frames - 1, args.frames).round().astype(np.int64)
    sparse_s, frames = best_time(lambda: vio.read_frames(path, indices, backend=backend), args.repeats)
    full_s, (total, kept) = best_time(lambda: full_decode(path, backend, indices), args.full_repeats)
    diffs = [np.abs(frames[k].astype(np.int16) - kept[int(i)]) for k, i in enumerate(indices)]
    mad = max(float(d.mean()) for d in diffs)
    return {"frames": total, "sparse_s": sparse_s, "full_s": full_s, "mad": mad}


def long_videos(count: int, minutes: float) -> Path:
    """``count`` synthetic 640x360 videos of about ``minutes`` each in a new temporary folder
    (the long-video input of benchmarks/extract.py and benchmarks/ray_extract.py)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="vidseq-long-"))
    for i in range(count):
        write_synthetic(folder, minutes + 0.05 * i, 360, 640)
    return folder


def write_synthetic(folder: Path, minutes: float, height: int, width: int, fps: int = 30) -> Path:
    """An H.264 MP4 (x264 veryfast, GOP 250, B-frames): a disc moving over a textured
    background whose noisy strip changes every frame (~1 Mbit/s at 640x360, like real clips)."""
    import av

    path = folder / f"synthetic_{minutes:g}min_{width}x{height}.mp4"
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 120, width, dtype=np.uint8)[None, :, None]
    background = rng.integers(0, 10, (height, width, 3), dtype=np.uint8) * 4 + ramp
    strips = rng.integers(0, 60, (8, height // 8, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        options = {"preset": "veryfast", "g": "250"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(minutes * 60 * fps)):
            img = background.copy()
            img[: height // 8] = strips[i % 8]
            cx, cy = (i * 3) % width, (height // 2 + int(height / 3 * np.sin(i / 40)))
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 8) ** 2] = (200, 80 + i % 150, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def print_row(name: str, backend: str, row: dict | str, frames: int) -> None:
    if isinstance(row, str):
        print(f"{name:42s} {backend:10s} {row}")
        return
    exact = "exact" if row["mad"] == 0 else f"MAD {row['mad']:.2f}"
    sparse_s, full_s = row["sparse_s"], row["full_s"]
    print(
        f"{name:42s} {backend:10s} {row['frames']:7d} {sparse_s:8.3f} {frames / sparse_s:8.1f} "
        f"{full_s:8.2f} {row['frames'] / full_s:8.0f} {sparse_s / full_s:7.3f}  {exact}"
    )


def run(videos: list[Path], backends: list[str], args: argparse.Namespace) -> None:
    print(
        f"{'video':42s} {'backend':10s} {'frames':>7s} {'sparse_s':>8s} {'sp_fr/s':>8s} "
        f"{'full_s':>8s} {'full_fr/s':>8s} {'ratio':>7s}  sparse vs sequential"
    )
    for path in videos:
        for backend in backends:
            try:
                row: dict | str = time_backend(path, backend, args)
            except VideoDecodeError as exc:
                row = f"refused: {exc.reason[:110]}"
            print_row(path.name[:42], backend, row, args.frames)
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = args.backends or vio.available_backends()
    for name in backends:
        try:
            vio.open_video("unused", backend=name)
        except BackendUnavailableError as exc:
            print(f"skipping {name}: {exc}")
            backends = [b for b in backends if b != name]
    clips = args.clips if args.clips is not None else [SHARED / c for c in DEFAULT_CLIPS]
    clips = [c for c in clips if c.exists()] or []
    print(
        f"backends: {backends}; 'auto' order: {vio.DEFAULT_BACKENDS}; sparse: {args.frames} "
        f"uniform frames, best of {args.repeats}; full: best of {args.full_repeats}"
    )
    with tempfile.TemporaryDirectory(prefix="vidseq-bench-") as tmp:
        synthetic = []
        for minutes in args.minutes:
            start = time.perf_counter()
            synthetic.append(write_synthetic(Path(tmp), minutes, *args.synthetic_size))
            print(f"wrote {synthetic[-1].name} in {time.perf_counter() - start:.0f} s")
        run(clips + synthetic, backends, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
