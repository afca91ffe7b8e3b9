"""Memory probe: how far back can each head reach? An event at the START decides the class,
then a distractor tail of L steps follows.

Real feature vectors: ``vidseq synth`` (shapes, the two time-reversed pairs move_left/move_right
and grow/shrink) -> ``vidseq extract`` (EfficientNet-Lite0, 2x2 grid pooling, 8 frames per clip)
-> PCA to ``--dims`` (fitted on training frames only) -> probe sequences:

    [the 8 frames of one clip, in order]  +  [L frames drawn one by one from random other clips]

The class is the clip's class. The tail holds frames of every class in random order, so it says
nothing about the class; and since the pairs are time-reversals, the event's frames as a set say
nothing either: only the ORDER of the first 8 steps decides. A bag of frames is at chance
within a pair; a recurrent head that reads its last state must carry the direction through L
distractor steps; heads that pool over all steps (mean, max, attention) can read the event where
it is. Clips are split train/val/test by clip before sequences are built (tails are drawn from the
same split's clips), so no test frame is ever trained on.

Stores are cached under ``--work`` (default: a folder in the system temp dir, never the repo).
Run by hand:  python benchmarks/memory_probe.py --help
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig, SynthConfig
from vidseq.datasets import discover
from vidseq.features import FeatureStore, extract
from vidseq.models import build_model, fit_stream_stats, pad_sequences
from vidseq.synth import generate_dataset
from vidseq.training.sequences import assign_splits, load_sequences

PAIR_CLASSES = ["move_left", "move_right", "grow", "shrink"]
DEFAULT_WORK = Path(tempfile.gettempdir()) / "vidseq-bench"

# name -> (model table name, options); hidden sizes small enough for a CPU benchmark
HEADS = {
    "lstm": ("lstm", {"hidden_size": 64, "center": True}),
    "gru": ("gru", {"hidden_size": 64, "center": True}),
    "bigru": ("gru", {"hidden_size": 64, "center": True, "bidirectional": True}),
    "transformer": ("transformer", {"hidden_size": 64, "num_heads": 4, "num_layers": 2, "center": True}),
    "tcn": ("tcn", {"hidden_size": 64}),
    "meanpool": ("meanpool", {"hidden_size": 64}),
}


def probe_store(work: Path, *, per_class: int = 24, seed: int = 0) -> Path:
    """The shapes-pairs store (synth + extract), cached: a second call reuses it."""
    root = work / f"probe-pairs-{per_class}-{seed}"
    features = root / "features"
    if features.is_dir():
        stores = [p for p in features.iterdir() if (p / "manifest.csv").is_file() or p.is_dir()]
        if stores:
            return stores[0]
    generate_dataset(
        root / "synth",
        SynthConfig(classes=PAIR_CLASSES, videos_per_class=per_class, num_frames=12, size=96, seed=seed),
        overwrite=True,
    )
    result = extract(
        discover(root / "synth" / "labels.csv"),
        out=features,
        backbone=BackboneConfig(pooling="grid2", input_size=128),
        sampling=SamplingConfig(count=8),
        config=ExtractConfig(num_workers=1, batch_size=64),
        progress=False,
    )
    return result.store.directory


@dataclass
class Split:
    clips: list[np.ndarray]  # (8, dims) each, PCA'd
    targets: np.ndarray


def load_clips(store: Path, *, dims: int, seed: int) -> tuple[dict[str, Split], list[str]]:
    """Clips of the store split train/val/test (by clip, vidseq's assign_splits), PCA'd to ``dims``
    with the PCA fitted on the training frames."""
    data = assign_splits(
        load_sequences(FeatureStore.load_existing(store)), val_fraction=0.2, test_fraction=0.3, seed=seed
    )
    train_frames = np.concatenate([f for f, s in zip(data.features, data.splits) if s == "train"])
    mean = train_frames.mean(0)
    _, _, vt = np.linalg.svd(train_frames - mean, full_matrices=False)
    basis = vt[:dims].T / np.sqrt(np.var((train_frames - mean) @ vt[:dims].T, axis=0) + 1e-6)  # whitened
    splits = {}
    for name in ("train", "val", "test"):
        keep = [i for i, s in enumerate(data.splits) if s == name]
        clips = [((data.features[i] - mean) @ basis).astype(np.float32) for i in keep]
        splits[name] = Split(clips, data.targets[keep])
    return splits, data.labels


def make_probe(split: Split, *, tail: int, count: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` sequences: one clip of the split (its class is the label), then ``tail``
    frames each drawn from a random clip of the same split at a random step."""
    frames = np.concatenate(split.clips)
    chosen = rng.integers(0, len(split.clips), count)
    sequences = [np.concatenate([split.clips[c], frames[rng.integers(0, len(frames), tail)]]) for c in chosen]
    return sequences, split.targets[chosen]


def probe_sampler(split: Split, *, tail: int, count: int, seed: int):
    """``sampler(epoch)`` -> that epoch's ``count`` training sequences (new tails every epoch,
    the same for every head: a head cannot memorise a tail, only learn to ignore it)."""
    return lambda epoch: make_probe(split, tail=tail, count=count, rng=np.random.default_rng([seed, tail, epoch, 1]))


def train_head(
    name: str,
    sequences: list[np.ndarray],
    targets: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    options: dict | None = None,
    sampler=None,
) -> tuple[torch.nn.Module, float]:
    """A head of ``HEADS`` trained with AdamW + warm-up/cosine on the sequences; it and the
    training throughput (sequences per second). ``sampler(epoch)``: fresh ``(sequences,
    targets)`` for each epoch after the first (the probe draws new distractor tails)."""
    table, base = HEADS[name]
    torch.manual_seed(seed)
    model = build_model(table, input_dim=sequences[0].shape[1], num_classes=num_classes, **{**base, **(options or {})})
    if model.input.standardised:  # as vidseq train does: stream statistics of the training sequences
        model.input.set_stats(*fit_stream_stats(sequences, model.input.layout))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(sequences) / batch_size)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    rng = np.random.default_rng(seed)
    model.train()
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        if sampler is not None and epoch:
            sequences, targets = sampler(epoch)
        order = rng.permutation(len(sequences))
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            padded, lengths = pad_sequences([sequences[i] for i in batch])
            loss = F.cross_entropy(model(padded, lengths), torch.from_numpy(targets[batch]).long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            seen += len(batch)
    return model.eval(), seen / (time.perf_counter() - start)


def accuracy(model: torch.nn.Module, sequences: list[np.ndarray], targets: np.ndarray, batch_size: int = 64) -> float:
    correct = 0
    with torch.inference_mode():
        for first in range(0, len(sequences), batch_size):
            padded, lengths = pad_sequences(sequences[first : first + batch_size])
            correct += int((model(padded, lengths).argmax(1).numpy() == targets[first : first + batch_size]).sum())
    return correct / len(sequences)


def run_probe(
    splits: dict[str, Split],
    num_classes: int,
    *,
    heads: list[str],
    tails: list[int],
    seeds: list[int],
    train_count: int,
    test_count: int,
    epochs: int,
    echo=print,
) -> list[dict]:
    """Test accuracy of each head at each tail length and seed (a fresh probe set per seed)."""
    rows = []
    for tail in tails:
        for seed in seeds:
            rng = np.random.default_rng([seed, tail])
            test_x, test_y = make_probe(splits["test"], tail=tail, count=test_count, rng=rng)
            for head in heads:
                start = time.perf_counter()
                sampler = probe_sampler(splits["train"], tail=tail, count=train_count, seed=seed)
                model, rate = train_head(
                    head, *sampler(0), num_classes=num_classes, epochs=epochs, seed=seed, sampler=sampler
                )
                row = {
                    "head": head,
                    "tail": tail,
                    "seed": seed,
                    "test": accuracy(model, test_x, test_y),
                    "train_seq_s": rate,
                }
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
                echo(f"  probe L={tail:5d} seed {seed} {head:12s} test {row['test']:.3f} ({row['seconds']:.0f} s)")
    return rows


def probe_table(rows: list[dict], heads: list[str], tails: list[int], *, chance: float) -> str:
    """Mean (min-max over seeds) test accuracy per head and L, and the first L where a head falls
    below the midpoint between its L=min accuracy and chance ("breaks")."""
    lines = ["| head | " + " | ".join(f"L={t}" for t in tails) + " | breaks at |", "|---" * (len(tails) + 2) + "|"]
    for head in heads:
        cells, means = [], []
        for tail in tails:
            accs = [r["test"] for r in rows if r["head"] == head and r["tail"] == tail]
            means.append(float(np.mean(accs)))
            spread = f" ({min(accs):.2f}-{max(accs):.2f})" if len(accs) > 1 else ""
            cells.append(f"{means[-1]:.3f}{spread}")
        threshold = (means[0] + chance) / 2
        broken = next((t for t, m in zip(tails, means) if m < threshold and means[0] > chance + 0.1), None)
        if means[0] <= chance + 0.1:
            broken_text = "never learnt"
        else:
            broken_text = f"L={broken}" if broken is not None else f"holds to L={tails[-1]}"
        lines.append(f"| {head} | " + " | ".join(cells) + f" | {broken_text} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache of the synth + feature stores")
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--tails", default="16,64,256,1024", help="distractor tail lengths L")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dims", type=int, default=64, help="PCA dims of the frame features")
    parser.add_argument("--per-class", type=int, default=24, help="synth clips per class")
    parser.add_argument("--train", type=int, default=256, help="probe sequences to train on")
    parser.add_argument("--test", type=int, default=256, help="probe sequences to test on")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = probe_store(args.work, per_class=args.per_class)
    splits, labels = load_clips(store, dims=args.dims, seed=0)
    heads, tails = args.heads.split(","), [int(t) for t in args.tails.split(",")]
    print(f"store {store}; clips train/val/test {[len(s.clips) for s in splits.values()]}; classes {labels}")
    rows = run_probe(
        splits,
        len(labels),
        heads=heads,
        tails=tails,
        seeds=[int(s) for s in args.seeds.split(",")],
        train_count=args.train,
        test_count=args.test,
        epochs=args.epochs,
    )
    print(f"\nmemory probe: test accuracy, mean (min-max) over seeds {args.seeds}; chance {1 / len(labels):.2f}")
    print(probe_table(rows, heads, tails, chance=1 / len(labels)))


if __name__ == "__main__":
    main()
