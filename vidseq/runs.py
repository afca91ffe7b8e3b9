"""The run folder: what a training run records and writes beside its loop.

Place in the data flow: the end of training (sequences -> model -> **run folder**). Used by
``vidseq.train`` for every run, single-stream or fused: the record each checkpoint holds beside
the model (labels, splits, the stores of its streams, the extraction recipe), ``config.yaml``,
the val/test reports of the chosen model, atomic writes, and finding the store and an earlier
run in a folder (refusing to start over a run by accident; rank 0 decides under DDP).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq import __version__, distributed
from vidseq import metrics as M
from vidseq.config import STREAMS, EvaluateConfig, ModelConfig, TrainConfig
from vidseq.errors import VidseqError
from vidseq.evaluate import evaluate_sequences, write_report
from vidseq.features import FeatureStore, FeatureStoreError
from vidseq.plots import plot_training_curves
from vidseq.sequences import SequenceSet


def write_reports(out: Path, model: nn.Module, data: SequenceSet, history: list[dict[str, float]],
                   evaluate_config: EvaluateConfig, device: torch.device,
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The model's val and test metrics, their reports, the curves and the history, into ``out``."""
    val = evaluate_sequences(model, data.subset("val"), device=device)
    write_report(val, out, prefix="val_")
    test_set = data.subset("test")
    test = None
    if len(test_set):
        test = evaluate_sequences(model, test_set, device=device, num_views=evaluate_config.views,
                                  view_fraction=evaluate_config.view_fraction)
        write_report(test, out, prefix="test_")
    plot_training_curves(out / "curves.png", history)
    M.write_json(out / "history.json", history)
    return val, test


def extraction_recipe(stores: Mapping[str, FeatureStore]) -> dict[str, Any]:
    """The recipe a run's checkpoint records to extract new videos as its ``stores`` were.

    The backbone, sampling and io sections of the appearance store (of the motion store where
    no appearance store is linked), plus the motion store's ``motion`` section (the flow
    settings) when the run reads motion.
    """
    first = next(iter(stores.values()))
    base = stores.get("appearance")
    if base is None:
        try:
            base = first.stream_store("appearance")
        except FeatureStoreError:  # no appearance sibling: the motion store's own recipe
            base = first
    recipe = dict(base.recipe or {})
    if "motion" in stores and stores["motion"].recipe.get("motion") is not None:
        recipe["motion"] = stores["motion"].recipe["motion"]
    return recipe


def run_record(stores: dict[str, FeatureStore], data: SequenceSet, model_config: ModelConfig,
                config: TrainConfig) -> dict[str, Any]:
    """What every checkpoint of a run records beside the model: labels, splits, the stores of its
    streams (``features``: the first's) and the recipe to extract new videos the same way."""
    store = next(iter(stores.values()))
    return {
        "labels": data.labels, "splits": dict(zip(data.paths, data.splits)), "features": str(store.directory.absolute()),
        "feature_key": store.key, "extraction": extraction_recipe(stores), "streams": list(stores),
        "stream_stores": {name: str(s.directory.absolute()) for name, s in stores.items()},
        "stream_keys": {name: s.key for name, s in stores.items()},
        "split_ids": dict(zip(data.ids, data.splits)) if data.ids else {},
        "config": {"model": model_config.model_dump(mode="json"), "train": config.model_dump(mode="json")},
        "clip_seconds": clip_seconds(store, data), "vidseq_version": __version__,
    }


def write_config(out: Path, data: SequenceSet, **sections: Any) -> None:
    """config.yaml (the resolved sections) and labels.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", to_yaml_sections(**sections).encode())
    M.write_json(out / "labels.json", data.labels)


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


def features_dir(features: str | Path | None) -> Path:
    """The store folder ``features`` names: a store, or a root holding one (or one extraction's
    linked streams: then its appearance store, whose links lead to the others)."""
    if features is None:
        raise VidseqError("no feature store given: pass the folder `vidseq extract` wrote (train.features)")
    path = Path(features)
    if not (path / "store.json").is_file():
        stores = sorted(p.parent for p in path.glob("*/store.json"))
        if len(stores) == 1:
            return stores[0]
        linked = _linked_appearance(stores)
        if linked is not None:
            return linked
        hint = f"; it holds {len(stores)} stores, pick one: {', '.join(map(str, stores))}" if stores else ""
        raise VidseqError(f"{path}: not a feature store{hint}")
    return path


def _linked_appearance(folders: list[Path]) -> Path | None:
    """The one appearance store among ``folders`` that links every other one, if there is one."""
    try:
        stores = [FeatureStore.load_existing(folder) for folder in folders]
    except (FeatureStoreError, ValueError, KeyError):
        return None
    appearance = [s for s in stores if s.stream == "appearance"]
    if len(appearance) != 1:
        return None
    others = {s.directory.name for s in stores} - {appearance[0].directory.name}
    return appearance[0].directory if others <= set(appearance[0].links.values()) else None


def holds_run(out: str | Path) -> bool:
    """Whether ``out`` holds a training run: its ``last.pt``, or a stream run's (late fusion)."""
    out = Path(out)
    return any((folder / "last.pt").exists() for folder in (out, *(out / stream for stream in STREAMS)))


def check_out(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether to continue the run in ``out``; refuses to start over one by accident.

    Rank 0 looks and tells the others, so every rank gives the same answer.
    """
    exists = distributed.broadcast(holds_run(out) if distributed.is_main() else None)
    if exists and not (resume or overwrite):
        raise VidseqError(f"{out} already holds a training run: pass --resume to continue it or --overwrite to start again")
    return resume and exists


def exists_on_main(path: Path) -> bool:
    """Whether ``path`` exists, as rank 0 sees it (the same answer on every rank)."""
    return distributed.broadcast(path.exists() if distributed.is_main() else None)


def to_yaml_sections(**sections: Any) -> str:
    """The resolved sections a run used, as YAML (recorded beside its checkpoints)."""
    import yaml

    return yaml.safe_dump({name: cfg.model_dump(mode="json") for name, cfg in sections.items()}, sort_keys=False)


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
