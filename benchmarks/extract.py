"""Extraction throughput: vidseq end to end against its parts, per runtime, and against a naive loop.

Measures in one run, on the same videos and sampling:
  (a) decode-only frames/s   - vidseq's decode workers with no model
  (b) model-only frames/s    - the extraction's ``FrameEncoder`` (normalise + backbone, fixed batch)
                               on frames already decoded and fitted, per runtime
  (c) vidseq end-to-end      - `vidseq.features.extract` (workers + packed batches), per runtime
  (d) naive loop (--naive)   - cv2 reads every frame, one forward per sampled frame
Everything is warmed up first (file cache, kernels, the ONNX export and session), then each part
runs --repeats times, the parts alternating round by round; the best run of each counts (on a
shared machine the slow runs measure the neighbours). Prints (c)/min(a,b), (c)/(d), and with
--runtime onnxruntime the onnxruntime/torch ratios of (b) and (c) measured in the same rounds.
--compete: the same rounds again beside a competing job (one busy process per usable core,
started after the quiet rounds, stopped at the end), and the ratios of both.

    python benchmarks/extract.py --runtime onnxruntime --compete

With --motion (the issue's budget: the optical-flow motion stream adds at most 10 % to the
extraction time at default settings), also, on the same videos in the same run:
  (a+m) decode-only with the motion stream's pair frames and flow, in the decode workers
  (c+m) vidseq end-to-end with the motion stream (`extract(..., motion=...)`)
  flow-only: FlowPooler alone on the pairs, one core
(a)/(a+m) and (c)/(c+m) are each run --repeats times, alternating (the best of each counts),
and (c+m)/(c) in time is printed.

With --pose (the pose stream: MediaPipe Pose on each sampled frame, default pose settings), likewise:
  (c+p) vidseq end-to-end with the pose stream (`extract(..., pose=...)`), against (c)
  (a+p) decode-only with the pose vectors, in this process, against (a) in this process
  pose-only: PoseEstimator alone on the decoded frames, one process
(c)/(c+p) first: once this process has run MediaPipe, extraction decodes the pose stream in it
(a forked worker cannot start MediaPipe), so the end-to-end rounds come before anything here runs it.

    python benchmarks/extract.py --pose-only --count 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from vidseq.backbones import FrameEncoder, create_backbone
from vidseq.config import BackboneConfig, ExtractConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.datasets import discover_videos
from vidseq.features import extract
from vidseq.features.extraction import _loader, decode_size, fit_frames
from vidseq.features.motion import FlowPooler, pair_indices
from vidseq.features.pose import PoseEstimator
from vidseq.features.workers import DecodeSettings
from vidseq.io import open_video, probe
from vidseq.sampling import indices_from_config

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "action-clips"


def decode_only(
    items, spec, sampling, config, motion: MotionConfig | None = None, pose: PoseConfig | None = None
) -> tuple[float, list[torch.Tensor]]:
    """Frames/s of the extraction's decoding in this process (with the motion or pose stream's work)."""
    jobs = [(i, str(item.path), True, motion is not None, pose is not None) for i, item in enumerate(items)]
    settings = DecodeSettings(spec, sampling, "auto", config.chunk_frames, motion, pose)
    frames, start = [], time.perf_counter()
    for chunk in _loader(jobs, settings, config, torch.device("cpu")):
        if not chunk["error"]:
            frames.append(chunk["frames"])
    seconds = time.perf_counter() - start
    return sum(len(f) for f in frames) / seconds, frames


def model_only(encoder: FrameEncoder, frames: list[torch.Tensor]) -> float:
    """Frames/s of the extraction's model side alone: ``encoder`` (a ``BatchForward``'s settings:
    fixed batch, normalisation, the runtime) on every decoded frame."""
    allframes = torch.cat(frames)
    start = time.perf_counter()
    encoder(allframes)
    return len(allframes) / (time.perf_counter() - start)


def end_to_end(
    items, backbone_cfg, sampling, config, motion: MotionConfig | None = None, pose: PoseConfig | None = None
) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = extract(
            items,
            out=out,
            backbone=backbone_cfg,
            sampling=sampling,
            config=config,
            progress=False,
            motion=motion,
            pose=pose,
        )
    assert motion is None or result.motion.extracted == result.extracted
    assert pose is None or result.pose.extracted == result.extracted
    return result.frames / result.seconds


def flow_only(items, spec, sampling, motion: MotionConfig) -> float:
    """Pairs per second of FlowPooler alone (frames decoded and fitted beforehand), in this process."""
    pooler, pairs = FlowPooler(motion), []
    for item in items:
        with open_video(item.path) as reader:
            info = reader.info
            first, second = pair_indices(
                indices_from_config(info.num_frames, info.fps, sampling), info.num_frames, motion.step
            )
            size = decode_size(info.height, info.width, spec)
            pairs.append(tuple(fit_frames(reader.read(part, size=size), spec) for part in (first, second)))
    start = time.perf_counter()
    for a, b in pairs:
        pooler(a, b)
    return sum(len(a) for a, _ in pairs) / (time.perf_counter() - start)


def alternate(name: str, without, with_stream, repeats: int, stream: str = "motion") -> tuple[float, float]:
    """Best frames/s of ``without()`` and ``with_stream()`` over ``repeats`` runs each, alternating
    (drift and neighbours' load hit both alike; the best run is the least disturbed one)."""
    plain, both = [], []
    for _ in range(repeats):
        plain.append(without())
        both.append(with_stream())
    print(f"    {name} runs without {stream}: {' '.join(f'{x:.1f}' for x in plain)} frames/s")
    print(f"    {name} runs with {stream}:    {' '.join(f'{x:.1f}' for x in both)} frames/s")
    return max(plain), max(both)


@torch.inference_mode()
def naive(items, model, sampling) -> float:
    """What a hand-written script does: read every frame with cv2, forward the sampled ones one by one."""
    import cv2

    count, start = 0, time.perf_counter()
    for item in items:
        info = probe(item.path)
        wanted = set(indices_from_config(info.num_frames, info.fps, sampling).tolist())
        cap = cv2.VideoCapture(str(item.path))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                model.features(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[None])
                count += 1
            index += 1
        cap.release()
    return count / (time.perf_counter() - start)


def _busy() -> None:
    while True:
        pass


@contextmanager
def competing_job(processes: int):
    """``processes`` busy Python loops (one core each) for the block; none when 0."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_busy, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5 if workers else 0)  # let them get going
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join()


def rounds(parts: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Every part run ``repeats`` times, alternating part by part within each round."""
    runs: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, part in parts.items():
            runs[name].append(part())
    return runs


def report(title: str, runs: dict[str, list[float]], runtimes: list[str]) -> dict[str, float]:
    """Prints every run and the best of each part, and the ratios; returns the bests."""
    best = {name: max(values) for name, values in runs.items()}
    print(f"-- {title}")
    for name, values in runs.items():
        print(f"  {name:<26}{best[name]:8.1f} frames/s   (runs: {' '.join(f'{v:.1f}' for v in values)})")
    a = best["(a) decode-only"]
    for runtime in runtimes:
        b, c = best[f"(b) model-only {runtime}"], best[f"(c) end-to-end {runtime}"]
        line = f"  {runtime:<12} (c)/min(a,b) = {c / min(a, b):.2f} (goal >= 0.8)"
        if "(d) naive loop" in best:
            line += f"   (c)/(d) = {c / best['(d) naive loop']:.2f} (goal >= 3)"
        print(line)
    if len(runtimes) == 2:
        model = best["(b) model-only onnxruntime"] / best["(b) model-only torch"]
        e2e = best["(c) end-to-end onnxruntime"] / best["(c) end-to-end torch"]
        print(f"  onnxruntime / torch: model-only {model:.2f}x   end-to-end {e2e:.2f}x")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder, list or dataset")
    parser.add_argument("--count", type=int, default=16, help="uniform samples per video")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) threads in the main process")
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="onnxruntime: measure (b) and (c) with both runtimes, in the same rounds, and print their ratios",
    )
    parser.add_argument(
        "--compete",
        action="store_true",
        help="also run the rounds beside a competing job: one busy process per usable core",
    )
    parser.add_argument("--naive", action="store_true", help="also (d), the naive loop (reads every frame: slow)")
    parser.add_argument(
        "--long",
        type=int,
        default=0,
        metavar="N",
        help="instead of --videos, write N long synthetic H.264 videos (GOP 250) and use them",
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="length of each --long video")
    parser.add_argument(
        "--motion",
        action="store_true",
        help="also measure the motion stream (default motion settings) against no motion",
    )
    parser.add_argument("--motion-only", action="store_true", help="only the motion comparison (skip (b)-(d))")
    parser.add_argument(
        "--pose",
        action="store_true",
        help="also measure the pose stream (default pose settings; the pose extra) against no pose",
    )
    parser.add_argument("--pose-only", action="store_true", help="only the pose comparison (skip (b)-(d))")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each part (the best counts), alternating")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.long:
        from decode import long_videos  # benchmarks/decode.py: the same long-video generator

        args.videos = long_videos(args.long, args.minutes)
    items = discover_videos(args.videos).items
    sampling = SamplingConfig(mode="uniform", count=args.count)
    config = ExtractConfig(num_workers=args.workers, batch_size=args.batch_size)
    backbone_cfg = BackboneConfig(name=args.backbone)
    model = create_backbone(args.backbone)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runtimes = ["torch", "onnxruntime"] if args.runtime == "onnxruntime" else ["torch"]
    print(
        f"videos: {len(items)} from {args.videos}, uniform x{args.count}, {args.backbone}, "
        f"workers {args.workers}, batch {args.batch_size}, threads {args.threads}, {cores} usable cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    _, frames = decode_only(items, model.spec, sampling, config)  # warm-up: the file cache
    if not (args.motion_only or args.pose_only):
        parts = {"(a) decode-only": lambda: decode_only(items, model.spec, sampling, config)[0]}
        for runtime in runtimes:
            encoder = FrameEncoder(
                model,
                precision=config.precision,
                channels_last=config.channels_last,
                batch=config.batch_size,
                runtime=runtime,
            )
            assert encoder.runtime == runtime, f"{args.backbone} does not run with {runtime}"
            run_config = config.model_copy(update={"runtime": runtime})
            parts[f"(b) model-only {runtime}"] = lambda e=encoder: model_only(e, frames)
            parts[f"(c) end-to-end {runtime}"] = lambda c=run_config: end_to_end(items, backbone_cfg, sampling, c)
        if args.naive:
            naive_model = create_backbone(args.backbone)
            parts["(d) naive loop"] = lambda: naive(items, naive_model, sampling)
        for name, part in parts.items():  # warm-up: kernels, the export and its session, the workers
            if not name.startswith("(d)"):
                part()
        quiet = report("quiet", rounds(parts, args.repeats), runtimes)
        if args.compete:
            with competing_job(cores):
                busy = report(f"beside a competing job ({cores} busy processes)", rounds(parts, args.repeats), runtimes)
            for name in quiet:
                print(f"  {name:<26} beside the job: {busy[name] / quiet[name]:.2f}x its quiet frames/s")
    if args.motion or args.motion_only:
        motion_comparison(items, model.spec, backbone_cfg, sampling, config, args.repeats)
    if args.pose or args.pose_only:
        pose_comparison(items, model.spec, backbone_cfg, sampling, config, args.repeats)


def motion_comparison(items, spec, backbone_cfg, sampling, config, repeats: int) -> None:
    """(a) against (a+m) and (c) against (c+m), alternating; flow alone; the budget's ratio."""
    motion = MotionConfig(enabled=True)
    a, am = alternate(
        "(a)",
        lambda: decode_only(items, spec, sampling, config)[0],
        lambda: decode_only(items, spec, sampling, config, motion)[0],
        repeats,
    )
    c, cm = alternate(
        "(c)",
        lambda: end_to_end(items, backbone_cfg, sampling, config),
        lambda: end_to_end(items, backbone_cfg, sampling, config, motion),
        repeats,
    )
    flow = flow_only(items, spec, sampling, motion)
    print(
        f"flow-only (one core)                  {flow:8.1f} pairs/s   "
        f"({1000 / flow:.1f} ms a frame, {motion.method} {motion.size}px grid {motion.grid})"
    )
    print(f"(a)   decode-only                     {a:8.1f} frames/s")
    print(f"(a+m) decode-only with pairs and flow {am:8.1f} frames/s  ({a / am:.3f}x the time of (a))")
    print(f"(c)   end-to-end without motion       {c:8.1f} frames/s")
    print(f"(c+m) end-to-end with motion          {cm:8.1f} frames/s")
    print(f"(c+m)/(c) in time = {c / cm:.3f}   (goal <= 1.10)")


def pose_comparison(items, spec, backbone_cfg, sampling, config, repeats: int) -> None:
    """(c) against (c+p) (forked decode workers), then (a) against (a+p) and pose alone (this
    process); the pose stream's ratio in time, and the frames where a person was found."""
    pose = PoseConfig(enabled=True)
    c, cp = alternate(
        "(c)",
        lambda: end_to_end(items, backbone_cfg, sampling, config),
        lambda: end_to_end(items, backbone_cfg, sampling, config, pose=pose),
        repeats,
        "pose",
    )
    a, ap = alternate(
        "(a)",
        lambda: decode_only(items, spec, sampling, config)[0],
        lambda: decode_only(items, spec, sampling, config, pose=pose)[0],
        repeats,
        "pose",
    )
    frames = torch.cat(decode_only(items, spec, sampling, config)[1]).numpy()  # fitted: MediaPipe resizes any
    with PoseEstimator(pose) as estimator:
        start = time.perf_counter()
        estimator(frames)
        alone = len(frames) / (time.perf_counter() - start)
    print(f"pose-only (this process)              {alone:8.1f} frames/s   ({1000 / alone:.1f} ms a frame)")
    print(f"(a)   decode-only (this process)      {a:8.1f} frames/s")
    print(f"(a+p) decode-only with pose           {ap:8.1f} frames/s  ({a / ap:.2f}x the time of (a))")
    print(f"(c)   end-to-end without pose         {c:8.1f} frames/s")
    print(f"(c+p) end-to-end with pose            {cp:8.1f} frames/s")
    print(f"(c+p)/(c) in time = {c / cp:.2f}")


if __name__ == "__main__":
    main()
