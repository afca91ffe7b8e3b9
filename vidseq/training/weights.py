"""Late fusion of feature streams: the weight of each stream chosen on val, and the fused model.

Place in the data flow: the per-stream models that ``vidseq.training.train`` trained (one run folder per
stream, the same split for all) + the validation sequences -> **fusion** -> the weight of each
stream, chosen on val, and the fused ``LateFusion`` model that ``train`` saves as ``best.pt``.
Choosing is pure (probabilities in, weights out); loading and saving stay with ``train``.

The weights are searched on a grid (steps of ``WEIGHT_STEP``) of ``sum_i w_i p_i`` with
``sum_i w_i = 1``: for two streams ``w * p_appearance + (1 - w) * p_motion``, ``w = 0, 0.05,
..., 1``. The best val accuracy wins; ties go to the lower val loss, then to the weights closest
to an even split (with a small val split many weights tie, and the even split is the safest).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vidseq.models import LateFusion, Member, load_model
from vidseq.training.evaluate import predict_proba
from vidseq.training.sequences import SequenceSet

WEIGHT_STEP = 0.05


def choose_weights(
    probabilities: Sequence[np.ndarray], targets: np.ndarray, *, step: float = WEIGHT_STEP
) -> list[float]:
    """The weights of ``sum_i w_i probabilities[i]`` (each ``(N, C)``) best on ``targets (N,)``.

    Best: most correct, then the lower mean cross-entropy, then the closest to equal weights.
    """
    count = len(probabilities)
    rows = np.arange(len(targets))
    best_key, best = None, None
    for weights in _simplex(count, round(1 / step)):
        fused = sum(w * p for w, p in zip(weights, probabilities))
        correct = int((fused.argmax(1) == targets).sum())
        loss = float(-np.log(np.clip(fused[rows, targets], 1e-12, None)).mean())
        # rounded: mixing equal probabilities differs in the last bits, which must still tie
        key = (correct, -round(loss, 9), -sum(abs(w - 1 / count) for w in weights))
        if best_key is None or key > best_key:
            best_key, best = key, weights
    return list(best)


def _simplex(count: int, steps: int) -> list[tuple[float, ...]]:
    """Every ``count`` weights in multiples of ``1 / steps`` that sum to 1, first weight rising."""
    grid = [
        (*head, steps - sum(head))
        for head in itertools.product(range(steps + 1), repeat=count - 1)
        if sum(head) <= steps
    ]
    return [tuple(k / steps for k in point) for point in grid]


def fuse(
    checkpoints: Mapping[str, Mapping[str, Any]], data: SequenceSet, *, device: torch.device | str = "cpu"
) -> LateFusion:
    """The ``LateFusion`` of each stream's trained model (``checkpoints``: stream -> the ``best.pt``
    of its run), weighted as ``choose_weights`` finds best on the val split of ``data`` (the
    streams concatenated, as the fused model reads them)."""
    val = data.subset("val")
    members, probabilities = [], []
    for stream, state in checkpoints.items():
        model = load_model(state["model"]).to(device)
        probabilities.append(predict_proba(model, val.stream(stream).features, device=device))
        members.append(Member(stream, state["model"]["name"], model.cpu(), *data.stream_dims(stream)))
    return LateFusion(members, choose_weights(probabilities, val.targets))


def merge_histories(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """One row per epoch: each stream's row with its keys prefixed ``<stream>_`` (``epoch`` kept)."""
    rows: dict[int, dict[str, float]] = {}
    for stream, history in histories.items():
        for row in history:
            merged = rows.setdefault(int(row["epoch"]), {"epoch": row["epoch"]})
            merged.update(prefixed(row, stream))
    return [rows[epoch] for epoch in sorted(rows)]


def prefixed(row: Mapping[str, float], stream: str) -> dict[str, float]:
    """``row`` with every key but ``epoch`` prefixed ``<stream>_`` (``val_accuracy`` ->
    ``motion_val_accuracy``): a stream's epoch row in a late-fusion run."""
    return {key if key == "epoch" else f"{stream}_{key}": value for key, value in row.items()}
