"""Checkpoints: what a trained model's file holds, and the one place that saves and loads one.

Place in the data flow: training writes checkpoints (``last.pt`` every epoch, ``best.pt``), and
evaluation, prediction, the MLflow bundle and the pipeline read them. A checkpoint holds plain
types and tensors only, so ``torch.load(weights_only=True)`` reads it; its keys:

    model            ``vidseq.models.make_checkpoint``: the model's name, config and weights
    labels           the label map (index -> name)
    splits           video path -> train/val/test, as assigned at training time
    split_ids        video content id (and subject) -> split: the same for any path spelling
    features         the first stream's store folder (absolute)
    feature_key      that store's key
    streams          the streams the model reads, in order
    stream_stores    stream -> absolute store folder;  stream_keys: stream -> store key
    extraction       the recipe that extracts new videos the same way (backbone, sampling, io,
                     extract forward settings; motion and pose settings where the model reads them)
    config           the model and train sections;  clip_seconds: median training clip span
    vidseq_version   the version that wrote it
    (last.pt also: optimizer, scheduler, epoch, history, RNG states: ``train.Run.checkpoint``)

A file that is not a vidseq checkpoint is an error that names it, never PyTorch's advice to
load it unsafely.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq import __version__, atomic
from vidseq.config import ModelConfig, TrainConfig
from vidseq.errors import VidseqError
from vidseq.features import FeatureStore, FeatureStoreError, key_digest
from vidseq.training.sequences import SequenceSet


class CheckpointError(VidseqError):
    """A checkpoint file is missing, unreadable, or not vidseq's."""


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only``); CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"not a vidseq checkpoint: {path}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"not a vidseq checkpoint: {path} (it holds no vidseq model)")
    return state


def save(state: Mapping[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically: a killed save leaves the previous file whole.

    Serialised in memory first, then written by ``vidseq.atomic``: a full disk is an OSError
    (ENOSPC) there, where ``torch.save`` to a path raises a RuntimeError; and a SIGTERM that lands
    during the save stays a clean interrupt (raised from a Python file's ``write`` inside
    ``torch.save`` it came back as PyTorch's "unexpected pos" RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic.write_bytes(path, buffer.getvalue())


def extraction_recipe(stores: Mapping[str, FeatureStore]) -> dict[str, Any]:
    """The recipe a run's checkpoint records to extract new videos as its ``stores`` were.

    The backbone, sampling and io sections of the appearance store (of the first store where
    no appearance store is linked), plus the motion store's ``motion`` section (the flow
    settings) and the pose store's ``pose`` section when the run reads those streams.
    """
    first = next(iter(stores.values()))
    base = stores.get("appearance")
    if base is None:
        try:
            base = first.stream_store("appearance")
        except FeatureStoreError:  # no appearance sibling: the motion store's own recipe
            base = first
    recipe = dict(base.recipe or {})
    for stream in ("motion", "pose"):  # the settings of each computed stream the run reads
        if stream in stores and stores[stream].recipe.get(stream) is not None:
            recipe[stream] = stores[stream].recipe[stream]
    return recipe


def run_record(
    stores: dict[str, FeatureStore], data: SequenceSet, model_config: ModelConfig, config: TrainConfig
) -> dict[str, Any]:
    """What every checkpoint of a run records beside the model (the keys above)."""
    store = next(iter(stores.values()))
    return {
        "labels": data.labels,
        "splits": dict(zip(data.paths, data.splits)),
        "split_ids": dict(zip(data.ids, data.splits)) if data.ids else {},
        "features": str(store.directory.absolute()),
        "feature_key": store.key,
        "extraction": extraction_recipe(stores),
        "streams": list(stores),
        "stream_stores": {name: str(s.directory.absolute()) for name, s in stores.items()},
        "stream_keys": {name: s.key for name, s in stores.items()},
        "config": {"model": model_config.model_dump(mode="json"), "train": config.model_dump(mode="json")},
        "clip_seconds": clip_seconds(store, data),
        "vidseq_version": __version__,
    }


def check_resumable(
    state: dict[str, Any], stores: Mapping[str, FeatureStore], *, feature_dim: int, checkpoint: str | Path
) -> None:
    """Refuse to resume ``checkpoint`` on other stores than its run's (another backbone, sampling
    or feature size): one line naming the run's stores, the ones now given, and the way out.
    A checkpoint that records no store key is not compared."""
    recorded = state.get("stream_keys") or {next(iter(stores)): state.get("feature_key")}
    if not all(recorded.values()):
        return
    now = {name: store.key for name, store in stores.items()}
    if {n: key_digest(k) for n, k in recorded.items()} == {n: key_digest(k) for n, k in now.items()}:
        return
    folders = state.get("stream_stores") or {next(iter(recorded)): state.get("features")}
    was = _stores_text(folders, recorded, (state["model"].get("hparams") or {}).get("input_dim"))
    given = _stores_text({n: s.directory.absolute() for n, s in stores.items()}, now, feature_dim)
    raise CheckpointError(
        f"cannot resume {checkpoint}: its run was trained on {was}, but the store now given is {given}; "
        f"pass --overwrite to start a new run in {Path(checkpoint).parent}, or give the run's own store to resume it"
    )


def _stores_text(folders: Mapping[str, Any], keys: Mapping[str, Any], dim: int | None) -> str:
    """``FOLDER (key DIGEST)`` per stream, then the feature size the model reads."""
    stores = " + ".join(f"{folders.get(name, '?')} (key {key_digest(key)})" for name, key in keys.items())
    return stores + (f", {dim} features" if dim is not None else "")


def clip_seconds(store: FeatureStore, data: SequenceSet, *, most: int = 200) -> float | None:
    """The median time span of the training clips (read from up to ``most`` stored entries): the
    window a model naturally reads, which prediction uses as its default window."""
    train = {p for p, split in zip(data.paths, data.splits) if split == "train"}
    rows = [r for r in store.read_manifest() if r["path"] in train and r.get("file")][:most]
    spans = []
    for row in rows:
        try:
            with np.load(store.directory / row["file"], allow_pickle=False) as entry:
                times = np.asarray(entry["timestamps"], dtype=np.float64)
        except (OSError, ValueError, KeyError):
            continue
        if len(times) >= 2:
            spans.append(float(times[-1] - times[0] + np.median(np.diff(times))))
    return float(np.median(spans)) if spans else None


def recorded_stores(state: dict[str, Any], checkpoint: str | Path) -> dict[str, Path]:
    """The feature store of each stream a checkpoint was trained on, wherever it is opened from.

    Checkpoints record absolute store folders and each store's key; one written before that
    (a folder relative to where training ran) is looked up from the working directory, then
    from the checkpoint's folder and its parents. A store that is not there is an error naming
    the folder, its key digest and the way out (``--features``)."""
    streams = list(state.get("streams") or ["appearance"])
    folders = state.get("stream_stores") or {streams[0]: state["features"]}
    keys = state.get("stream_keys") or {streams[0]: state.get("feature_key")}
    found = {}
    for stream, folder in folders.items():
        folder = Path(folder)
        candidates = (
            [folder]
            if folder.is_absolute()
            else [folder, *(parent / folder for parent in Path(checkpoint).absolute().parents)]
        )
        hit = next((c for c in candidates if (c / "store.json").is_file()), None)
        if hit is None:
            digest = key_digest(keys[stream]) if keys.get(stream) else "unknown"
            raise CheckpointError(
                f"{checkpoint}: its {stream} feature store {folder} (key {digest}) is not there: it was moved "
                "or deleted; pass --features with the store's folder (the one whose name ends in that key)"
            )
        found[stream] = hit
    return found
