"""Evaluation: a trained temporal model on stored feature sequences -> metrics and report files.

Place in the data flow: sequences + a model -> logits -> **evaluate** -> metrics, confusion
matrix (PNG, CSV), per-class report. Test-time averaging: each video is seen through several
temporal views of its cached sequence and the class probabilities are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq import metrics as M
from vidseq.config import EvaluateConfig
from vidseq.errors import VidseqError
from vidseq.models import load_model, pad_sequences
from vidseq.outputs import check_writable
from vidseq.plots import plot_confusion
from vidseq.training import checkpoint as checkpoints
from vidseq.training.sequences import SequenceSet, length_batches, load_sequences, views

EVAL_BATCH = 128


@dataclass
class EvalResult:
    """Metrics of one split, and where the report files went."""

    split: str
    metrics: dict[str, Any]
    out: Path | None

    def summary(self) -> str:
        return M.format_report(self.metrics)


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    sequences: list[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    num_views: int = 1,
    view_fraction: float = 0.8,
) -> np.ndarray:
    """Class probabilities ``(N, C)``, averaged over ``num_views`` temporal views per sequence."""
    model.eval()
    per_view = []
    for view in range(num_views):
        clips = [views(seq, num_views, view_fraction)[view] for seq in sequences]
        per_view.append(_probabilities(model, clips, torch.device(device)))
    return M.average_views(per_view)


def _probabilities(model: nn.Module, clips: list[np.ndarray], device: torch.device) -> np.ndarray:
    lengths = np.array([len(c) for c in clips])
    out = [None] * len(clips)
    for batch in length_batches(lengths, EVAL_BATCH):
        padded, lens = pad_sequences([clips[i] for i in batch])
        logits = model(padded.to(device), lens).float().cpu().numpy()
        for row, i in enumerate(batch):
            out[i] = logits[row]
    return M.softmax(np.stack(out))


def evaluate_sequences(
    model: nn.Module,
    data: SequenceSet,
    *,
    device: torch.device | str = "cpu",
    num_views: int = 1,
    view_fraction: float = 0.8,
) -> dict[str, Any]:
    """Metrics (and mean cross-entropy ``loss``) of ``model`` on ``data``."""
    if len(data) == 0:
        raise VidseqError("nothing to evaluate: the split is empty")
    probs = predict_proba(model, data.features, device=device, num_views=num_views, view_fraction=view_fraction)
    result = M.classification_metrics(probs, data.targets, labels=data.labels)
    picked = probs[np.arange(len(probs)), data.targets]
    result["loss"] = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return result


def write_report(result: dict[str, Any], out: str | Path, *, prefix: str = "") -> Path:
    """Confusion matrix (PNG + CSV), per-class report and metrics.json into ``out``."""
    out = Path(out)
    labels = [row["label"] for row in result["per_class"]]
    M.write_confusion_csv(out / f"{prefix}confusion.csv", result["confusion"], labels)
    plot_confusion(out / f"{prefix}confusion.png", result["confusion"], labels)
    M.write_per_class_report(out / f"{prefix}per_class.csv", result)
    M.write_json(out / f"{prefix}metrics.json", M.scalar_metrics(result))
    return out


def evaluate(
    checkpoint: str | Path,
    *,
    config: EvaluateConfig | None = None,
    features: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate a checkpoint of ``vidseq train`` on a split of its feature store(s).

    The streams the checkpoint records (``streams``; one made before streams: appearance) are
    read from the stores it was trained on, or from ``features`` and its linked streams, and
    concatenated as in training. The split assignment recorded at training time is reused, so
    ``test`` is the same videos. Reports go to ``out`` (default: beside the checkpoint, in
    ``eval-<split>/``).
    """
    config = config or EvaluateConfig()
    state = checkpoints.load(checkpoint)
    target = Path(out) if out is not None else Path(checkpoint).parent / f"eval-{config.split}"
    check_writable(target, what="evaluate --out, the report folder")
    streams = list(state.get("streams") or ["appearance"])
    source = features or checkpoints.recorded_stores(state, checkpoint)
    data = _with_recorded_splits(load_sequences(source, streams), state)
    subset = data.subset(config.split)
    if len(subset) == 0:
        raise VidseqError(f"{checkpoint}: the {config.split!r} split has no videos in {source}")
    model = load_model(state["model"]).to(device)
    result = evaluate_sequences(
        model, subset, device=device, num_views=config.views, view_fraction=config.view_fraction
    )
    write_report(result, target)
    return EvalResult(config.split, result, target)


def _with_recorded_splits(data: SequenceSet, state: dict[str, Any]) -> SequenceSet:
    """Use the label map and split of each video as recorded in the checkpoint (by the video's
    content id where both record it, so a new path spelling keeps its split; else by path)."""
    by_id = state.get("split_ids") or {}
    recorded = state.get("splits", {})
    if by_id and data.ids:
        recorded = {path: by_id.get(ident, recorded.get(path, "")) for path, ident in zip(data.paths, data.ids)}
    labels = state["labels"]
    index = {name: i for i, name in enumerate(labels)}
    keep = [i for i, p in enumerate(data.paths) if data.labels[data.targets[i]] in index]
    return SequenceSet(
        [data.features[i] for i in keep],
        np.array([index[data.labels[data.targets[i]]] for i in keep], dtype=np.int64),
        [data.paths[i] for i in keep],
        [recorded.get(data.paths[i], data.splits[i]) for i in keep],
        labels,
        [data.groups[i] for i in keep] if data.groups else [],
        list(data.streams),
        [data.ids[i] for i in keep] if data.ids else [],
    )
