"""Feature sequences for training: load a feature store, split it, augment, batch by length.

Place in the data flow: ``FeatureStore`` (per-video ``(T, D)`` features) -> **sequences** ->
padded batches for the models in ``vidseq.train`` and ``vidseq.evaluate``. Augmentation works
on the cached sequence (random temporal crops and sub-sampling): nothing is decoded again.
Randomness comes only from the ``np.random.Generator`` a caller passes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseq.errors import DatasetError
from vidseq.features import FeatureStore

SPLITS = ("train", "val", "test")


@dataclass
class SequenceSet:
    """Labelled feature sequences in memory; ``labels`` is the label map (index -> name)."""

    features: list[np.ndarray]
    targets: np.ndarray
    paths: list[str]
    splits: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.features)

    @property
    def feature_dim(self) -> int:
        return int(self.features[0].shape[1])

    def subset(self, split: str) -> "SequenceSet":
        """The sequences of one split ("all" gives everything)."""
        keep = [i for i, s in enumerate(self.splits) if split == "all" or s == split]
        return SequenceSet(
            [self.features[i] for i in keep], self.targets[keep], [self.paths[i] for i in keep],
            [self.splits[i] for i in keep], self.labels,
        )

    def counts(self) -> dict[str, int]:
        return {split: self.splits.count(split) for split in SPLITS}


def load_sequences(store: FeatureStore | str | Path) -> SequenceSet:
    """Every labelled, extracted video of a store (manifest status ``done``)."""
    store = store if isinstance(store, FeatureStore) else FeatureStore.load_existing(store)
    rows = [r for r in store.read_manifest() if r["status"] == "done"]
    unlabelled = [r for r in rows if not r["label"]]
    if unlabelled:
        warnings.warn(f"{store.directory}: {len(unlabelled)} extracted videos have no label (left out)", stacklevel=2)
    rows = [r for r in rows if r["label"]]
    if not rows:
        raise DatasetError(f"{store.directory}: no labelled, extracted videos in the manifest")
    labels = store.labels or sorted({r["label"] for r in rows})
    unknown = sorted({r["label"] for r in rows} - set(labels))
    labels = labels + unknown
    index = {name: i for i, name in enumerate(labels)}
    features = [store.read(store.directory / r["file"]).features for r in rows]
    return SequenceSet(
        features, np.array([index[r["label"]] for r in rows], dtype=np.int64),
        [r["path"] for r in rows], [r["split"] or "" for r in rows], labels,
    )


def assign_splits(
    data: SequenceSet, *, val_fraction: float, test_fraction: float, seed: int
) -> SequenceSet:
    """Fill in missing splits, stratified by class and seeded.

    Videos with no split go to train/val/test by ``val_fraction``/``test_fraction`` when the data
    has no split at all; when it has a train split but no val, part of train becomes val.
    """
    rng = np.random.default_rng(seed)
    splits = list(data.splits)
    has_any = any(splits)
    for target in np.unique(data.targets):
        members = [i for i in np.flatnonzero(data.targets == target) if not splits[i]]
        rng.shuffle(members)
        n_test = 0 if has_any else round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        for position, i in enumerate(members):
            splits[i] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    if "val" not in splits and val_fraction > 0:
        splits = _carve_val(splits, data.targets, val_fraction, rng)
    return SequenceSet(data.features, data.targets, data.paths, splits, data.labels)


def _carve_val(splits: list[str], targets: np.ndarray, fraction: float, rng: np.random.Generator) -> list[str]:
    splits = list(splits)
    for target in np.unique(targets):
        train = [i for i in np.flatnonzero(targets == target) if splits[i] == "train"]
        rng.shuffle(train)
        for i in train[: round(len(train) * fraction)]:
            splits[i] = "val"
    return splits


def augment(sequence: np.ndarray, rng: np.random.Generator, *, crop_min: float, subsample_prob: float) -> np.ndarray:
    """A random temporal crop (at least ``crop_min`` of the steps), then maybe every 2nd step."""
    length = len(sequence)
    keep = max(1, int(np.ceil(length * rng.uniform(crop_min, 1.0))))
    start = int(rng.integers(0, length - keep + 1))
    out = sequence[start : start + keep]
    if len(out) >= 4 and rng.random() < subsample_prob:
        out = out[int(rng.integers(0, 2)) :: 2]
    return out


def views(sequence: np.ndarray, count: int, fraction: float) -> list[np.ndarray]:
    """``count`` evenly placed temporal windows of ``fraction`` of the sequence (test-time views).

    One view is the whole sequence.
    """
    if count == 1:
        return [sequence]
    length = len(sequence)
    keep = max(1, int(round(length * fraction)))
    starts = np.linspace(0, length - keep, count).round().astype(int)
    return [sequence[s : s + keep] for s in starts]


def length_batches(
    lengths: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None
) -> Iterator[np.ndarray]:
    """Index batches of similar lengths (less padding); shuffled within and across when ``rng``."""
    order = np.arange(len(lengths))
    if rng is not None:
        order = rng.permutation(order)
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    yield from batches
