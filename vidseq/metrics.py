"""Classification metrics and report files: class scores + targets -> numbers, tables, plots.

Place in the data flow: videos -> frames -> features -> sequences -> logits -> **metrics** ->
artifacts. Pure numpy (no torch, no scikit-learn); matplotlib is imported inside the plotting
functions only, so importing this module stays cheap. The evaluation loop calls
``classification_metrics``; tracking logs ``scalar_metrics`` and the files written here.

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
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from vidseq.errors import VidseqError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Size: ~440 lines, above STYLE's ~400, because the brief keeps the numbers, the report files
# and the plots in this one module; the plots (everything below "plots") are the cut to make.
TOP_K = 5
_ANNOTATE_MAX_CLASSES = 30  # above this, cell annotations are unreadable
_TICK_LABELS_MAX_CLASSES = 100
_ACCURACY_WORDS = ("accuracy", "top5", "f1")


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
            raise VidseqError(f"average_views: view {i} has shape {view.shape}; every view "
                              f"must be (N, C) like view 0 {first.shape}")
        if (view < 0).any() or not np.allclose(view.sum(axis=1), 1.0, atol=1e-3):
            raise VidseqError(f"average_views: view {i} is not probabilities (rows must be "
                              ">= 0 and sum to 1); apply vidseq.metrics.softmax to logits first")
        total += view
    return total / len(probabilities_per_view)


# ------------------------------------------------------------------ metrics


def classification_metrics(
    probabilities: np.ndarray, targets: np.ndarray, *, labels: Sequence[str]
) -> dict[str, Any]:
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
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)  # = harmonic mean of precision and recall
    in_targets, seen = support > 0, (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / len(targets)),
        "top5": _top_k_accuracy(scores, targets, k=min(TOP_K, len(labels))),
        "mean_class_accuracy": float(recall[in_targets].mean()),
        "macro_f1": float(f1[seen].mean()),
        "macro_precision": float(precision[seen].mean()),
        "macro_recall": float(recall[seen].mean()),
        "num_samples": int(len(targets)),
        "confusion": confusion,
        "per_class": [
            {"label": name, "support": int(s), "precision": float(p), "recall": float(r),
             "f1": float(f)}
            for name, s, p, r, f in zip(labels, support, precision, recall, f1)
        ],
    }


def _confusion_matrix(targets: np.ndarray, predictions: np.ndarray, *, num_classes: int
                      ) -> np.ndarray:
    """``(C, C)`` int64 counts: ``[i, j]`` = samples of true class i predicted as class j."""
    flat = targets.astype(np.int64) * num_classes + predictions.astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _top_k_accuracy(scores: np.ndarray, targets: np.ndarray, *, k: int) -> float:
    """Share of samples whose target ranks among the ``k`` best scores (ties: lower index
    first, as ``argmax``)."""
    rows = np.arange(len(targets))
    target_score = scores[rows, targets][:, None]
    ahead = (scores > target_score) | (
        (scores == target_score) & (np.arange(scores.shape[1]) < targets[:, None]))
    return float(np.mean(ahead.sum(axis=1) < k))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries as floats, for ``mlflow.log_metrics`` (arrays, lists, strings and
    booleans, such as ``confusion`` and ``per_class``, are left out)."""
    numbers = (int, float, np.integer, np.floating)
    return {str(key): float(value) for key, value in metrics.items()
            if isinstance(value, numbers) and not isinstance(value, bool)}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0.0 (and no warning) where the denominator is 0."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    return np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)


def _check_inputs(
    probabilities: Any, targets: Any, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    scores, targets = np.asarray(probabilities), np.asarray(targets)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise VidseqError(f"probabilities must be a 2-D (N, C) array, got shape {scores.shape}")
    if scores.shape[0] == 0 or targets.size == 0:
        raise VidseqError("no samples to score: probabilities and targets are empty")
    if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
        raise VidseqError("probabilities must be finite numbers (found NaN, inf or non-numbers)")
    if targets.shape != (scores.shape[0],):
        raise VidseqError(f"targets must have shape ({scores.shape[0]},) to match probabilities "
                          f"{scores.shape}, got {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise VidseqError(f"targets must be integer class indices, got dtype {targets.dtype}")
    labels = [str(name) for name in labels]
    if len(labels) != scores.shape[1]:
        raise VidseqError(f"{len(labels)} labels for {scores.shape[1]} classes: labels must "
                          "name every column of probabilities, in order")
    if len(set(labels)) != len(labels):
        raise VidseqError(f"labels must be unique, got {labels}")
    if targets.min() < 0 or targets.max() >= len(labels):
        raise VidseqError(f"targets must be in [0, {len(labels)}), got values from "
                          f"{targets.min()} to {targets.max()}")
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
        lines.append(f"{str(row['label']):<{width}}  {row['support']:>7d}  "
                     f"{row['precision']:>9.3f}  {row['recall']:>6.3f}  {row['f1']:>6.3f}")
    k = min(TOP_K, len(metrics["per_class"]))
    lines.append(f"accuracy {metrics['accuracy']:.4f}   top-{k} {metrics['top5']:.4f}   "
                 f"mean class accuracy {metrics['mean_class_accuracy']:.4f}   "
                 f"macro F1 {metrics['macro_f1']:.4f}   (N = {metrics['num_samples']})")
    return "\n".join(lines)


def write_per_class_report(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """CSV ``label,support,precision,recall,f1``: one row per class, then a ``macro`` row."""
    rows = [*metrics["per_class"], _macro_row(metrics)]
    fields = ("label", "support", "precision", "recall", "f1")
    table = [[row[name] for name in fields] for row in rows]
    return _write_csv(path, [list(fields), *table])


def write_confusion_csv(path: str | Path, confusion: np.ndarray, labels: Sequence[str]) -> Path:
    """CSV of counts: header ``true\\predicted,<predicted labels>``, then one row per true label."""
    counts = _check_confusion(confusion, labels)
    header = ["true\\predicted", *map(str, labels)]
    body = [[str(name), *row] for name, row in zip(labels, counts.tolist())]
    return _write_csv(path, [header, *body])


def write_json(path: str | Path, obj: Any) -> Path:
    """Pretty JSON; numpy arrays/scalars and paths converted, NaN/inf written as ``null``."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _macro_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``macro`` row: means over the classes seen in targets or predictions."""
    return {"label": "macro", "support": int(metrics["num_samples"]),
            "precision": metrics["macro_precision"], "recall": metrics["macro_recall"],
            "f1": metrics["macro_f1"]}


def _check_confusion(confusion: Any, labels: Sequence[str]) -> np.ndarray:
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape != (len(labels), len(labels)) or counts.size == 0:
        raise VidseqError(f"confusion of shape {counts.shape} does not match {len(labels)} "
                          "labels: it must be (C, C) with one label per class")
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
    return _atomic_write(path, lambda fh: fh.write(data))


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through ``write(binary file)`` to a temporary sibling, then ``os.replace`` it.

    The temporary file is opened with ``open(mode="xb")`` rather than ``mkstemp``, so the
    report gets the umask's usual permissions instead of mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------ plots


def plot_confusion(path: str | Path, confusion: np.ndarray, labels: Sequence[str], *,
                   normalize: bool = True, title: str | None = None) -> Path:
    """A heatmap PNG of the confusion matrix (rows true, columns predicted).

    ``normalize``: colour by the share of each true class (rows sum to 100 %); cells show the
    percent and the count. Otherwise colour and cells show counts. Cells are annotated up to
    30 classes; tick labels are dropped above 100 classes.
    """
    counts = _check_confusion(confusion, labels)
    n = len(labels)
    shown = _ratio(counts, counts.sum(axis=1, keepdims=True)) if normalize else counts * 1.0
    vmax = 1.0 if normalize else max(1.0, float(shown.max()))
    side = min(4.0 + 0.4 * n, 20.0)
    fig = _new_figure((side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="share of the true class" if normalize else "samples")
    _label_confusion_axes(ax, [str(name) for name in labels])
    if n <= _ANNOTATE_MAX_CLASSES:
        _annotate_cells(ax, counts, shown / vmax, normalize=normalize)
    default = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"
    ax.set_title(title or default)
    return _save_png(fig, path)


def plot_training_curves(path: str | Path, history: Sequence[Mapping[str, Any]]) -> Path:
    """Two panels by epoch: every ``*loss*`` key, and every accuracy/top5/f1 key.

    Rows may miss keys or hold None/NaN (points are skipped); ``epoch`` defaults to the row's
    1-based position. ``lr``, when present, is drawn dashed on a second (log) axis of the
    accuracy panel, where a step in the schedule lines up with the jump in accuracy it causes.
    """
    if len(history) == 0:
        raise VidseqError("plot_training_curves: the history is empty; "
                          "it needs one row (dict) per epoch")
    epochs = [_epoch(row, i) for i, row in enumerate(history)]
    fig = _new_figure((11.0, 4.2))
    loss_ax, acc_ax = fig.subplots(1, 2)
    _plot_series(loss_ax, history, epochs, lambda key: "loss" in key, ylabel="loss")
    _plot_series(acc_ax, history, epochs,
                 lambda key: any(word in key for word in _ACCURACY_WORDS), ylabel="accuracy")
    _plot_lr(acc_ax, history, epochs)
    return _save_png(fig, path)


def _new_figure(size: tuple[float, float]) -> Figure:
    """A Figure on its own Agg canvas: Agg is chosen here, per figure, not by ``matplotlib.use``
    (which would switch a notebook's backend too), and without pyplot (which keeps figures
    alive until closed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | Path) -> Path:
    return _atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


def _label_confusion_axes(ax: Axes, labels: list[str]) -> None:
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) > _TICK_LABELS_MAX_CLASSES:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    size = float(np.clip(14 - 0.1 * len(labels), 5, 10))
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)


def _annotate_cells(ax: Axes, counts: np.ndarray, shade: np.ndarray, *, normalize: bool) -> None:
    """Write each cell's count (and row percent) in a colour readable on its shade."""
    cell_points = ax.figure.get_figheight() * 72 * 0.75 / len(counts)  # the axes' share
    size = float(np.clip(cell_points / 4, 5, 10))  # two lines of text fit in a cell
    for (i, j), count in np.ndenumerate(counts):
        text = f"{100 * shade[i, j]:.0f}%\n{count:g}" if normalize and count else f"{count:g}"
        colour = "white" if shade[i, j] > 0.5 else ("0.6" if count == 0 else "black")
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=size)


def _plot_series(ax: Axes, history: Sequence[Mapping[str, Any]], epochs: list[float],
                 wanted: Callable[[str], bool], *, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    keys = [key for key in dict.fromkeys(k for row in history for k in row) if wanted(key)]
    drawn = [_plot_key(ax, history, epochs, key) for key in keys]
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # also a sane axis for a single epoch
    ax.grid(alpha=0.3)
    if not any(drawn):
        ax.text(0.5, 0.5, f"no {ylabel} values", transform=ax.transAxes, ha="center",
                color="0.5")
    _legend_below(ax, ax)


def _plot_key(ax: Axes, history: Sequence[Mapping[str, Any]], epochs: list[float], key: str,
              **style: Any) -> bool:
    points = [(x, _number(row.get(key))) for x, row in zip(epochs, history)]
    points = [(x, y) for x, y in points if y is not None]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, label=key, **style)
    return bool(points)


def _plot_lr(ax: Axes, history: Sequence[Mapping[str, Any]], epochs: list[float]) -> None:
    values = [_number(row.get("lr")) for row in history]
    if all(v is None for v in values):
        return
    lr_ax = ax.twinx()
    _plot_key(lr_ax, history, epochs, "lr", color="0.5", linestyle="--")
    if all(v is None or v > 0 for v in values):
        lr_ax.set_yscale("log")
    lr_ax.set_ylabel("learning rate")
    if ax.get_legend() is not None:
        ax.get_legend().remove()  # replaced by one legend for both axes
    _legend_below(lr_ax, ax, lr_ax)


def _legend_below(target: Axes, *sources: Axes) -> None:
    """One legend under the panel (never over the curves) for the lines of ``sources``."""
    handles = [h for source in sources for h in source.get_legend_handles_labels()[0]]
    if handles:
        target.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                      ncol=min(3, len(handles)), fontsize=8, frameon=False)


def _epoch(row: Mapping[str, Any], position: int) -> float:
    epoch = _number(row.get("epoch"))
    return position + 1 if epoch is None else epoch


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, None, NaN, inf, not a number, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None
