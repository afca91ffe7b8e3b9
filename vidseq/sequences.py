"""Feature sequences for training: load a feature store, split it, augment, batch by length.

Place in the data flow: ``FeatureStore`` (per-video ``(T, D)`` features) -> **sequences** ->
padded batches for the models in ``vidseq.train`` and ``vidseq.evaluate``. Augmentation works
on the cached sequence (random temporal crops and sub-sampling): nothing is decoded again.
Randomness comes only from the ``np.random.Generator`` a caller passes (or one seeded here).

Splits vidseq makes (``assign_splits``) move whole groups (the manifest's ``group``: videos of
one source); a video without a group is a group of its own.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidseq.errors import DatasetError
from vidseq.features import FeatureStore

SPLITS = ("train", "val", "test")


@dataclass
class SequenceSet:
    """Labelled feature sequences in memory; ``labels`` is the label map (index -> name).

    ``groups``: each video's source ("" none); empty (the default) means no video has one."""

    features: list[np.ndarray]
    targets: np.ndarray
    paths: list[str]
    splits: list[str]
    labels: list[str]
    groups: list[str] = field(default_factory=list)

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
            [self.splits[i] for i in keep], self.labels, [self.groups[i] for i in keep] if self.groups else [],
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
        [r.get("group") or "" for r in rows],
    )


def assign_splits(
    data: SequenceSet, *, val_fraction: float, test_fraction: float, seed: int
) -> SequenceSet:
    """Fill in missing splits by whole groups, balanced by class, deterministic from ``seed``.

    With no split at all, groups go to test/val/train by ``test_fraction``/``val_fraction`` (as
    close as whole groups allow). With some splits: a video without one joins its group's side,
    groups with no split at all go to val/train, and where there is still no val, part of the
    train groups becomes val. A group is never put on two sides (one that an explicit split put
    there, accepted with data.allow_split_leak, stays as it was).
    """
    rng = np.random.default_rng(seed)
    splits = list(data.splits)
    units = _group_units(data)
    has_any = any(splits)
    free = []
    for unit in units:
        sides = Counter(splits[i] for i in unit if splits[i])
        if not sides:
            free.append(unit)
        for i in unit if sides else ():  # a video without a split joins its group
            splits[i] = splits[i] or sides.most_common(1)[0][0]
    fractions = {"test": 0.0 if has_any else test_fraction, "val": val_fraction}
    _distribute(free, data.targets, fractions, splits, rng)
    if "val" not in splits and val_fraction > 0:
        train = [unit for unit in units if all(splits[i] == "train" for i in unit)]
        _distribute(train, data.targets, {"test": 0.0, "val": val_fraction}, splits, rng)
    return SequenceSet(data.features, data.targets, data.paths, splits, data.labels, data.groups)


def _group_units(data: SequenceSet) -> list[list[int]]:
    """Video indices per group, in order of first appearance; a video without a group alone."""
    units: dict[object, list[int]] = {}
    for i in range(len(data)):
        group = data.groups[i] if data.groups else ""
        units.setdefault(group or ("", i), []).append(i)
    return list(units.values())


def _distribute(units: list[list[int]], targets: np.ndarray, fractions: dict[str, float],
                splits: list[str], rng: np.random.Generator) -> None:
    """Give each unit (all its videos) one of test/val/train, in place.

    Greedy: units in a seeded shuffle, larger first, each to the side where it most lowers the
    squared distance to the targets (``fraction`` x the units' videos), per class and in total.
    """
    sides = ("test", "val", "train")
    share = np.array([fractions["test"], fractions["val"], 1.0 - fractions["test"] - fractions["val"]])
    num_classes = int(targets.max()) + 1 if len(targets) else 0
    # per unit: its videos per class, then its size (the "total" column)
    counts = [np.append(np.bincount(targets[unit], minlength=num_classes), len(unit)).astype(float)
              for unit in units]
    goal = share[:, None] * sum(counts, np.zeros(num_classes + 1))
    have = np.zeros_like(goal)
    order = rng.permutation(len(units))
    for k in sorted(order, key=lambda k: -len(units[k])):  # stable: ties keep the shuffled order
        gain = (goal - have) @ counts[k] - np.where(share > 0, 0.0, np.inf)
        side = int(np.argmax(gain))
        have[side] += counts[k]
        for i in units[k]:
            splits[i] = sides[side]


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
