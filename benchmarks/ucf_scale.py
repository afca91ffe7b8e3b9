"""The UCF101-scale budget: what extracting 13,320 UCF101-shaped videos would take, from parts measured here.

1. Writes ``--videos`` N clips shaped like UCF101's: 320x240, 175 frames (7 s) at 25 fps, MPEG-4
   part 2 (XVID fourcc) in .avi, spread over 101 class folders. Their pictures are frames of the
   shared real clips (../shared/data/action-clips), resized, each video from its own clip and
   start, so the decoder sees camera content, not flat synthetic colour.
2. CPU side: extraction's decode workers (``features.workers.decode_videos``: open, sample
   ``sampling.count`` frames uniformly, decode, fit to the backbone's input, and the motion
   stream's optical flow) with k = 1, 2 workers and no model; best of ``--repeats``. Seconds
   per video per core = wall seconds x k / N.
3. Model side: the backbone alone (``FrameEncoder``, the extraction's forward: fixed batch,
   channels_last) on those fitted frames, per runtime (torch; onnxruntime where
   ``vidseq.backbones.onnx`` and onnxruntime are installed), on this machine's cores, warmed
   up, best of ``--repeats``.
4. The projection for 13,320 videos on ``--cores`` (16) cores: core-seconds per video of the CPU
   side plus the model side, spread over the cores. It assumes both scale linearly with cores
   (the k = 1 vs 2 rows show how far decoding does here; the backbone's intra-op threads scale
   worse than whole processes, so the model side is a lower bound).

Run by hand:  python benchmarks/ucf_scale.py --videos 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidseq.backbones import FrameEncoder
from vidseq.config import BackboneConfig, MotionConfig, SamplingConfig
from vidseq.features.keys import build_backbone
from vidseq.features.workers import DecodeLimits, DecodeSettings, decode_videos
from vidseq.threads import thread_budget

SOURCES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "action-clips"
UCF_VIDEOS, UCF_CLASSES = 13_320, 101
WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 25.0, 175


def source_frames(folder: Path, limit: int = 400) -> list[np.ndarray]:
    """Frames (BGR, 320x240) of each real clip in ``folder``, one array per clip."""
    clips = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in {".avi", ".mp4", ".mkv"}:
            continue
        cap, frames = cv2.VideoCapture(str(path)), []
        while len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
        cap.release()
        if len(frames) >= 30:
            clips.append(np.stack(frames))
    if not clips:
        raise SystemExit(f"no readable clips in {folder}")
    return clips


def write_ucf_like(out: Path, count: int, clips: list[np.ndarray]) -> list[Path]:
    """``count`` UCF101-shaped .avi files (XVID) in 101 class folders; frames run forward and back
    through a source clip from a start of their own (so every video is 175 distinct-ish frames)."""
    paths = []
    for i in range(count):
        clip = clips[i % len(clips)]
        order = np.arange(FRAMES) + (i * 7) % len(clip)
        order = np.abs((order + len(clip)) % (2 * len(clip) - 2) - (len(clip) - 1))  # forward and back
        path = out / f"Class{i % UCF_CLASSES:03d}" / f"v_Class{i % UCF_CLASSES:03d}_g{i // UCF_CLASSES + 1:02d}_c01.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), FPS, (WIDTH, HEIGHT))
        if not writer.isOpened():
            raise SystemExit("OpenCV cannot write XVID .avi here")
        for j in order:
            writer.write(np.ascontiguousarray(clip[int(len(clip) - 1 - j)]))
        writer.release()
        paths.append(path)
    return paths


def cpu_side(paths: list[Path], settings: DecodeSettings, workers: int, repeats: int) -> tuple[float, list]:
    """Best wall seconds of decoding every video with ``workers`` decode workers; the fitted frames."""
    jobs = [(i, str(p), True, settings.motion is not None) for i, p in enumerate(paths)]
    best, frames = float("inf"), []
    for _ in range(repeats):
        got, start = [], time.perf_counter()
        for part in decode_videos(jobs, settings, workers=workers, limits=DecodeLimits()):
            if part["error"]:
                raise SystemExit(f"{paths[part['job']]}: {part['error']}")
            got.append(part["frames"])
        best = min(best, time.perf_counter() - start)
        frames = got
    return best, frames


def model_side(backbone, frames: np.ndarray, runtime: str, batch: int, repeats: int) -> tuple[float, str]:
    """Best frames/s of the extraction's forward on ``frames`` with ``runtime``; the runtime that ran."""
    encoder = FrameEncoder(
        backbone, precision="fp32", channels_last=True, device=torch.device("cpu"), batch=batch, runtime=runtime
    )
    encoder(frames[:batch])  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        encoder(frames)
        best = max(best, len(frames) / (time.perf_counter() - start))
    return best, getattr(encoder, "runtime", "torch")


def runtimes() -> list[str]:
    try:
        import onnxruntime  # noqa: F401

        import vidseq.backbones.onnx  # noqa: F401
    except ImportError:
        return ["torch"]
    return ["torch", "onnxruntime"]


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20, help="UCF101-shaped videos written and decoded")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each part; the best counts")
    parser.add_argument("--cores", type=int, default=16, help="cores of the machine projected to")
    parser.add_argument("--count", type=int, default=16, help="sampling.count: frames sampled per video")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=64, help="extract.batch_size")
    parser.add_argument("--sources", type=Path, default=SOURCES, help="real clips whose frames fill the videos")
    parser.add_argument("--no-motion", action="store_true", help="leave the motion stream out of the CPU side")
    args = parser.parse_args()

    budget = thread_budget()
    torch.set_num_threads(budget.inference())
    backbone = build_backbone(BackboneConfig(name=args.backbone), torch.device("cpu"))
    motion = None if args.no_motion else MotionConfig(enabled=True)
    settings = DecodeSettings(backbone.spec, SamplingConfig(count=args.count), "auto", 64, motion)
    with tempfile.TemporaryDirectory(prefix="vidseq-ucf-") as tmp:
        start = time.perf_counter()
        paths = write_ucf_like(Path(tmp), args.videos, source_frames(args.sources))
        written = time.perf_counter() - start
        size = sum(p.stat().st_size for p in paths) / len(paths)
        print(
            f"{len(paths)} UCF101-shaped videos ({WIDTH}x{HEIGHT}, {FRAMES} frames at {FPS:g} fps, XVID .avi, "
            f"{size / 1e3:.0f} kB each; written in {written:.1f} s); this machine: {budget.cores} cores "
            f"({budget.source}); sampling uniform x{args.count}, {args.backbone}, motion "
            f"{'off' if motion is None else 'dis 64x64'}; best of {args.repeats}\n"
        )
        print(f"{'part':42} {'s/video':>8} {'s/video/core':>13} {'13,320 on ' + str(args.cores) + ' cores':>18}")
        cpu_per_core = []
        frames: list = []
        for k in (1, 2):
            seconds, frames = cpu_side(paths, settings, k, args.repeats)
            per_video = seconds / len(paths)
            cpu_per_core.append(per_video * k)
            label = f"CPU side, {k} decode worker(s)"
            projected = UCF_VIDEOS * per_video * k / args.cores
            print(f"{label:42} {per_video:8.3f} {per_video * k:13.3f} {hours(projected):>18}")
        fitted = np.concatenate(frames)
        cpu_core_s = min(cpu_per_core)
        threads = torch.get_num_threads()
        for runtime in runtimes():
            fps, ran = model_side(backbone, fitted, runtime, args.batch, args.repeats)
            per_video = args.count / fps
            label = f"model side, {ran} ({threads} thr, {fps:.0f} fr/s)"
            projected = UCF_VIDEOS * per_video * threads / args.cores
            print(f"{label:42} {per_video:8.3f} {per_video * threads:13.3f} {hours(projected):>18}")
            total = UCF_VIDEOS * (cpu_core_s + per_video * threads) / args.cores
            both = cpu_core_s + per_video * threads
            print(f"{'  end to end (CPU + model side)':42} {'':8} {both:13.3f} {hours(total):>18}")


if __name__ == "__main__":
    main()
