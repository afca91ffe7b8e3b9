"""Exported folders (``vidseq export``): their manifest, its checks, and a predictor that runs them.

Place in the data flow: ``DIR/`` written by ``vidseq.predict.export`` -> **read_manifest** (the
format, every file there and its sha256 as recorded) -> **ExportedPredictor**: videos -> the
extraction loop of ``vidseq.features`` exactly as ``vidseq predict`` runs it (the recorded
sampling, io, decode workers, fitting and normalisation; the motion stream by OpenCV flow) with
the exported backbone (onnxruntime or TorchScript) in place of the PyTorch one -> the exported
head -> the same rows, timelines, stream labels and renders (``vidseq predict --model DIR``).

The exported backbone and head run in float32 whatever ``extract.precision`` the model was
trained with; the folder's format decides the runtime (``--runtime`` does not apply).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.backbones import Backbone, BackboneSpec
from vidseq.backbones.onnx import INPUT_NAME as BACKBONE_INPUT
from vidseq.backbones.onnx import OUTPUT_NAME as BACKBONE_OUTPUT
from vidseq.backbones.spec import file_sha256
from vidseq.config import ExtractConfig
from vidseq.predict._predictor import PredictError, Predictor

MANIFEST_FILE = "manifest.json"
EXPORT_FORMAT = "vidseq-export"
FORMAT_VERSION = 1
FORMATS = ("onnx", "torchscript")
HEAD_INPUTS = (
    ("features", ["batch", "time", "input_dim"], "float32"),
    ("lengths", ["batch"], "int64"),
)
HEAD_OUTPUT = ("probabilities", ["batch", "classes"], "float32")
MOTION_COMPUTED_BY = (
    "OpenCV dense optical flow between each sampled frame and its partner, pooled on a grid "
    "(vidseq.features.motion.FlowPooler with these settings); not a network, so not exported"
)
_BATCH = 32  # sequences per head call
_INSTALL_HINT = 'pip install -e ".[onnx]"'

__all__ = [
    "BACKBONE_INPUT",
    "BACKBONE_OUTPUT",
    "EXPORT_FORMAT",
    "FORMATS",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "ExportError",
    "ExportedPredictor",
    "load_exported",
    "read_manifest",
]


class ExportError(PredictError):
    """A model cannot be exported, or a folder is not a whole, unchanged export."""


def read_manifest(directory: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of the export in ``directory``; with ``verify``, every file it lists must be
    there with the sha256 it records. Any problem is an ``ExportError`` of one line."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ExportError(f"{directory}: not a folder of vidseq export")
    if not path.is_file():
        raise ExportError(f"{directory}: not a vidseq export (no {MANIFEST_FILE}); make one with vidseq export")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: unreadable ({type(exc).__name__}); export the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{directory}: {MANIFEST_FILE} is not a vidseq export's (no format {EXPORT_FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(
            f"{directory}: export format version {version!r} is newer than this vidseq reads ({FORMAT_VERSION}); "
            "upgrade vidseq"
        )
    if manifest.get("runtime") not in FORMATS:
        raise ExportError(f"{directory}: unknown export runtime {manifest.get('runtime')!r} in {MANIFEST_FILE}")
    files = manifest.get("files")
    needed = [section["file"] for section in (manifest.get("backbone"), manifest.get("head")) if section]
    if not isinstance(files, dict) or any(name not in files for name in needed) or len(needed) != 2:
        raise ExportError(f"{directory}: {MANIFEST_FILE} does not list the backbone and head files; export again")
    if verify:
        for name, digest in sorted(files.items()):
            if not (directory / name).is_file():
                raise ExportError(f"{directory}: {name} is missing (listed in {MANIFEST_FILE}); export the model again")
            if file_sha256(directory / name) != digest:
                raise ExportError(
                    f"{directory / name}: its sha256 does not match {MANIFEST_FILE} (changed after export); "
                    "export the model again"
                )
    return manifest


def load_torchscript(path: str | Path, device: torch.device | str | None = None) -> torch.jit.ScriptModule:
    """A TorchScript file of an export, in eval mode (torch's deprecation warning for
    ``torch.jit`` silenced: it still loads, and a user cannot act on it here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"this export runs with onnxruntime, which is not installed: {_INSTALL_HINT}") from None
    return onnxruntime


class ExportedBackbone(Backbone):
    """The exported backbone behind ``Backbone``'s interface: normalised ``(N, 3, S, S)`` ->
    ``float32 (N, D)``, so ``FrameEncoder`` and the extraction loop run it unchanged."""

    def __init__(self, spec: BackboneSpec, path: Path, fmt: str, device: torch.device) -> None:
        super().__init__(spec)
        self.format, self.target = fmt, device
        if fmt == "onnx":
            from vidseq.backbones.onnx import OrtSession

            _require_onnxruntime()
            self.session, self.module = OrtSession(path, device=device), None
        else:
            self.session, self.module = None, load_torchscript(path, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is not None:
            return self.module(x.float().to(self.target)).float().to(x.device)
        out = self.session.run(x.detach().float().contiguous().cpu().numpy())
        return torch.from_numpy(out).to(x.device)


class ExportedHead:
    """The exported head: ``features (B, T, D)``, ``lengths (B,)`` -> probabilities ``(B, C)``."""

    supports_streaming = False  # --carry-state needs the recurrent state: not in the export

    def __init__(self, path: Path, fmt: str, device: torch.device) -> None:
        self.format, self.device = fmt, device
        if fmt == "onnx":
            from vidseq.backbones.onnx import providers_for

            ort = _require_onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, torch.get_num_threads())
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers_for(device, ort.get_available_providers())
            )
        else:
            self.module = load_torchscript(path, device)

    def __call__(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        if self.format == "onnx":
            names = [name for name, _, _ in HEAD_INPUTS]
            return self.session.run(None, {names[0]: features, names[1]: lengths})[0]
        with torch.inference_mode():
            x = torch.from_numpy(features).to(self.device)
            return self.module(x, torch.from_numpy(lengths).to(self.device)).float().cpu().numpy()


class ExportedPredictor(Predictor):
    """``Predictor`` over an exported folder: the same extraction (sampling, io, fitting, the
    motion stream), with the exported backbone and head."""

    def __init__(
        self,
        directory: str | Path,
        manifest: dict[str, Any],
        *,
        device: str = "auto",
        extract_config: ExtractConfig | None = None,
    ) -> None:
        self.directory, self.manifest, self.format = Path(directory), manifest, manifest["runtime"]
        state = {
            "labels": manifest["labels"],
            "streams": [stream["name"] for stream in manifest["streams"]],
            "clip_seconds": manifest.get("clip_seconds"),
        }
        super().__init__(state, manifest["recipe"], device=device, extract_config=extract_config)
        if self.extract_config.engine == "ray":
            raise PredictError("an exported model runs with the local engine only (--engine local)")
        # The exported network runs in float32, inside a torch FrameEncoder (it is its own runtime).
        forward = {"precision": "fp32"}
        if "runtime" in type(self.extract_config).model_fields:
            forward["runtime"] = "torch"
        self.extract_config = self.extract_config.model_copy(update=forward)

    def _load_head(self, state: dict[str, Any]) -> ExportedHead:
        return ExportedHead(self.directory / self.manifest["head"]["file"], self.format, self.device)

    @property
    def backbone(self) -> ExportedBackbone:
        if self._backbone is None:
            section = self.manifest["backbone"]
            spec = dict(section["spec"])
            spec["mean"], spec["std"] = tuple(spec["mean"]), tuple(spec["std"])
            self._backbone = ExportedBackbone(
                BackboneSpec(**spec), self.directory / section["file"], self.format, self.device
            )
        return self._backbone

    def classify(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, C)``: the exported head on padded batches of similar lengths."""
        out = np.zeros((len(sequences), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for first in range(0, len(order), _BATCH):
            batch = order[first : first + _BATCH]
            lengths = np.array([len(sequences[i]) for i in batch], dtype=np.int64)
            if lengths.min() < 1:
                raise PredictError("a video without frames has no prediction")
            dim = int(np.asarray(sequences[batch[0]]).shape[1])
            padded = np.zeros((len(batch), int(lengths.max()), dim), dtype=np.float32)
            for row, i in enumerate(batch):
                padded[row, : lengths[row]] = sequences[i]
            out[batch] = self.model(padded, lengths)
        return out


def load_exported(
    directory: str | Path, *, device: str = "auto", extract_config: ExtractConfig | None = None
) -> ExportedPredictor:
    """The predictor of the export in ``directory`` (its manifest and files checked first)."""
    manifest = read_manifest(directory)
    if manifest["runtime"] == "onnx":
        _require_onnxruntime()
    return ExportedPredictor(directory, manifest, device=device, extract_config=extract_config)
