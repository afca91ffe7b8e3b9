"""Prediction: video files -> labels and class probabilities with a trained model.

Place in the data flow: videos -> the extraction loop of ``vidseq.features`` (the same parallel
decode and batched backbone as ``vidseq extract``) -> the trained head -> rows, timelines of
windows and segments for long videos, labels on a live stream, annotated videos.

The extraction settings (backbone, sampling, io) come from the recipe the feature store
recorded at training time, so a model always sees features made the way it was trained on.
A *bundle* folder (``write_bundle``) holds everything needed to predict; ``vidseq.tracking``
logs it as an MLflow pyfunc model whose loader is ``_load_pyfunc`` below
(``loader_module="vidseq.predict"``): no class is pickled, so a logged model still loads after
vidseq's classes move.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.predict._predictor import (
    BUNDLE_CHECKPOINT,
    BUNDLE_FILE,
    PredictError,
    Prediction,
    Predictor,
    load_predictor,
    write_bundle,
)
from vidseq.predict.batch import BatchResult, predict_batch
from vidseq.predict.render import RenderResult, render_video
from vidseq.predict.stream import StreamLabel, stream_labels
from vidseq.predict.windows import Segment, Timeline, Window, predict_timeline

__all__ = [
    "BUNDLE_CHECKPOINT",
    "BUNDLE_FILE",
    "BatchResult",
    "PredictError",
    "Prediction",
    "Predictor",
    "PyfuncModel",
    "RenderResult",
    "Segment",
    "StreamLabel",
    "Timeline",
    "Window",
    "load_predictor",
    "predict_batch",
    "predict_timeline",
    "render_video",
    "stream_labels",
    "write_bundle",
]


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model(uri)`` wraps: ``predict(paths) -> DataFrame``."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        import pandas as pd

        top_k = int((params or {}).get("top_k", 1))
        rows = [p.as_row() for p in self.predictor.predict(_input_paths(model_input), top_k=top_k)]
        for row in rows:  # a video that failed: an empty label (the column stays all strings)
            row["label"] = row["label"] or ""
        columns = ["path", "label", "probability", "probabilities", "frames", "seconds", "error"]
        frame = pd.DataFrame(rows, columns=columns)
        missing = frame["probability"].isna()
        if missing.any():  # None, not NaN: MLflow's scoring server writes NaN, which is not JSON
            frame["probability"] = frame["probability"].astype(object).where(~missing, None)
        return frame


def _input_paths(model_input: Any) -> list[str]:
    """Paths from a DataFrame (a 'path' column, or its only column), a list or one string."""
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    if hasattr(model_input, "columns"):
        column = "path" if "path" in model_input.columns else model_input.columns[0]
        return [str(p) for p in model_input[column].tolist()]
    if isinstance(model_input, np.ndarray):
        return [str(p) for p in model_input.ravel().tolist()]
    return [str(p) for p in model_input]


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's loader hook (``loader_module="vidseq.predict"``): the bundle at ``data_path``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return PyfuncModel(Predictor.from_bundle(data_path, device=device))
