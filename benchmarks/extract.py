"""Extraction throughput: vidseq end to end against its parts and against a naive loop.

Measures in one run, on the same videos and sampling:
  (a) decode-only frames/s   - vidseq's decode workers with no model
  (b) model-only frames/s    - the backbone on frames already decoded and fitted
  (c) vidseq end-to-end      - `vidseq.features.extract` (workers + packed batches)
  (d) naive loop             - cv2 reads every frame, one forward per sampled frame
and prints (c)/min(a,b) and (c)/(d). Run by hand:  python benchmarks/extract.py --help
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vidseq.backbones import create_backbone, normalize_frames
from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig
from vidseq.datasets import discover_videos
from vidseq.features import extract
from vidseq.features.extraction import _loader
from vidseq.io import probe
from vidseq.sampling import indices_from_config

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "action-clips"


def decode_only(items, spec, sampling, config) -> tuple[float, list[torch.Tensor]]:
    frames, start = [], time.perf_counter()
    for chunk in _loader(items, spec, sampling, config, "auto", torch.device("cpu")):
        if not chunk["error"]:
            frames.append(chunk["frames"])
    seconds = time.perf_counter() - start
    return sum(len(f) for f in frames) / seconds, frames


@torch.inference_mode()
def model_only(model, frames: list[torch.Tensor], batch_size: int) -> float:
    allframes = torch.cat(frames)
    model.to(memory_format=torch.channels_last)
    model(normalize_frames(allframes[:2], model.spec).contiguous(memory_format=torch.channels_last))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(allframes), batch_size):
        x = normalize_frames(allframes[i : i + batch_size], model.spec)
        model(x.contiguous(memory_format=torch.channels_last))
    return len(allframes) / (time.perf_counter() - start)


def end_to_end(items, backbone_cfg, sampling, config) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = extract(items, out=out, backbone=backbone_cfg, sampling=sampling, config=config, progress=False)
    return result.frames / result.seconds


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder, list or dataset")
    parser.add_argument("--count", type=int, default=16, help="uniform samples per video")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the main process")
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="instead of --videos, write N long synthetic H.264 videos (GOP 250) and use them")
    parser.add_argument("--minutes", type=float, default=2.0, help="length of each --long video")
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
    a, frames = decode_only(items, model.spec, sampling, config)
    b = model_only(model, frames, args.batch_size)
    c = end_to_end(items, backbone_cfg, sampling, config)
    d = naive(items, create_backbone(args.backbone), sampling)
    print(f"videos: {len(items)} from {args.videos}, uniform x{args.count}, {args.backbone}, "
          f"workers {args.workers}, batch {args.batch_size}, torch threads {args.threads}")
    print(f"(a) decode-only      {a:8.1f} frames/s")
    print(f"(b) model-only       {b:8.1f} frames/s")
    print(f"(c) vidseq end-to-end{c:8.1f} frames/s")
    print(f"(d) naive loop       {d:8.1f} frames/s")
    print(f"(c)/min(a,b) = {c / min(a, b):.2f}   (goal >= 0.8)")
    print(f"(c)/(d)      = {c / d:.2f}   (goal >= 3)")


if __name__ == "__main__":
    main()
