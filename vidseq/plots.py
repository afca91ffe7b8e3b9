"""Plots of classification results: a confusion matrix or a training history -> a PNG file.

Place in the data flow: ... logits -> metrics -> **plots** (artifacts of a run: the confusion
matrix of ``vidseq.metrics``, the curves of a training history). matplotlib is imported inside
the plotting functions only (Agg, per figure, no pyplot), so importing this module stays cheap.
Files are written atomically like the reports of ``vidseq.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidseq import atomic
from vidseq.errors import VidseqError
from vidseq.metrics import check_confusion, ratio

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_ANNOTATE_MAX_CLASSES = 30  # above this, cell annotations are unreadable
_TICK_LABELS_MAX_CLASSES = 100
_ACCURACY_WORDS = ("accuracy", "top5", "f1")


def plot_confusion(
    path: str | Path, confusion: np.ndarray, labels: Sequence[str], *, normalize: bool = True, title: str | None = None
) -> Path:
    """A heatmap PNG of the confusion matrix (rows true, columns predicted).

    ``normalize``: colour by the share of each true class (rows sum to 100 %); cells show the
    percent and the count. Otherwise colour and cells show counts. Cells are annotated up to
    30 classes; tick labels are dropped above 100 classes.
    """
    counts = check_confusion(confusion, labels)
    n = len(labels)
    shown = ratio(counts, counts.sum(axis=1, keepdims=True)) if normalize else counts * 1.0
    vmax = 1.0 if normalize else max(1.0, float(shown.max()))
    side = min(4.0 + 0.4 * n, 20.0)
    fig = _new_figure((side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class" if normalize else "samples")
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
        raise VidseqError("plot_training_curves: the history is empty; it needs one row (dict) per epoch")
    epochs = [_epoch(row, i) for i, row in enumerate(history)]
    fig = _new_figure((11.0, 4.2))
    loss_ax, acc_ax = fig.subplots(1, 2)
    _plot_series(loss_ax, history, epochs, lambda key: "loss" in key, ylabel="loss")
    _plot_series(acc_ax, history, epochs, lambda key: any(word in key for word in _ACCURACY_WORDS), ylabel="accuracy")
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
    return atomic.write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


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


def _plot_series(
    ax: Axes, history: Sequence[Mapping[str, Any]], epochs: list[float], wanted: Callable[[str], bool], *, ylabel: str
) -> None:
    from matplotlib.ticker import MaxNLocator

    keys = [key for key in dict.fromkeys(k for row in history for k in row) if wanted(key)]
    drawn = [_plot_key(ax, history, epochs, key) for key in keys]
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # also a sane axis for a single epoch
    ax.grid(alpha=0.3)
    if not any(drawn):
        ax.text(0.5, 0.5, f"no {ylabel} values", transform=ax.transAxes, ha="center", color="0.5")
    _legend_below(ax, ax)


def _plot_key(ax: Axes, history: Sequence[Mapping[str, Any]], epochs: list[float], key: str, **style: Any) -> bool:
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
        target.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=min(3, len(handles)),
            fontsize=8,
            frameon=False,
        )


def _epoch(row: Mapping[str, Any], position: int) -> float:
    epoch = _number(row.get("epoch"))
    return position + 1 if epoch is None else epoch


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, None, NaN, inf, not a number, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None
