"""Acceptance of the temporal models: do LSTM/GRU use frame order where a bag of frames cannot?

synth (time-reversed class pairs) -> real EfficientNet-Lite0 features with 2x2 grid pooling
(keeps where things are, which motion direction depends on) -> train LSTM, GRU, mean-pool, TCN
-> test accuracy overall and on each direction pair (the better of the two pair classes' scores
decides). Run by hand:  python benchmarks/motion_pairs.py --help
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vidseq.config import (
    SYNTH_CLASSES,
    BackboneConfig,
    ExtractConfig,
    ModelConfig,
    SamplingConfig,
    SynthConfig,
    TrainConfig,
)
from vidseq.datasets import discover
from vidseq.features import extract
from vidseq.models import load_model
from vidseq.synth import generate_dataset
from vidseq.training.evaluate import predict_proba
from vidseq.training.sequences import assign_splits, load_sequences

PAIRS = [("move_left", "move_right"), ("grow", "shrink"), ("rotate_cw", "rotate_ccw"), ("appear", "disappear")]


def pair_accuracy(probs: np.ndarray, targets: np.ndarray, labels: list[str], pair: tuple[str, str]) -> float:
    a, b = labels.index(pair[0]), labels.index(pair[1])
    mask = np.isin(targets, [a, b])
    chosen = np.where(probs[mask][:, a] >= probs[mask][:, b], a, b)
    return float((chosen == targets[mask]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/motion-pairs"))
    parser.add_argument("--per-class", type=int, default=48)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--pooling", default="grid2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--models", default="lstm,gru,meanpool,tcn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--classes", default="", help="comma-separated synth classes (default: all 8)")
    parser.add_argument("--no-center", action="store_true", help="do not centre features per video")
    args = parser.parse_args()
    classes = args.classes.split(",") if args.classes else list(SYNTH_CLASSES)
    synth = SynthConfig(
        classes=classes, videos_per_class=args.per_class, num_frames=args.frames, size=args.size, seed=args.seed
    )
    generate_dataset(args.work / "synth", synth, overwrite=True)
    start = time.perf_counter()
    store = extract(
        discover(args.work / "synth" / "labels.csv"),
        out=args.work / "features",
        backbone=BackboneConfig(pooling=args.pooling),
        sampling=SamplingConfig(count=args.frames),
        config=ExtractConfig(),
        progress=False,
    ).store
    print(f"extracted {store.directory} in {time.perf_counter() - start:.0f} s")
    for name in args.models.split(","):
        from vidseq.training.train import train

        cfg = TrainConfig(
            features=str(store.directory), epochs=args.epochs, seed=args.seed, lr=args.lr, patience=args.epochs
        )
        start = time.perf_counter()
        model_cfg = ModelConfig(name=name, dropout=0.5, input_dropout=0.3, center=not args.no_center)
        result = train(model_config=model_cfg, config=cfg, out=args.work / name, overwrite=True, progress=False)
        data = assign_splits(
            load_sequences(store), val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
        )
        test = data.subset("test")
        import torch

        model = load_model(torch.load(result.best_checkpoint, weights_only=True)["model"])
        probs = predict_proba(model, test.features, num_views=3)
        pairs = "  ".join(
            f"{a}/{b} {pair_accuracy(probs, test.targets, test.labels, (a, b)):.2f}"
            for a, b in PAIRS
            if a in test.labels
        )
        print(
            f"{name:9s} test acc {result.test['accuracy']:.3f} (N={result.test['num_samples']})  "
            f"pairs: {pairs}  [{time.perf_counter() - start:.0f} s, best epoch {result.best_epoch}]"
        )


if __name__ == "__main__":
    main()
