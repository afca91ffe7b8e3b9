"""Training overhead: `vidseq train` against a bare PyTorch loop on the same tensors, in one run.

Both train the same GRU (same size, AdamW, cross-entropy) on the same sequences for the same
number of epochs. vidseq adds augmentation, length-grouped batching, padding/packing, warm-up +
cosine schedule, label smoothing, gradient clipping; the full `train()` also validates and
writes checkpoints every epoch. Prints sequences/s of each and the overhead ratios (goal: the
epoch loop at most 1.2x the bare loop). Run by hand:  python benchmarks/train.py --help
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidseq.config import ModelConfig, TrainConfig
from vidseq.features import FeatureStore, VideoFeatures
from vidseq.models import build_model


def fake_store(root: Path, *, videos: int, steps: int, dim: int, classes: int) -> FeatureStore:
    """A feature store of random sequences (what `vidseq extract` would write)."""
    rng = np.random.default_rng(0)
    store = FeatureStore.open(root / "features", {"benchmark": True})
    rows = []
    for i in range(videos):
        video = root / "videos" / f"v{i:05d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(i.to_bytes(4, "little"))
        entry = store.write(
            video,
            VideoFeatures(
                rng.standard_normal((steps, dim), dtype=np.float32), np.arange(steps), np.arange(steps) / 25.0
            ),
        )
        split = "val" if i % 10 == 0 else "train"
        rows.append(
            {
                "path": str(video),
                "label": f"c{i % classes}",
                "split": split,
                "status": "done",
                "frames": steps,
                "file": entry.relative_to(store.directory),
            }
        )
    store.write_manifest(rows)
    return store


def bare_loop(features: np.ndarray, targets: np.ndarray, *, epochs: int, batch_size: int, hidden: int) -> float:
    torch.manual_seed(0)
    model = build_model("gru", input_dim=features.shape[2], num_classes=int(targets.max()) + 1, hidden_size=hidden)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(batch_size):
            loss = loss_fn(model(x[i]), y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return epochs * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    import vidseq.training.train as vidseq_train
    from vidseq.training.train import train

    loop_seconds = []
    original = vidseq_train.train_one_epoch

    def timed_epoch(run, train_set):
        start = time.perf_counter()
        out = original(run, train_set)
        loop_seconds.append(time.perf_counter() - start)
        return out

    vidseq_train.train_one_epoch = timed_epoch

    with tempfile.TemporaryDirectory() as tmp:
        store = fake_store(Path(tmp), videos=args.videos, steps=args.steps, dim=args.dim, classes=args.classes)
        epoch_seconds = []
        cfg = TrainConfig(
            features=str(store.directory),
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.epochs,
            crop_min=1.0,
            subsample_prob=0.0,
        )
        last = [time.perf_counter()]

        def tick(row):
            now = time.perf_counter()
            epoch_seconds.append(now - last[0])
            last[0] = now

        start = time.perf_counter()
        result = train(
            model_config=ModelConfig(name="gru", hidden_size=args.hidden, center=False, dropout=0.0),
            config=cfg,
            out=Path(tmp) / "run",
            progress=False,
            on_epoch_end=tick,
        )
        full = time.perf_counter() - start
        train_n = sum(1 for _ in range(args.videos) if _ % 10)
        train_set = [s for s in range(args.videos) if s % 10]
        rng = np.random.default_rng(0)
        features = rng.standard_normal((len(train_set), args.steps, args.dim), dtype=np.float32)
        targets = np.array([i % args.classes for i in train_set])
        bare = bare_loop(features, targets, epochs=args.epochs, batch_size=args.batch_size, hidden=args.hidden)
    vidseq_loop = train_n / np.median(loop_seconds)
    vidseq_epoch = train_n / np.median(epoch_seconds)
    vidseq_full = args.epochs * train_n / full
    print(
        f"{args.videos} sequences ({train_n} train) of {args.steps}x{args.dim}, GRU {args.hidden}, batch "
        f"{args.batch_size}, {args.epochs} epochs, torch threads {torch.get_num_threads()}"
    )
    print(f"bare PyTorch loop            {bare:8.1f} sequences/s")
    print(
        f"vidseq training loop         {vidseq_loop:8.1f} sequences/s   "
        f"overhead {bare / vidseq_loop:.2f}x  (goal <= 1.2)"
    )
    print(f"vidseq epoch (+ val, ckpts)  {vidseq_epoch:8.1f} sequences/s   overhead {bare / vidseq_epoch:.2f}x")
    print(
        f"vidseq train() whole run     {vidseq_full:8.1f} sequences/s   overhead {bare / vidseq_full:.2f}x "
        f"(includes loading, checkpoints, final reports; best epoch {result.best_epoch})"
    )


if __name__ == "__main__":
    main()
