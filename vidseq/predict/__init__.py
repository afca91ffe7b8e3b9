"""Prediction: video files -> labels and class probabilities with a trained model.

Place in the data flow: videos -> the extraction loop of ``vidseq.features`` (the same parallel
decode and batched backbone as ``vidseq extract``) -> the trained head -> rows, timelines of
windows and segments for long videos, labels on a live stream, annotated videos.

The extraction settings (backbone, sampling, io) come from the recipe the feature store
recorded at training time, so a model always sees features made the way it was trained on.
A *bundle* folder (``write_bundle``) holds everything needed to predict; ``vidseq.tracking``
logs it as an MLflow pyfunc model whose loader is ``_load_pyfunc`` below
(``loader_module="vidseq.predict"``): no class is pickled, so a logged model still loads after
vidseq's classes move. ``export_model`` writes a model as ONNX or TorchScript files with a
manifest (``vidseq export``); ``load_predictor`` runs such a folder (``exported``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.config import ExtractConfig
from vidseq.predict._predictor import (
    BUNDLE_CHECKPOINT,
    BUNDLE_FILE,
    PredictError,
    Prediction,
    Predictor,
    write_bundle,
)
from vidseq.predict._predictor import load_predictor as _load_trained
from vidseq.predict.batch import BatchResult, predict_batch
from vidseq.predict.export import ExportResult, export_model
from vidseq.predict.exported import MANIFEST_FILE, ExportedPredictor, ExportError, load_exported, read_manifest
from vidseq.predict.render import RenderResult, render_video
from vidseq.predict.stream import StreamLabel, stream_labels
from vidseq.predict.windows import Segment, Timeline, Window, predict_timeline

__all__ = [
    "BUNDLE_CHECKPOINT",
    "BUNDLE_FILE",
    "BatchResult",
    "ExportError",
    "ExportResult",
    "ExportedPredictor",
    "PredictError",
    "Prediction",
    "Predictor",
    "PyfuncModel",
    "RenderResult",
    "Segment",
    "StreamLabel",
    "Timeline",
    "Window",
    "export_model",
    "load_exported",
    "load_predictor",
    "predict_batch",
    "predict_timeline",
    "read_manifest",
    "render_video",
    "stream_labels",
    "write_bundle",
]


def load_predictor(
    model: str | Path, *, device: str = "auto", extract_config: ExtractConfig | None = None
) -> Predictor:
    """A predictor from a local model: a checkpoint of ``vidseq train`` (``best.pt``), a bundle
    folder, a downloaded MLflow model folder, or a folder of ``vidseq export`` (its
    ``manifest.json``: the exported backbone and head run, ``ExportedPredictor``)."""
    if (Path(model) / MANIFEST_FILE).is_file():
        return load_exported(model, device=device, extract_config=extract_config)
    return _load_trained(model, device=device, extract_config=extract_config)


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model(uri)`` wraps: ``predict(paths) -> DataFrame``."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        import pandas as pd

        if getattr(self.predictor, "actors", None) is not None:  # trained on actors: a row per tracked person
            from vidseq.predict.actors import ROW_COLUMNS, predict_actors

            rows = [p.as_row() for p in predict_actors(self.predictor, _input_paths(model_input))]
            columns, nullable = ROW_COLUMNS, ("track", "first", "last", "probability")
        else:
            top_k = int((params or {}).get("top_k", 1))
            rows = [p.as_row() for p in self.predictor.predict(_input_paths(model_input), top_k=top_k)]
            columns = ["path", "label", "probability", "probabilities", "frames", "seconds", "error"]
            nullable = ("probability",)
        for row in rows:  # a video that failed: an empty label (the column stays all strings)
            row["label"] = row["label"] or ""
        frame = pd.DataFrame(rows, columns=columns)
        for column in nullable:
            if frame[column].isna().any():  # None, not NaN: MLflow's scoring server writes NaN, which is not JSON
                frame[column] = pd.Series([row[column] for row in rows], index=frame.index, dtype=object)
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
