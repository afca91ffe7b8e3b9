"""Acceptance of the motion stream: appearance, motion, early and late fusion, GRU and mean-pool.

synth (--kind camera: pan/zoom/rotate over real photos, split by photo so the test scenes are
never seen in training, --classes to add fade_in,fade_out; --kind shapes: the foundation's
moving shapes) -> EfficientNet-Lite0 features and the DIS motion stream in one extraction (with
--intensity both: a motion store with and one without the per-cell change of brightness, the
appearance store shared) -> for each model, train on appearance only, motion only, both
concatenated (early fusion) and both fused late (a model per stream, probabilities averaged
with a weight chosen on val) -> test accuracy of each and of each time-reversed class pair
(the pair's test clips named right, out of all classes), per seed and averaged.
Run by hand:  python benchmarks/two_stream.py --help
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vidseq.config import (
    SYNTH_CLASSES,
    BackboneConfig,
    ModelConfig,
    MotionConfig,
    SamplingConfig,
    SynthConfig,
    TrainConfig,
)
from vidseq.datasets import discover
from vidseq.features import extract
from vidseq.synth import generate_dataset
from vidseq.synth.camera import CAMERA_DEFAULT_CLASSES
from vidseq.training.train import train

VARIANTS = {  # name -> (streams, fusion)
    "appearance": (["appearance"], "late"),
    "motion": (["motion"], "late"),
    "early": (["appearance", "motion"], "early"),
    "late": (["appearance", "motion"], "late"),
}


INTENSITY = {"on": [True], "off": [False], "both": [False, True]}


def class_list(args: argparse.Namespace) -> list[str]:
    """The classes to write, pair by pair: ``--classes``, else the kind's default."""
    if args.classes:
        return args.classes.split(",")
    return list(CAMERA_DEFAULT_CLASSES if args.kind == "camera" else SYNTH_CLASSES)


def make_dataset(work: Path, args: argparse.Namespace, seed: int) -> None:
    synth = SynthConfig(
        kind=args.kind,
        classes=class_list(args),
        videos_per_class=args.per_class,
        num_frames=args.frames,
        size=args.size,
        seed=seed,
    )
    generate_dataset(work / "synth", synth, overwrite=True)


def make_store(work: Path, args: argparse.Namespace, intensity: bool) -> tuple[str, float]:
    """Extract both streams of the dataset in ``work`` (the appearance store is reused by a second
    call: only the motion stream of the other setting is computed); the appearance store and seconds."""
    start = time.perf_counter()
    result = extract(
        discover(work / "synth" / "labels.csv"),
        out=work / "features",
        backbone=BackboneConfig(input_size=args.input_size),
        sampling=SamplingConfig(count=args.count),
        motion=MotionConfig(enabled=True, intensity=intensity),
        progress=False,
    )
    return str(result.store.directory), time.perf_counter() - start


def pair_accuracy(test: dict, pair: tuple[str, str]) -> float:
    """The share of the pair's test clips whose predicted class (out of all) is their own."""
    labels = [row["label"] for row in test["per_class"]]
    rows = [labels.index(name) for name in pair]
    confusion = np.asarray(test["confusion"])
    return float(sum(confusion[i, i] for i in rows) / max(1, confusion[rows].sum()))


def run_variant(
    store: str, work: Path, model: str, variant: str, args: argparse.Namespace, seed: int, tag: str = ""
) -> dict:
    streams, fusion = VARIANTS[variant]
    config = TrainConfig(
        epochs=args.epochs,
        seed=seed,
        lr=args.lr,
        streams=streams,
        fusion=fusion,
        out=str(work / "runs" / f"{model}-{variant}{tag}"),
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
    classes = class_list(args)
    for pair in zip(classes[::2], classes[1::2]):
        row["/".join(pair)] = pair_accuracy(result.test, pair) if result.test else float("nan")
    fusion_record = result.extra.get("fusion") or {}
    if fusion_record.get("weights"):
        row["weights"] = [round(float(w), 2) for w in fusion_record["weights"]]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/two-stream"))
    parser.add_argument("--kind", choices=["camera", "shapes"], default="camera")
    parser.add_argument("--classes", default="", help="comma-separated, pair by pair (default: the kind's 8)")
    parser.add_argument("--per-class", type=int, default=24, help="clips per class")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--count", type=int, default=16, help="frames sampled per clip (uniform)")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--input-size", type=int, default=None, help="the backbone's input (default: its own)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--models", default="gru,meanpool")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--intensity", choices=list(INTENSITY), default="on", help="the motion stream's dI part (both: compare)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated: each seed a new dataset and new models")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        work = args.work / args.kind / f"seed{seed}"
        make_dataset(work, args, seed)
        for intensity in INTENSITY[args.intensity]:
            store, seconds = make_store(work, args, intensity)
            print(f"seed {seed}: intensity {intensity}: extracted in {seconds:.0f} s -> {store}", flush=True)
            tag = "" if args.intensity == "on" else f"-intensity-{'on' if intensity else 'off'}"
            for model in args.models.split(","):
                for variant in args.variants.split(","):
                    row = run_variant(store, work, model, variant, args, seed, tag) | {"intensity": intensity}
                    rows.append(row)
                    print("  " + describe(row), flush=True)
    summarise(rows, args)


def describe(row: dict) -> str:
    pairs = "  ".join(f"{k} {v:.2f}" for k, v in row.items() if "/" in k)
    extra = f"  weights {row['weights']}" if "weights" in row else ""
    return (
        f"intensity {'on ' if row['intensity'] else 'off'} {row['model']:9s} {row['variant']:10s} "
        f"val {row['val']:.3f} test {row['test']:.3f} ({row['seconds']:.0f} s){extra}  {pairs}"
    )


def summarise(rows: list[dict], args: argparse.Namespace) -> None:
    """Mean test accuracy over the seeds (min-max in brackets) per model, variant, setting and pair."""
    print(f"\ntest accuracy over seeds {args.seeds} ({args.kind}), mean [min-max]:")
    columns = ["test"] + [k for k in rows[0] if "/" in k]
    print(f"  {'intensity':9s} {'model':9s} {'variant':10s} " + "  ".join(f"{c:>20s}" for c in columns))
    for intensity in INTENSITY[args.intensity]:
        for model in args.models.split(","):
            means = {}
            for variant in args.variants.split(","):
                mine = [r for r in rows if (r["intensity"], r["model"], r["variant"]) == (intensity, model, variant)]
                values = {column: [r[column] for r in mine] for column in columns}
                means[variant] = np.mean(values["test"])
                cells = [f"{np.mean(v):.3f} [{min(v):.2f}-{max(v):.2f}]" for v in values.values()]
                on = "on" if intensity else "off"
                print(f"  {on:9s} {model:9s} {variant:10s} " + "  ".join(f"{c:>20s}" for c in cells))
            if {"appearance", "motion", "late"} <= set(means):
                best_single = max(means["appearance"], means["motion"])
                print(f"  {'':9s} {model:9s} late / best single stream = {means['late'] / best_single:.3f}")


if __name__ == "__main__":
    main()
