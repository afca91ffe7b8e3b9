"""Feature sequences for training: load a feature store, split it, augment, batch by length.

Place in the data flow: ``FeatureStore`` (per-video ``(T, D)`` features) -> **sequences** ->
padded batches for the models in ``vidseq.training.train`` and ``vidseq.training.evaluate``. Augmentation works
on the cached sequence (random temporal crops and sub-sampling): nothing is decoded again.
Randomness comes only from the ``np.random.Generator`` a caller passes (or one seeded here).

Splits vidseq makes (``assign_splits``) move whole groups (the manifest's ``group``: videos of
one source); a video without a group is a group of its own.

Streams: a root may hold one store per stream (``appearance``: a backbone's vectors;
``motion``: pooled optical flow; ``trajectory``: per-person stores' box tracks), linked to each other.
A per-person store (``vidseq.features.actor_extraction``) holds an entry per tracked person; with
clip labels only each clip's main actor is read (``actors.main``). ``load_sequences(store, streams)`` reads
the videos done in every asked stream and puts their vectors side by side per frame, always in
the canonical order (appearance, then motion): ``SequenceSet.streams`` says which dims are whose.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vidseq.config import STREAMS
from vidseq.errors import DatasetError
from vidseq.features import FeatureStore
from vidseq.features.actors import main_actor
from vidseq.features.identity import WHOLE_FRAME

SPLITS = ("train", "val", "test")
StoreLike = FeatureStore | str | Path


@dataclass
class SequenceSet:
    """Labelled feature sequences in memory; ``labels`` is the label map (index -> name).

    ``groups``: each video's source ("" none); empty (the default) means no video has one.
    ``streams``: ``(name, dims)`` of each stream in the feature vectors, in their order (empty:
    not known, e.g. a set built by hand). ``ids``: each video's identity in its store (content id
    and subject; empty for a set built by hand): the same whatever path spelling reached it."""

    features: list[np.ndarray]
    targets: np.ndarray
    paths: list[str]
    splits: list[str]
    labels: list[str]
    groups: list[str] = field(default_factory=list)
    streams: list[tuple[str, int]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # each video's content id (and subject) in its store

    def __len__(self) -> int:
        return len(self.features)

    @property
    def feature_dim(self) -> int:
        return int(self.features[0].shape[1])

    def subset(self, split: str) -> SequenceSet:
        """The sequences of one split ("all" gives everything)."""
        keep = [i for i, s in enumerate(self.splits) if split == "all" or s == split]
        return SequenceSet(
            [self.features[i] for i in keep],
            self.targets[keep],
            [self.paths[i] for i in keep],
            [self.splits[i] for i in keep],
            self.labels,
            [self.groups[i] for i in keep] if self.groups else [],
            list(self.streams),
            [self.ids[i] for i in keep] if self.ids else [],
        )

    def stream_dims(self, stream: str) -> tuple[int, int]:
        """``(start, stop)`` of ``stream``'s dims in the feature vectors."""
        start = 0
        for name, dims in self.streams:
            if name == stream:
                return start, start + dims
            start += dims
        raise DatasetError(
            f"no {stream} stream in these sequences (they hold {self.stream_names or 'unnamed vectors'})"
        )

    @property
    def stream_names(self) -> list[str]:
        return [name for name, _ in self.streams]

    def stream(self, stream: str) -> SequenceSet:
        """The same videos with only ``stream``'s dims (one stream's model of a late fusion)."""
        start, stop = self.stream_dims(stream)
        return replace(self, features=[f[:, start:stop] for f in self.features], streams=[(stream, stop - start)])

    def counts(self) -> dict[str, int]:
        return {split: self.splits.count(split) for split in SPLITS}


def canonical_streams(streams: Iterable[str]) -> list[str]:
    """``streams`` in the order their vectors are concatenated (appearance, then motion)."""
    streams = list(streams)
    unknown = sorted(set(streams) - set(STREAMS))
    if unknown:
        raise DatasetError(f"unknown stream(s) {unknown}; valid streams: {', '.join(STREAMS)}")
    return [name for name in STREAMS if name in streams]


def stream_stores(
    store: StoreLike | Mapping[str, StoreLike],
    streams: Iterable[str] | None = None,
) -> dict[str, FeatureStore]:
    """The store of each stream, in canonical order.

    ``store``: any stream's store of a root (the others are its linked siblings; a missing link
    is a FeatureStoreError that says how to extract it), or a mapping ``stream -> store``.
    ``streams=None``: the store's own stream (a mapping: all of its streams).
    """
    if isinstance(store, Mapping):
        given = {name: _open(s) for name, s in store.items()}
        names = canonical_streams(given if streams is None else streams)
        missing = [name for name in names if name not in given]
        if missing:
            raise DatasetError(f"no store given for the stream(s) {missing}; given: {sorted(given)}")
        return {name: given[name] for name in names}
    store = _open(store)
    names = canonical_streams([store.stream] if streams is None else streams)
    return {name: store.stream_store(name) for name in names}


def load_sequences(store: StoreLike | Mapping[str, StoreLike], streams: Iterable[str] | None = None) -> SequenceSet:
    """Every labelled video extracted (manifest status ``done``) in each of ``streams``.

    ``store`` and ``streams`` as in ``stream_stores`` (default: the store's own stream). Labels,
    splits and groups come from the first stream's manifest; a video missing from another
    stream is left out (a warning gives the count). Several streams: each frame's vectors are
    concatenated in canonical order, and a video whose streams sampled other frames is an error.
    """
    stores = stream_stores(store, streams)
    primary = next(iter(stores.values()))
    rows = [r for r in primary.read_manifest() if r["status"] == "done"]
    unlabelled = [r for r in rows if not r["label"]]
    if unlabelled:
        warnings.warn(f"{primary.directory}: {len(unlabelled)} extracted videos have no label (left out)", stacklevel=2)
    rows = _main_actors(primary, [r for r in rows if r["label"]])
    entries = _stream_entries(stores, rows)
    rows = [r for r in rows if _ident(r) in entries]
    if not rows:
        raise DatasetError(f"{primary.directory}: no labelled, extracted videos in the manifest")
    labels = primary.labels or sorted({r["label"] for r in rows})
    unknown = sorted({r["label"] for r in rows} - set(labels))
    labels = labels + unknown
    index = {name: i for i, name in enumerate(labels)}
    features, dims = _read_streams(stores, [entries[_ident(r)] for r in rows], [r["path"] for r in rows])
    return SequenceSet(
        features,
        np.array([index[r["label"]] for r in rows], dtype=np.int64),
        [r["path"] for r in rows],
        [r["split"] or "" for r in rows],
        labels,
        [r.get("group") or "" for r in rows],
        list(zip(stores, dims)),
        [_ident(r) for r in rows],
    )


def _main_actors(store: FeatureStore, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A per-person store's rows with clip labels: only each clip's main actor (the rule of the
    store's ``actors.main``: longest, largest or most central track; see ``actors.main_actor``).
    Tracks labelled one by one (``actors.labels``) are all kept."""
    tracks: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if (row.get("subject") or WHOLE_FRAME) != WHOLE_FRAME:
            tracks.setdefault(row["video"], []).append(row)
    if not tracks:
        return rows
    rule = (store.recipe.get("actors") or {}).get("main", "longest")
    left_out = set()
    for video_rows in tracks.values():
        if len(video_rows) > 1:
            metas = [_entry_meta(store.directory / r["file"]) for r in video_rows]
            if any(meta.get("labels") == "person" for meta in metas):
                continue  # each person has a label of their own (actors.labels): all are read
            keep = main_actor([meta["track"] for meta in metas], rule)
            left_out.update(id(r) for i, r in enumerate(video_rows) if i != keep)
    return [row for row in rows if id(row) not in left_out]


def _entry_meta(entry: Path) -> dict:
    """The meta of an entry (only it is read): a per-person entry's ``track`` summary, ``labels``."""
    with np.load(entry) as data:
        return json.loads(str(data["meta"]))


def _ident(row: dict[str, str]) -> str:
    """A manifest row's video: its content id (and subject) where recorded, else its path."""
    return f"{row['video']}~{row.get('subject') or 'frame'}" if row.get("video") else row["path"]


def _open(store: StoreLike) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore.load_existing(store)


def _stream_entries(stores: dict[str, FeatureStore], rows: list[dict[str, str]]) -> dict[str, list[Path]]:
    """``path -> [entry file of each stream]`` for the videos of ``rows`` done in every stream;
    warns with the count of those left out."""
    entries = {_ident(r): [next(iter(stores.values())).directory / r["file"]] for r in rows}
    for name, store in list(stores.items())[1:]:
        done = {_ident(r): store.directory / r["file"] for r in store.read_manifest() if r["status"] == "done"}
        missing = [path for path in entries if path not in done]
        if missing:
            warnings.warn(
                f"{store.directory}: {len(missing)} of {len(entries)} videos are not done in the {name} "
                f"stream (left out); extract them again with the {name} stream",
                stacklevel=3,
            )
        entries = {path: files + [done[path]] for path, files in entries.items() if path in done}
    return entries


def _read_streams(
    stores: dict[str, FeatureStore],
    entries: list[list[Path]],
    paths: list[str],
) -> tuple[list[np.ndarray], list[int]]:
    """Each video's streams side by side per frame ``(T, D_1 + D_2 ...)``, and each stream's ``D``."""
    names = list(stores)
    features, dims = [], None
    for path, files in zip(paths, entries):
        items = [FeatureStore.read(file) for file in files]
        for name, item in zip(names[1:], items[1:]):
            if not np.array_equal(item.frame_indices, items[0].frame_indices):
                raise DatasetError(
                    f"{path}: the {name} stream holds other frames ({len(item.frame_indices)}) than the {names[0]} "
                    f"stream ({len(items[0].frame_indices)}); extract both streams again in one run (--force)"
                )
        dims = dims or [int(item.features.shape[1]) for item in items]
        features.append(items[0].features if len(items) == 1 else np.concatenate([i.features for i in items], axis=1))
    return features, dims or []


def assign_splits(data: SequenceSet, *, val_fraction: float, test_fraction: float, seed: int) -> SequenceSet:
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
    return replace(data, splits=splits)


def _group_units(data: SequenceSet) -> list[list[int]]:
    """Video indices per group, in order of first appearance; a video without a group alone."""
    units: dict[object, list[int]] = {}
    for i in range(len(data)):
        group = data.groups[i] if data.groups else ""
        units.setdefault(group or ("", i), []).append(i)
    return list(units.values())


def _distribute(
    units: list[list[int]],
    targets: np.ndarray,
    fractions: dict[str, float],
    splits: list[str],
    rng: np.random.Generator,
) -> None:
    """Give each unit (all its videos) one of test/val/train, in place.

    Greedy: units in a seeded shuffle, larger first, each to the side where it most lowers the
    squared distance to the targets (``fraction`` x the units' videos), per class and in total.
    """
    sides = ("test", "val", "train")
    share = np.array([fractions["test"], fractions["val"], 1.0 - fractions["test"] - fractions["val"]])
    num_classes = int(targets.max()) + 1 if len(targets) else 0
    # per unit: its videos per class, then its size (the "total" column)
    counts = [np.append(np.bincount(targets[unit], minlength=num_classes), len(unit)).astype(float) for unit in units]
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
    keep = max(1, round(length * fraction))
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
