"""The run folder: what a training run records and writes beside its loop.

Place in the data flow: the end of training (sequences -> model -> **run folder**). Used by
``vidseq.training.train`` for every run, single-stream or fused: the record each checkpoint holds beside
the model (labels, splits, the stores of its streams, the extraction recipe), ``config.yaml``,
the val/test reports of the chosen model, atomic writes, and finding the store and an earlier
run in a folder (refusing to start over a run by accident; rank 0 decides under DDP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseq import atomic
from vidseq import metrics as M
from vidseq.config import STREAMS, EvaluateConfig
from vidseq.datasets.splits import split_report
from vidseq.errors import VidseqError
from vidseq.features import FeatureStore, FeatureStoreError
from vidseq.plots import plot_training_curves
from vidseq.training import checkpoint as checkpoints
from vidseq.training import distributed
from vidseq.training.evaluate import evaluate_sequences, write_report
from vidseq.training.sequences import SequenceSet


def write_reports(
    out: Path,
    model: nn.Module,
    data: SequenceSet,
    history: list[dict[str, float]],
    evaluate_config: EvaluateConfig,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The model's val and test metrics, their reports, the curves and the history, into ``out``."""
    val = evaluate_sequences(model, data.subset("val"), device=device)
    write_report(val, out, prefix="val_")
    test_set = data.subset("test")
    test = None
    if len(test_set):
        test = evaluate_sequences(
            model, test_set, device=device, num_views=evaluate_config.views, view_fraction=evaluate_config.view_fraction
        )
        write_report(test, out, prefix="test_")
    plot_training_curves(out / "curves.png", history)
    M.write_json(out / "history.json", history)
    return val, test


def write_config(out: Path, data: SequenceSet, **sections: Any) -> None:
    """config.yaml (the resolved sections) and labels.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "config.yaml", to_yaml_sections(**sections))
    M.write_json(out / "labels.json", data.labels)


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
        raise VidseqError(
            f"{out} already holds a training run: pass --resume to continue it or --overwrite to start again"
        )
    return resume and exists


def exists_on_main(path: Path) -> bool:
    """Whether ``path`` exists, as rank 0 sees it (the same answer on every rank)."""
    return distributed.broadcast(path.exists() if distributed.is_main() else None)


def to_yaml_sections(**sections: Any) -> str:
    """The resolved sections a run used, as YAML (recorded beside its checkpoints)."""
    import yaml

    return yaml.safe_dump({name: cfg.model_dump(mode="json") for name, cfg in sections.items()}, sort_keys=False)


def check_resume_stores(out: Path, stores: dict[str, FeatureStore], given: SequenceSet, *, late: bool) -> None:
    """Before any work: the ``last.pt`` a resume continues (late fusion: each stream run's) was
    trained on these stores, else one clear error (``checkpoints.check_resumable``)."""
    runs = [(out / "last.pt", stores, given.feature_dim)]
    if late:
        dims = dict(given.streams)
        runs = [(out / stream / "last.pt", {stream: store}, dims.get(stream)) for stream, store in stores.items()]
    for path, used, dim in runs:
        if exists_on_main(path):
            checkpoints.check_resumable(checkpoints.load(path), used, feature_dim=dim, checkpoint=path)


def report_splits(given: SequenceSet, data: SequenceSet, out: Path, *, table: bool) -> None:
    """Print the clips per class and split (``table``) and, always, one line per warning of
    ``vidseq.datasets.splits`` (stderr); keep them in ``out/data_warnings.json``."""
    from rich.console import Console
    from rich.markup import escape

    from vidseq.metrics import write_json

    found = split_report(
        [data.labels[t] for t in data.targets],
        data.splits,
        data.groups or None,
        classes=data.labels,
        made=[not split for split in given.splits],
        groups_from="the feature store's manifest",
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "data_warnings.json", found.to_dict())
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    if table:
        console.print(found.text(), markup=False)
    for line in found.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}")
