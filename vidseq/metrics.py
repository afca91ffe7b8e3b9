"""Classification metrics and report files: class scores + targets -> numbers and tables.

Place in the data flow: videos -> frames -> features -> sequences -> logits -> **metrics** ->
artifacts. Pure numpy (no torch, no scikit-learn, no matplotlib: the plots of these numbers
are ``vidseq.plots``). The evaluation loop calls ``classification_metrics``; tracking logs
``scalar_metrics`` and the files written here.

Definitions (N samples, C classes; ``confusion[i, j]`` = samples of true class i predicted j):
- ``accuracy``: top-1; the prediction is the arg-max, ties going to the lowest class index.
- ``top5``: top-k accuracy with ``k = min(5, C)`` (top-2 for two classes). Ties rank the lower
  class index first, the same rule as top-1, so top-1 computed this way equals ``accuracy``.
- ``mean_class_accuracy``: the mean recall over the classes present in the targets
  (scikit-learn's ``balanced_accuracy_score``). A class absent from the targets has no recall.
- ``macro_f1`` / ``macro_precision`` / ``macro_recall``: the mean over the classes present in
  the targets *or* the predictions, as ``f1_score(average='macro')`` does when ``labels`` is
  not given, with 0 for an undefined ratio. Choice: a class the model predicts but that never
  occurs still counts, with F1 = 0, so false alarms into absent classes lower the score; a
  class neither seen nor predicted is left out, so evaluating a subset of the classes does not
  pull the score down. ``macro_recall`` differs from ``mean_class_accuracy`` only there.
- ``per_class``: every one of the C classes, in label order; a ratio with a zero denominator
  (no support, never predicted) is 0.0, never NaN, and raises no warning.

Every file is written atomically (temporary file in the same folder + ``os.replace``), with
its parent folders created.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import atomic
from vidseq.errors import VidseqError

TOP_K = 5


# ------------------------------------------------------------------ probabilities


def softmax(logits: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (the max is subtracted before ``exp``).

    ``-inf`` logits (masked classes) get probability 0; NaN, ``+inf`` or a row with no finite
    logit raise a VidseqError (a diverged model should fail loudly, not score as class 0).
    """
    x = np.asarray(logits)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    if np.isnan(x).any() or np.isposinf(x).any():
        raise VidseqError("softmax: the logits contain NaN or +inf (did training diverge?)")
    top = np.max(x, axis=axis, keepdims=True)
    if not np.isfinite(top).all():
        raise VidseqError("softmax: a row of logits has no finite value (all -inf)")
    e = np.exp(x - top)
    return e / np.sum(e, axis=axis, keepdims=True)


def average_views(probabilities_per_view: Sequence[np.ndarray]) -> np.ndarray:
    """Test-time augmentation: the mean of V ``(N, C)`` softmax outputs -> ``(N, C)``.

    The views must already be probabilities (rows >= 0 summing to 1, within 1e-3): averaging
    logits is a different (and scale-dependent) rule, so logits are rejected; apply
    ``softmax`` first.
    """
    if len(probabilities_per_view) == 0:
        raise VidseqError("average_views: no views given; pass a list of (N, C) arrays")
    first = np.asarray(probabilities_per_view[0])
    total = np.zeros(first.shape, dtype=np.result_type(first.dtype, np.float32))
    for i, view in enumerate(probabilities_per_view):
        view = np.asarray(view)
        if view.ndim != 2 or view.shape != first.shape:
            raise VidseqError(
                f"average_views: view {i} has shape {view.shape}; every view must be (N, C) like view 0 {first.shape}"
            )
        if (view < 0).any() or not np.allclose(view.sum(axis=1), 1.0, atol=1e-3):
            raise VidseqError(
                f"average_views: view {i} is not probabilities (rows must be "
                ">= 0 and sum to 1); apply vidseq.metrics.softmax to logits first"
            )
        total += view
    return total / len(probabilities_per_view)


# ------------------------------------------------------------------ metrics


def classification_metrics(probabilities: np.ndarray, targets: np.ndarray, *, labels: Sequence[str]) -> dict[str, Any]:
    """Scores ``(N, C)`` and integer targets ``(N,)`` -> the metrics of the module docstring.

    ``probabilities`` may be any scores whose order ranks the classes (softmax outputs or
    logits). Returns ``accuracy``, ``top5``, ``mean_class_accuracy``, ``macro_f1``,
    ``macro_precision``, ``macro_recall`` (floats), ``num_samples`` (int), ``confusion``
    (``(C, C)`` int64, rows true, columns predicted) and ``per_class`` (one dict per class:
    label, support, precision, recall, f1).
    """
    scores, targets, labels = _check_inputs(probabilities, targets, labels)
    predictions = np.argmax(scores, axis=1)
    confusion = _confusion_matrix(targets, predictions, num_classes=len(labels))
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision, recall = ratio(tp, predicted), ratio(tp, support)
    f1 = ratio(2 * tp, support + predicted)  # = harmonic mean of precision and recall
    in_targets, seen = support > 0, (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / len(targets)),
        "top5": _top_k_accuracy(scores, targets, k=min(TOP_K, len(labels))),
        "mean_class_accuracy": float(recall[in_targets].mean()),
        "macro_f1": float(f1[seen].mean()),
        "macro_precision": float(precision[seen].mean()),
        "macro_recall": float(recall[seen].mean()),
        "num_samples": len(targets),
        "confusion": confusion,
        "per_class": [
            {"label": name, "support": int(s), "precision": float(p), "recall": float(r), "f1": float(f)}
            for name, s, p, r, f in zip(labels, support, precision, recall, f1)
        ],
    }


def _confusion_matrix(targets: np.ndarray, predictions: np.ndarray, *, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: ``[i, j]`` = samples of true class i predicted as class j."""
    flat = targets.astype(np.int64) * num_classes + predictions.astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _top_k_accuracy(scores: np.ndarray, targets: np.ndarray, *, k: int) -> float:
    """Share of samples whose target ranks among the ``k`` best scores (ties: lower index
    first, as ``argmax``)."""
    rows = np.arange(len(targets))
    target_score = scores[rows, targets][:, None]
    ahead = (scores > target_score) | ((scores == target_score) & (np.arange(scores.shape[1]) < targets[:, None]))
    return float(np.mean(ahead.sum(axis=1) < k))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries as floats, for ``mlflow.log_metrics`` (arrays, lists, strings and
    booleans, such as ``confusion`` and ``per_class``, are left out)."""
    numbers = (int, float, np.integer, np.floating)
    return {
        str(key): float(value)
        for key, value in metrics.items()
        if isinstance(value, numbers) and not isinstance(value, bool)
    }


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0.0 (and no warning) where the denominator is 0."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    return np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)


def _check_inputs(probabilities: Any, targets: Any, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    scores, targets = np.asarray(probabilities), np.asarray(targets)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise VidseqError(f"probabilities must be a 2-D (N, C) array, got shape {scores.shape}")
    if scores.shape[0] == 0 or targets.size == 0:
        raise VidseqError("no samples to score: probabilities and targets are empty")
    if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
        raise VidseqError("probabilities must be finite numbers (found NaN, inf or non-numbers)")
    if targets.shape != (scores.shape[0],):
        raise VidseqError(
            f"targets must have shape ({scores.shape[0]},) to match probabilities {scores.shape}, got {targets.shape}"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise VidseqError(f"targets must be integer class indices, got dtype {targets.dtype}")
    labels = [str(name) for name in labels]
    if len(labels) != scores.shape[1]:
        raise VidseqError(
            f"{len(labels)} labels for {scores.shape[1]} classes: labels must "
            "name every column of probabilities, in order"
        )
    if len(set(labels)) != len(labels):
        raise VidseqError(f"labels must be unique, got {labels}")
    if targets.min() < 0 or targets.max() >= len(labels):
        raise VidseqError(f"targets must be in [0, {len(labels)}), got values from {targets.min()} to {targets.max()}")
    return scores, targets.astype(np.int64), labels


# ------------------------------------------------------------------ text and files


def format_report(metrics: Mapping[str, Any]) -> str:
    """A console table: one row per class, a macro row, then the summary numbers."""
    rows = [*metrics["per_class"], _macro_row(metrics)]
    width = max(len("label"), *(len(str(row["label"])) for row in rows))
    lines = [f"{'label':<{width}}  {'support':>7}  {'precision':>9}  {'recall':>6}  {'f1':>6}"]
    for row in rows:
        if row is rows[-1]:
            lines.append("-" * len(lines[0]))
        lines.append(
            f"{row['label']!s:<{width}}  {row['support']:>7d}  "
            f"{row['precision']:>9.3f}  {row['recall']:>6.3f}  {row['f1']:>6.3f}"
        )
    k = min(TOP_K, len(metrics["per_class"]))
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   top-{k} {metrics['top5']:.4f}   "
        f"mean class accuracy {metrics['mean_class_accuracy']:.4f}   "
        f"macro F1 {metrics['macro_f1']:.4f}   (N = {metrics['num_samples']})"
    )
    return "\n".join(lines)


def write_per_class_report(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """CSV ``label,support,precision,recall,f1``: one row per class, then a ``macro`` row."""
    rows = [*metrics["per_class"], _macro_row(metrics)]
    fields = ("label", "support", "precision", "recall", "f1")
    table = [[row[name] for name in fields] for row in rows]
    return _write_csv(path, [list(fields), *table])


def write_confusion_csv(path: str | Path, confusion: np.ndarray, labels: Sequence[str]) -> Path:
    """CSV of counts: header ``true\\predicted,<predicted labels>``, then one row per true label."""
    counts = check_confusion(confusion, labels)
    header = ["true\\predicted", *map(str, labels)]
    body = [[str(name), *row] for name, row in zip(labels, counts.tolist())]
    return _write_csv(path, [header, *body])


def write_json(path: str | Path, obj: Any) -> Path:
    """Pretty JSON; numpy arrays/scalars and paths converted, NaN/inf written as ``null``."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic.write_text(path, text)


def _macro_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``macro`` row: means over the classes seen in targets or predictions."""
    return {
        "label": "macro",
        "support": int(metrics["num_samples"]),
        "precision": metrics["macro_precision"],
        "recall": metrics["macro_recall"],
        "f1": metrics["macro_f1"],
    }


def check_confusion(confusion: Any, labels: Sequence[str]) -> np.ndarray:
    """``confusion`` as an array, checked to be ``(C, C)`` with one label per class."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape != (len(labels), len(labels)) or counts.size == 0:
        raise VidseqError(
            f"confusion of shape {counts.shape} does not match {len(labels)} "
            "labels: it must be (C, C) with one label per class"
        )
    return counts


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None  # JSON has no NaN; null as JavaScript does
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise VidseqError(f"write_json: a {type(obj).__name__} value cannot be stored in JSON")


def _write_csv(path: str | Path, rows: list[list[Any]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    return atomic.write_bytes(path, data)
