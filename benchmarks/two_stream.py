"""Acceptance of the motion stream: appearance, motion, early and late fusion, GRU and mean-pool.

synth (--kind camera: pan/zoom/rotate over real photos, split by photo so the test scenes are
never seen in training; --kind shapes: the foundation's moving shapes) -> EfficientNet-Lite0
features and the DIS motion stream in one extraction -> for each model, train on appearance
only, motion only, both concatenated (early fusion) and both fused late (a model per stream,
probabilities averaged with a weight chosen on val) -> test accuracy of each, per seed and
averaged. Run by hand:  python benchmarks/two_stream.py --help
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vidseq.config import ModelConfig, MotionConfig, SamplingConfig, SynthConfig, TrainConfig
from vidseq.datasets import discover
from vidseq.features import extract
from vidseq.synth import generate_dataset
from vidseq.training.train import train

VARIANTS = {  # name -> (streams, fusion)
    "appearance": (["appearance"], "late"),
    "motion": (["motion"], "late"),
    "early": (["appearance", "motion"], "early"),
    "late": (["appearance", "motion"], "late"),
}


def make_store(work: Path, args: argparse.Namespace, seed: int) -> tuple[str, float]:
    """Write the dataset of ``seed`` and extract both streams; the appearance store and seconds."""
    synth = SynthConfig(
        kind=args.kind, videos_per_class=args.per_class, num_frames=args.frames, size=args.size, seed=seed
    )  # default classes: all 8 of the kind
    generate_dataset(work / "synth", synth, overwrite=True)
    start = time.perf_counter()
    result = extract(
        discover(work / "synth" / "labels.csv"),
        out=work / "features",
        sampling=SamplingConfig(count=args.count),
        motion=MotionConfig(enabled=True),
        progress=False,
    )
    return str(result.store.directory), time.perf_counter() - start


def run_variant(store: str, work: Path, model: str, variant: str, args: argparse.Namespace, seed: int) -> dict:
    streams, fusion = VARIANTS[variant]
    config = TrainConfig(
        epochs=args.epochs,
        seed=seed,
        lr=args.lr,
        streams=streams,
        fusion=fusion,
        out=str(work / "runs" / f"{model}-{variant}"),
    )
    start = time.perf_counter()
    result = train(model_config=ModelConfig(name=model), config=config, features=store, overwrite=True, progress=False)
    row = {
        "model": model,
        "variant": variant,
        "seed": seed,
        "val": result.val["accuracy"],
        "test": result.test["accuracy"] if result.test else float("nan"),
        "seconds": time.perf_counter() - start,
    }
    fusion_record = result.extra.get("fusion") or {}
    if fusion_record.get("weights"):
        row["weights"] = [round(float(w), 2) for w in fusion_record["weights"]]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/two-stream"))
    parser.add_argument("--kind", choices=["camera", "shapes"], default="camera")
    parser.add_argument("--per-class", type=int, default=24, help="clips per class")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--count", type=int, default=16, help="frames sampled per clip (uniform)")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--models", default="gru,meanpool")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0", help="comma-separated: each seed a new dataset and new models")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        work = args.work / args.kind / f"seed{seed}"
        store, seconds = make_store(work, args, seed)
        print(f"seed {seed}: extracted both streams in {seconds:.0f} s -> {store}", flush=True)
        for model in args.models.split(","):
            for variant in args.variants.split(","):
                row = run_variant(store, work, model, variant, args, seed)
                rows.append(row)
                extra = f"  weights {row['weights']}" if "weights" in row else ""
                print(
                    f"  {model:9s} {variant:10s} val {row['val']:.3f} test {row['test']:.3f} "
                    f"({row['seconds']:.0f} s){extra}",
                    flush=True,
                )
    print(f"\nmean test accuracy over seeds {args.seeds} ({args.kind}):")
    for model in args.models.split(","):
        means = {
            v: np.mean([r["test"] for r in rows if r["model"] == model and r["variant"] == v])
            for v in args.variants.split(",")
        }
        print(f"  {model:9s} " + "  ".join(f"{v} {m:.3f}" for v, m in means.items()))
        if {"appearance", "motion", "late"} <= set(means):
            best_single = max(means["appearance"], means["motion"])
            print(f"  {'':9s} late / best single stream = {means['late'] / best_single:.3f}")


if __name__ == "__main__":
    main()
