"""Prediction: video files -> labels and class probabilities, with a trained model.

Place in the data flow: videos -> the extraction loop of ``vidseq.features`` (the same parallel
decode and batched backbone as ``vidseq extract``, into a temporary store) -> the recurrent head
-> one row per video. The extraction settings (backbone, sampling, io) come from the recipe the
feature store recorded at training time, so a model always sees features made the way it was
trained on.

A *bundle* is a folder that holds everything needed to predict (``checkpoint.pt``,
``vidseq.json`` and a copy of a weights file when the backbone was loaded from one). It is what
``vidseq.tracking`` logs as an MLflow pyfunc model: MLflow calls ``_load_pyfunc`` of this module
(``loader_module="vidseq.predict"``), so no Python class is pickled and a model logged today
still loads after vidseq's classes move.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from vidseq import __version__
from vidseq.config import BackboneConfig, ExtractConfig, IOConfig, SamplingConfig
from vidseq.datasets import VideoItem
from vidseq.errors import VidseqError
from vidseq.evaluate import _load_checkpoint, predict_proba
from vidseq.features import FeatureStore, FeatureStoreError, build_backbone, extract, resolve_device
from vidseq.models import load_model

BUNDLE_FILE = "vidseq.json"
BUNDLE_CHECKPOINT = "checkpoint.pt"


class PredictError(VidseqError):
    """A model cannot be used for prediction (no recipe, unreadable bundle)."""


@dataclass
class Prediction:
    """One video's result; ``error`` is empty when it was read."""

    path: str
    label: str | None
    probability: float | None
    probabilities: list[float] | None
    top: list[tuple[str, float]]
    frames: int
    seconds: float
    error: str = ""

    def as_row(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "probability": self.probability,
                "probabilities": self.probabilities, "frames": self.frames,
                "seconds": round(self.seconds, 4), "error": self.error}


class Predictor:
    """A trained head plus the backbone and sampling its features were made with."""

    def __init__(self, state: dict[str, Any], recipe: dict[str, Any], *, device: str = "auto",
                 extract_config: ExtractConfig | None = None) -> None:
        if not recipe.get("backbone"):
            raise PredictError(
                "this checkpoint does not record how its features were extracted (made by an older "
                "vidseq): pass backbone/sampling explicitly or extract and train again"
            )
        self.labels: list[str] = list(state["labels"])
        self.backbone_config = BackboneConfig.model_validate(recipe["backbone"])
        self.sampling = SamplingConfig.model_validate(recipe.get("sampling") or {})
        self.io = IOConfig.model_validate(recipe.get("io") or {})
        self.extract_config = (extract_config or ExtractConfig()).model_copy(update={"device": device})
        self.device = resolve_device(device)
        self.model = load_model(state["model"]).to(self.device)
        self._backbone = None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, device: str = "auto", backbone: BackboneConfig | None = None,
                        sampling: SamplingConfig | None = None, io: IOConfig | None = None,
                        extract_config: ExtractConfig | None = None) -> "Predictor":
        """A predictor from ``best.pt`` of ``vidseq train`` (extraction as recorded, or as given)."""
        state = _load_checkpoint(checkpoint)
        recipe = dict(state.get("extraction") or {})
        for name, section in (("backbone", backbone), ("sampling", sampling), ("io", io)):
            if section is not None:
                recipe[name] = section.model_dump(mode="json")
        return cls(state, recipe, device=device, extract_config=extract_config)

    @classmethod
    def from_bundle(cls, directory: str | Path, *, device: str = "auto") -> "Predictor":
        """A predictor from a folder written by ``write_bundle`` (an MLflow model's data)."""
        directory = Path(directory)
        meta_file = directory / BUNDLE_FILE
        if not meta_file.is_file():
            raise PredictError(f"{directory}: not a vidseq model bundle (no {BUNDLE_FILE})")
        meta = json.loads(meta_file.read_text())
        recipe = meta["extraction"]
        weights = meta.get("weights_file")
        if weights:
            recipe["backbone"]["weights"] = str(directory / weights)
        return cls(_load_checkpoint(directory / BUNDLE_CHECKPOINT), recipe, device=device)

    @property
    def backbone(self):
        """The frame -> feature model, built on first use."""
        if self._backbone is None:
            self._backbone = build_backbone(self.backbone_config, self.device)
        return self._backbone

    def predict(self, paths: Iterable[str | Path], *, top_k: int = 1, progress: bool = False) -> list[Prediction]:
        """One ``Prediction`` per path, in order; a video that cannot be read gets its error."""
        paths = [str(p) for p in paths]
        with tempfile.TemporaryDirectory(prefix="vidseq-predict-") as tmp:
            start = time.perf_counter()
            items = [VideoItem(Path(p), None) for p in dict.fromkeys(paths)]
            result = extract(items, out=tmp, backbone=self.backbone, sampling=self.sampling,
                             config=self.extract_config, io=self.io, progress=progress)
            errors = {row["path"]: row["error"] for row in result.failed}
            done = [p for p in dict.fromkeys(paths) if p not in errors]
            features = {p: _read(result.store, p) for p in done}
            seconds = (time.perf_counter() - start) / max(1, len(items))
        probs = dict(zip(done, predict_proba(self.model, [features[p] for p in done], device=self.device)))
        return [self._prediction(p, probs.get(p), features.get(p), errors.get(p, ""), top_k, seconds) for p in paths]

    def _prediction(self, path: str, probs: np.ndarray | None, features: np.ndarray | None,
                    error: str, top_k: int, seconds: float) -> Prediction:
        if probs is None:
            return Prediction(path, None, None, None, [], 0, seconds, error or "not predicted")
        order = np.argsort(-probs)[: max(1, top_k)]
        top = [(self.labels[i], float(probs[i])) for i in order]
        return Prediction(path, top[0][0], top[0][1], [float(p) for p in probs], top, len(features), seconds)


def _read(store: FeatureStore, path: str) -> np.ndarray:
    try:
        return store.load(path).features
    except (FeatureStoreError, OSError) as exc:
        raise PredictError(f"{path}: features vanished from the temporary store ({exc})") from None


def write_bundle(checkpoint: str | Path, directory: str | Path) -> Path:
    """Copy what prediction needs into ``directory``: the checkpoint, its recipe, a weights file."""
    state = _load_checkpoint(checkpoint)
    recipe = dict(state.get("extraction") or {})
    if not recipe.get("backbone"):
        raise PredictError(f"{checkpoint}: no extraction recipe recorded; cannot make a self-contained model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, directory / BUNDLE_CHECKPOINT)
    weights_file = None
    weights = recipe["backbone"].get("weights")
    if weights and Path(weights).is_file():  # a local file: travel with the model
        weights_file = f"weights/{Path(weights).name}"
        (directory / "weights").mkdir(exist_ok=True)
        shutil.copyfile(weights, directory / weights_file)
    meta = {"vidseq_version": __version__, "labels": list(state["labels"]), "extraction": recipe,
            "weights_file": weights_file}
    (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return directory


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
        return pd.DataFrame(rows, columns=columns)


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
