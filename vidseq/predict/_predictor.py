"""The predictor: a trained head plus the backbone its features came from; bundles for MLflow.

Place in the data flow: videos -> the extraction loop of ``vidseq.features`` (the same parallel
decode and batched backbone as ``vidseq extract``, into a temporary store) -> the recurrent head
-> one row per video. The extraction settings (backbone, sampling, io) come from the recipe the
feature store recorded at training time, so a model always sees features made the way it was
trained on. Frames that arrive one by one (a live stream) go through ``embed``: the same
``fit_frames`` and ``FrameEncoder`` (precision, channels_last, runtime) as the extraction's.

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq import __version__
from vidseq.backbones import FrameEncoder, decoded_frames, fit_frames
from vidseq.config import (
    ActorsConfig,
    BackboneConfig,
    ExtractConfig,
    IOConfig,
    MotionConfig,
    PoseConfig,
    SamplingConfig,
)
from vidseq.datasets import VideoItem
from vidseq.errors import VidseqError
from vidseq.features import (
    FeatureStore,
    FeatureStoreError,
    VideoFeatures,
    build_backbone,
    extract,
    resolve_device,
)
from vidseq.features.motion import FlowPooler, recorded_motion_config
from vidseq.models import load_model
from vidseq.threads import set_torch_threads, thread_budget
from vidseq.training import checkpoint as checkpoints
from vidseq.training.evaluate import predict_proba

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
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "probabilities": self.probabilities,
            "frames": self.frames,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


class Predictor:
    """A trained head plus the backbone and sampling its features were made with."""

    def __init__(
        self,
        state: dict[str, Any],
        recipe: dict[str, Any],
        *,
        device: str = "auto",
        extract_config: ExtractConfig | None = None,
    ) -> None:
        if not recipe.get("backbone"):
            raise PredictError(
                "this checkpoint does not record how its features were extracted (made by an older "
                "vidseq): pass backbone/sampling explicitly or extract and train again"
            )
        self.labels: list[str] = list(state["labels"])
        self.streams: list[str] = list(state.get("streams") or ["appearance"])  # canonical order
        self.motion = _motion_config(recipe) if "motion" in self.streams else None
        self.pose = _pose_config(recipe) if "pose" in self.streams else None
        # per-person models (`vidseq extract --actors`): the tracking settings of their store
        self.actors = ActorsConfig.model_validate(recipe["actors"]) if recipe.get("actors") else None
        self.clip_seconds: float | None = state.get("clip_seconds")  # median training clip span
        self.backbone_config = BackboneConfig.model_validate(recipe["backbone"])
        self.sampling = SamplingConfig.model_validate(recipe.get("sampling") or {})
        self.io = IOConfig.model_validate(recipe.get("io") or {})
        self.extract_config = _extract_config(recipe, extract_config, device)
        self.device = resolve_device(device)
        self.model = self._load_head(state)
        self._backbone = None
        self._encoder: FrameEncoder | None = None
        self._flow = None
        self._pose_estimator = None

    def _load_head(self, state: dict[str, Any]):
        """The temporal head, on this predictor's device (an exported folder's predictor,
        ``vidseq.predict.exported``, runs its exported head instead)."""
        return load_model(state["model"]).to(self.device)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        backbone: BackboneConfig | None = None,
        sampling: SamplingConfig | None = None,
        io: IOConfig | None = None,
        extract_config: ExtractConfig | None = None,
    ) -> Predictor:
        """A predictor from ``best.pt`` of ``vidseq train`` (extraction as recorded, or as given)."""
        state = checkpoints.load(checkpoint)
        recipe = dict(state.get("extraction") or {})
        for name, section in (("backbone", backbone), ("sampling", sampling), ("io", io)):
            if section is not None:
                recipe[name] = section.model_dump(mode="json")
        return cls(state, recipe, device=device, extract_config=extract_config)

    @classmethod
    def from_bundle(
        cls, directory: str | Path, *, device: str = "auto", extract_config: ExtractConfig | None = None
    ) -> Predictor:
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
        detector = meta.get("detector_file")
        if detector and recipe.get("actors"):  # a per-person model: the detector travelled with it
            recipe["actors"]["weights"] = str(directory / detector)
        return cls(
            checkpoints.load(directory / BUNDLE_CHECKPOINT), recipe, device=device, extract_config=extract_config
        )

    @property
    def backbone(self):
        """The frame -> feature model, built on first use."""
        if self._backbone is None:
            self._backbone = build_backbone(self.backbone_config, self.device)
        return self._backbone

    @property
    def encoder(self) -> FrameEncoder:
        """The backbone run as the extraction runs it: ``extract_config``'s precision,
        channels_last and runtime (torch or onnxruntime), on this predictor's device (rebuilt if
        those settings change)."""
        cfg, encoder = self.extract_config, self._encoder
        wanted = (cfg.precision, cfg.channels_last, cfg.runtime)
        if encoder is None or (encoder.precision, encoder.channels_last, encoder.requested_runtime) != wanted:
            set_torch_threads(thread_budget().inference())  # frames embedded here: the budget's cores
            self._encoder = FrameEncoder(
                self.backbone,
                precision=cfg.precision,
                channels_last=cfg.channels_last,
                device=self.device,
                runtime=cfg.runtime,
            )
        return self._encoder

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``uint8 (N, H, W, 3)`` RGB of any size -> backbone features ``float32 (N, D)``,
        exactly as the extraction makes them: ``fit_frames`` (resized to the decode size as
        ``vidseq.io`` resizes, centre crop or letterbox), then the extraction's ``FrameEncoder``."""
        return self.encoder(self._fit(frames))

    @property
    def pair_step(self) -> int | None:
        """Frames between a frame and its partner when the model reads motion, else None."""
        return self.motion.step if self.motion is not None else None

    def vectors(self, frames: np.ndarray, partners: np.ndarray | None = None) -> np.ndarray:
        """The per-frame input of the model: every stream it was trained on, concatenated as in
        training (appearance, motion, pose). ``partners``: the frames ``pair_step`` frames later
        (needed when the model reads motion; the flow is computed from each frame to its partner).
        The pose, as in extraction, sees the frames at the decode size before the backbone's crop."""
        parts = []
        if "appearance" in self.streams:
            parts.append(self.embed(frames))
        if self.motion is not None:
            if partners is None or len(partners) != len(frames):
                raise PredictError("this model reads the motion stream: give each frame its partner frame")
            if self._flow is None:
                self._flow = FlowPooler(self.motion)
            parts.append(self._flow(self._fit(frames), self._fit(partners)))
        if self.pose is not None:
            if self._pose_estimator is None:
                from vidseq.features.pose import PoseEstimator  # the pose extra: only for pose models

                self._pose_estimator = PoseEstimator(self.pose)
            parts.append(self._pose_estimator(decoded_frames(self._checked(frames), self.backbone.spec)))
        return np.concatenate(parts, axis=1)

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        return fit_frames(self._checked(frames), self.backbone.spec)

    @staticmethod
    def _checked(frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise PredictError(f"embed takes uint8 frames (N>=1, H, W, 3), got shape {frames.shape}")
        return frames

    def classify(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, C)`` of feature sequences (each ``(T, D)``)."""
        if not sequences:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return predict_proba(self.model, sequences, device=self.device)

    @property
    def default_window(self) -> float:
        """Seconds per window when none is asked for: the training clips' median span, else 2."""
        return round(self.clip_seconds, 3) if self.clip_seconds and self.clip_seconds > 0 else 2.0

    def frame_rate(self, window: float) -> float:
        """Frames per second at which a window of ``window`` seconds is sampled: the rate the
        model was trained at where the recipe has one (stride sampling at a target fps), else
        ``sampling.count`` frames per window (what uniform sampling gave each training clip)."""
        if not (0 < window < float("inf")):
            raise PredictError(f"window must be a positive number of seconds, got {window}")
        if self.sampling.mode == "stride" and self.sampling.target_fps:
            return float(self.sampling.target_fps)
        return self.sampling.count / window

    def predict(self, paths: Iterable[str | Path], *, top_k: int = 1, progress: bool = False) -> list[Prediction]:
        """One ``Prediction`` per path, in order; a video that cannot be read gets its error."""
        paths = [str(p) for p in paths]
        start = time.perf_counter()
        found, errors = self.features(paths, progress=progress)
        seconds = (time.perf_counter() - start) / max(1, len(set(paths)))
        done = list(found)
        probs = dict(zip(done, self.classify([found[p].features for p in done])))
        return [self._prediction(p, probs.get(p), found.get(p), errors.get(p, ""), top_k, seconds) for p in paths]

    def features(
        self, paths: Iterable[str | Path], *, sampling: SamplingConfig | None = None, progress: bool = False
    ) -> tuple[dict[str, VideoFeatures], dict[str, str]]:
        """Features of each video as the extraction makes them (``sampling``: the recipe's
        unless given), through a temporary feature store; and the error of each that failed."""
        paths = list(dict.fromkeys(str(p) for p in paths))
        with tempfile.TemporaryDirectory(prefix="vidseq-predict-") as tmp:
            items = [VideoItem(Path(p), None) for p in paths]
            # Ray builds the backbone in its own actors from the config; locally ours is reused.
            backbone = self.backbone_config if self.extract_config.engine == "ray" else self.backbone
            result = extract(
                items,
                out=tmp,
                backbone=backbone,
                sampling=sampling or self.sampling,
                config=self.extract_config,
                io=self.io,
                progress=progress,
                motion=self.motion,
                pose=self.pose,
            )
            stores = {"appearance": result, **result.extras}
            errors: dict[str, str] = {}
            for name in self.streams:
                for row in stores[name].failed:
                    errors.setdefault(row["path"], row["error"] or "not extracted")
            found = {
                p: _joined([_read(stores[name].store, p) for name in self.streams]) for p in paths if p not in errors
            }
        return found, errors

    def _prediction(
        self,
        path: str,
        probs: np.ndarray | None,
        features: VideoFeatures | None,
        error: str,
        top_k: int,
        seconds: float,
    ) -> Prediction:
        if probs is None:
            return Prediction(path, None, None, None, [], 0, seconds, error or "not predicted")
        order = np.argsort(-probs)[: max(1, top_k)]
        top = [(self.labels[i], float(probs[i])) for i in order]
        return Prediction(path, top[0][0], top[0][1], [float(p) for p in probs], top, len(features.features), seconds)


def _read(store: FeatureStore, path: str) -> VideoFeatures:
    try:
        item = store.load(path)
        # copy out of the temporary store (a large entry may be memory-mapped from it)
        return VideoFeatures(
            np.array(item.features), np.array(item.frame_indices), np.array(item.timestamps), item.meta
        )
    except (FeatureStoreError, OSError) as exc:
        raise PredictError(f"{path}: features vanished from the temporary store ({exc})") from None


def _joined(parts: list[VideoFeatures]) -> VideoFeatures:
    """One video's streams side by side per frame (the layout the model was trained on)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return VideoFeatures(
        np.concatenate([p.features for p in parts], axis=1), first.frame_indices, first.timestamps, first.meta
    )


def _extract_config(recipe: dict[str, Any], given: ExtractConfig | None, device: str) -> ExtractConfig:
    """How prediction extracts: ``given`` (default settings where None) on ``device``, with the
    forward settings the recipe recorded (an ``extract`` section: precision, channels_last) where
    ``given`` leaves them unset, so served features are computed as the training ones were."""
    config = given or ExtractConfig()
    recorded = recipe.get("extract") or {}
    forward = {
        key: recorded[key]
        for key in ("precision", "channels_last")
        if key in recorded and key not in config.model_fields_set
    }
    return ExtractConfig.model_validate({**config.model_dump(), **forward, "device": device})


def _pose_config(recipe: dict[str, Any]) -> PoseConfig:
    if not recipe.get("pose"):
        raise PredictError(
            "this model reads the pose stream but its checkpoint does not record the pose settings "
            "(pose section); train it again with this vidseq"
        )
    return PoseConfig.model_validate({**recipe["pose"], "enabled": True})


def _motion_config(recipe: dict[str, Any]) -> MotionConfig:
    if not recipe.get("motion"):
        raise PredictError(
            "this model reads the motion stream but its checkpoint does not record the flow "
            "settings (motion section); train it again with this vidseq"
        )
    return recorded_motion_config(recipe["motion"])  # a recipe from before intensity: without it


def load_predictor(
    model: str | Path, *, device: str = "auto", extract_config: ExtractConfig | None = None
) -> Predictor:
    """A predictor from a local model: a checkpoint of ``vidseq train`` (``best.pt``), a bundle
    folder, or a downloaded MLflow model folder (its ``MLmodel`` names the bundle inside)."""
    path = Path(model)
    if path.is_file():
        return Predictor.from_checkpoint(path, device=device, extract_config=extract_config)
    if (path / "MLmodel").is_file():
        import yaml

        flavor = (yaml.safe_load((path / "MLmodel").read_text()).get("flavors") or {}).get("python_function", {})
        if flavor.get("loader_module") != "vidseq.predict" or not flavor.get("data"):
            raise PredictError(f"{path}: an MLflow model, but not one vidseq logged")
        path = path / flavor["data"]
    if (path / BUNDLE_FILE).is_file():
        return Predictor.from_bundle(path, device=device, extract_config=extract_config)
    raise PredictError(
        f"{model}: not a checkpoint, a vidseq model folder or an MLflow model folder "
        "(for an MLflow URI such as models:/NAME/1 use vidseq predict --model URI; "
        "a folder of vidseq export holds manifest.json)"
    )


def write_bundle(checkpoint: str | Path, directory: str | Path) -> Path:
    """Copy what prediction needs into ``directory``: the checkpoint, its recipe, a weights file."""
    state = checkpoints.load(checkpoint)
    recipe = dict(state.get("extraction") or {})
    if not recipe.get("backbone"):
        raise PredictError(f"{checkpoint}: no extraction recipe recorded; cannot make a self-contained model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keep = ("model", "labels", "extraction", "config", "clip_seconds", "vidseq_version", "streams", "fusion")
    slim = {key: state[key] for key in keep if key in state}
    torch.save(slim, directory / BUNDLE_CHECKPOINT)  # no optimiser state: a third of the size
    weights_file = None
    weights = recipe["backbone"].get("weights")
    if weights and Path(weights).is_file():  # a local file: travel with the model
        weights_file = f"weights/{Path(weights).name}"
        (directory / "weights").mkdir(exist_ok=True)
        shutil.copyfile(weights, directory / weights_file)
    detector_file = None
    detector = (recipe.get("actors") or {}).get("weights")
    if detector and Path(detector).expanduser().is_file():  # a per-person model's detector travels too
        detector_file = f"weights/detector/{Path(detector).name}"
        (directory / "weights" / "detector").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(detector).expanduser(), directory / detector_file)
    meta = {
        "vidseq_version": __version__,
        "labels": list(state["labels"]),
        "extraction": recipe,
        "weights_file": weights_file,
        "detector_file": detector_file,
    }
    (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return directory
