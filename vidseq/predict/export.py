"""Export: a trained model -> a folder of files that run without vidseq's classes (``vidseq export``).

Place in the data flow: a model ``vidseq predict`` accepts (``best.pt``, a bundle or MLflow model
folder) -> **export_model** -> ``DIR/`` holding

    backbone.onnx | backbone.pt   normalised frames ``float32 (N, 3, S, S)`` -> ``float32 (N, D)``
                                  (``Backbone.forward``, pooling included; ONNX by
                                  ``vidseq.backbones.onnx.export_backbone``, TorchScript by tracing)
    head.onnx | head.pt           ``features float32 (B, T, D)`` + ``lengths int64 (B,)`` ->
                                  ``probabilities float32 (B, C)``: the temporal model and, for
                                  late fusion, the streams' fusion (weighted mean of the members'
                                  softmax), with batch and time dynamic
    manifest.json                 inputs/outputs, preprocessing, sampling, streams, labels, files
                                  and their sha256 (``vidseq.predict.exported`` reads it)

``vidseq.predict.exported`` runs such a folder (``vidseq predict --model DIR``). The head is not
the trained module traced as is: ``export_head`` (its own module) rebuilds each model's forward
in a form without data-dependent Python, which gives the packed model's outputs for padded
batches. The motion stream (OpenCV optical flow,
``vidseq.features.motion``) is no network and is not exported: the manifest names its settings.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq import __version__
from vidseq.backbones.spec import file_sha256
from vidseq.predict._predictor import Predictor, load_predictor
from vidseq.predict.export_head import ExportHead, export_head, model_name
from vidseq.predict.exported import (
    BACKBONE_INPUT,
    BACKBONE_OUTPUT,
    EXPORT_FORMAT,
    FORMAT_VERSION,
    FORMATS,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    MANIFEST_FILE,
    MOTION_COMPUTED_BY,
    ExportError,
    load_torchscript,
    read_manifest,
)

DEFAULT_OPSET = 18
POSE_COMPUTED_BY = (
    "MediaPipe Pose (mediapipe 0.10.14, the pose extra) on each sampled frame at the decode size, normalised "
    "to the body (vidseq.features.pose.PoseEstimator with these settings); not exported"
)
TRAJECTORY_COMPUTED_BY = "each track's box centre, size and velocities (vidseq.features.actors.trajectory)"
_EXAMPLE_LENGTHS = (5, 3)  # the head is traced on a padded batch: two videos of 5 and 3 frames


@dataclass
class ExportResult:
    """What ``export_model`` wrote: the folder, its manifest and the checks it passed."""

    out: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[str]:
        return sorted(self.manifest["files"])


def _example_inputs(input_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor(_EXAMPLE_LENGTHS, dtype=torch.int64)
    features = torch.randn(len(lengths), int(lengths.max()), input_dim, generator=generator)
    return features, lengths


def _write_head(head: ExportHead, input_dim: int, path: Path, fmt: str, opset: int) -> None:
    example = _example_inputs(input_dim)
    names = [name for name, _, _ in HEAD_INPUTS]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the graph is checked after
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(head, example, check_trace=False), str(path))
            return
        torch.onnx.export(
            head,
            example,
            str(path),
            input_names=names,
            output_names=[HEAD_OUTPUT[0]],
            dynamic_axes={names[0]: {0: "batch", 1: "time"}, names[1]: {0: "batch"}, HEAD_OUTPUT[0]: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _write_backbone(backbone, path: Path, fmt: str, opset: int) -> None:
    if fmt == "onnx":
        from vidseq.backbones.onnx import export_backbone

        export_backbone(backbone, path, opset=opset)
        return
    size = backbone.spec.input_size
    backbone.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(backbone, torch.zeros(2, 3, size, size), check_trace=False)
        torch.jit.save(traced, str(path))


# -- the folder ------------------------------------------------------------------------------


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    format: str = "onnx",  # noqa: A002 - the CLI's --format
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write the model at ``model`` (what ``load_predictor`` accepts) into the folder ``out``.

    ``out`` must be absent, empty, or a previous export (replaced). The files are written to a
    temporary folder beside ``out``, checked (each exported part against PyTorch on random
    inputs, and the manifest read back with its sha256s), then moved into place: a failed export
    leaves no half folder.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: use {' or '.join(FORMATS)}")
    if format == "onnx":
        _require_onnx()
    out = Path(out)
    if (Path(model) / MANIFEST_FILE).is_file():
        raise ExportError(f"{model}: already an export; give the trained model (best.pt or a model folder)")
    _check_out(out)
    predictor = load_predictor(model, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    try:
        manifest = _write_folder(predictor, staging, format, opset)
        read_manifest(staging)  # what a reader checks: the format, every file, every sha256
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out, manifest)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError('--format onnx needs onnx and onnxruntime: pip install -e ".[onnx]"') from None


def _check_out(out: Path) -> None:
    if out.is_file():
        raise ExportError(f"{out}: is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise ExportError(f"{out}: a folder that holds other files; give a new or empty folder (or a previous export)")


def _write_folder(predictor: Predictor, folder: Path, fmt: str, opset: int) -> dict[str, Any]:
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    input_dim = int(predictor.model.hparams["input_dim"])
    checks: dict[str, float] = {}
    # The backbone goes in every export, also for a model that reads no appearance: vidseq's
    # extraction runs it, and its spec sets the frames that the motion and pose streams see.
    backbone = predictor.backbone
    path = folder / f"backbone{suffix}"
    _write_backbone(backbone, path, fmt, opset)
    checks["backbone"] = _check_backbone(backbone, path, fmt)
    spec = backbone.spec
    backbone_section = {
        "file": path.name,
        "inputs": [_io(BACKBONE_INPUT, ["batch", 3, spec.input_size, spec.input_size], "float32")],
        "outputs": [_io(BACKBONE_OUTPUT, ["batch", spec.feature_dim], "float32")],
        "spec": _spec_dict(spec),
    }
    head = export_head(predictor.model)
    head_path = folder / f"head{suffix}"
    _write_head(head, input_dim, head_path, fmt, opset)
    checks["head"] = _check_head(head, head_path, fmt, input_dim)
    model_state = predictor.model.hparams
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "runtime": fmt,
        "opset": opset if fmt == "onnx" else None,
        "vidseq_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": list(predictor.labels),
        "model": {"name": model_name(predictor.model), "hparams": _plain(model_state)},
        "streams": _streams(predictor, backbone_section),
        "fusion": _fusion(predictor),
        "backbone": backbone_section,
        "head": {
            "file": head_path.name,
            "inputs": [
                _io(HEAD_INPUTS[0][0], ["batch", "time", input_dim], "float32"),
                _io(HEAD_INPUTS[1][0], ["batch"], "int64"),
            ],
            "outputs": [_io(HEAD_OUTPUT[0], ["batch", len(predictor.labels)], "float32")],
            "input_dim": input_dim,
            "lengths": "frames of each video in the batch (1..time); steps at or after it are padding and never "
            "read. A single video: batch 1, lengths [time].",
        },
        "preprocessing": _preprocessing(predictor, backbone_section),
        "sampling": predictor.sampling.model_dump(mode="json"),
        "io": predictor.io.model_dump(mode="json"),
        "recipe": _recipe(predictor),
        "not_exported": _not_exported(predictor),
        "clip_seconds": predictor.clip_seconds,
        "checks": {"max_abs_difference_vs_pytorch": checks},
        "files": {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _io(name: str, shape: list[Any], dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _spec_dict(spec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["mean"], data["std"] = list(spec.mean), list(spec.std)
    return _plain(data)


def _streams(predictor: Predictor, backbone_section: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each stream the head reads, its dims of the head's input and what computes it."""
    streams, start = [], 0
    for name in predictor.streams:
        if name == "appearance":
            dim = backbone_section["spec"]["feature_dim"]
            entry = {"name": name, "computed_by": f"the backbone ({backbone_section['file']})"}
        elif name == "pose":
            from vidseq.features.pose import pose_dim

            dim = pose_dim(predictor.pose)
            entry = {"name": name, "computed_by": POSE_COMPUTED_BY, "settings": predictor.pose.model_dump(mode="json")}
        elif name == "trajectory":
            from vidseq.features.actors import TRAJECTORY_DIMS

            dim = TRAJECTORY_DIMS
            entry = {"name": name, "computed_by": TRAJECTORY_COMPUTED_BY}
        else:
            from vidseq.features.motion import motion_dim

            dim = motion_dim(predictor.motion)
            entry = {
                "name": name,
                "computed_by": MOTION_COMPUTED_BY,
                "settings": predictor.motion.model_dump(mode="json"),
            }
        streams.append({**entry, "dims": [start, start + dim]})
        start += dim
    return streams


def _fusion(predictor: Predictor) -> dict[str, Any] | None:
    if len(predictor.streams) < 2:
        return None
    hp = predictor.model.hparams
    if "members" in hp:
        return {
            "kind": "late",
            "in": "head",
            "weights": {m["stream"]: w for m, w in zip(hp["members"], hp["weights"])},
            "how": "each stream's model reads its dims; probabilities averaged with these weights (inside the head)",
        }
    return {"kind": "early", "how": "the streams' vectors concatenated per frame, in the order of streams"}


def _preprocessing(predictor: Predictor, backbone_section: dict[str, Any] | None) -> dict[str, Any]:
    spec = (backbone_section or {}).get("spec")
    steps = [
        "decode the video and sample frames as `sampling` says (vidseq.io, vidseq.sampling; `io` names the decoder)",
        "fit each frame: resize the short side to `resize` and centre-crop `input_size` (fit crop), or resize "
        "the long side to `input_size` and pad to a square with grey 114 (fit letterbox)",
        "normalise: RGB, (pixel / 255 - mean) / std, layout NCHW float32",
        "run the backbone per frame -> features (N, D); join the streams per frame, in the order of `streams`",
        "run the head on (1, T, D) with lengths [T] (or a padded batch with each video's length)",
    ]
    section: dict[str, Any] = {"steps": steps, "precision": "float32"}
    if spec:
        section.update(
            {
                "input_size": spec["input_size"],
                "resize": spec["resize"],
                "fit": spec["fit"],
                "interpolation": spec["interpolation"],
                "mean": spec["mean"],
                "std": spec["std"],
                "scale": "pixel / 255",
                "color": "RGB",
                "layout": "NCHW",
            }
        )
    return section


def _recipe(predictor: Predictor) -> dict[str, Any]:
    """The extraction recipe, as a checkpoint records it (``vidseq.predict.exported`` rebuilds
    the predictor's sampling, io and motion settings from it)."""
    recipe = {
        "backbone": predictor.backbone_config.model_dump(mode="json"),
        "sampling": predictor.sampling.model_dump(mode="json"),
        "io": predictor.io.model_dump(mode="json"),
        "extract": predictor.extract_config.model_dump(mode="json", include={"precision", "channels_last"}),
    }
    if predictor.motion is not None:
        recipe["motion"] = predictor.motion.model_dump(mode="json")
    if getattr(predictor, "pose", None) is not None:
        recipe["pose"] = predictor.pose.model_dump(mode="json")
    if getattr(predictor, "actors", None) is not None:
        recipe["actors"] = predictor.actors.model_dump(mode="json")
    return recipe


def _not_exported(predictor: Predictor) -> list[str]:
    """What vidseq computes around the exported networks, which the files do not hold."""
    parts = ["decoding and frame sampling (vidseq.io, vidseq.sampling: see sampling and io)"]
    if predictor.motion is not None:
        parts.append(f"the motion stream: {MOTION_COMPUTED_BY}")
    if getattr(predictor, "pose", None) is not None:
        parts.append(f"the pose stream: {POSE_COMPUTED_BY}")
    if getattr(predictor, "actors", None) is not None:
        parts.append("the person detector and tracker of per-person models (vidseq.features.actors: see recipe.actors)")
    return parts


# -- checks ----------------------------------------------------------------------------------


def _check_backbone(backbone, path: Path, fmt: str) -> float:
    size = backbone.spec.input_size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = backbone(x).float().numpy()
    got = _run_backbone_file(path, fmt, x.numpy())
    return _difference("backbone", got, expected)


def _check_head(head: ExportHead, path: Path, fmt: str, input_dim: int) -> float:
    """The exported head against the wrapper, on another batch and time than it was traced with
    (lengths 7, 2, 4, padded): batch and time are dynamic, padding is not read."""
    lengths = torch.tensor([7, 2, 4], dtype=torch.int64)
    x = torch.randn(3, 7, input_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = head(x, lengths).numpy()
    if fmt == "torchscript":
        with torch.no_grad():
            got = load_torchscript(path)(x, lengths).numpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {HEAD_INPUTS[0][0]: x.numpy(), HEAD_INPUTS[1][0]: lengths.numpy()})[0]
    return _difference("head", got, expected)


def _run_backbone_file(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    if fmt == "torchscript":
        with torch.no_grad():
            return load_torchscript(path)(torch.from_numpy(x)).float().numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {BACKBONE_INPUT: x})[0]


_CHECK_ATOL = 1e-3


def _difference(part: str, got: np.ndarray, expected: np.ndarray) -> float:
    diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if got.shape != expected.shape or not diff <= _CHECK_ATOL:
        raise ExportError(
            f"the exported {part} does not match PyTorch (shape {got.shape} vs {expected.shape}, "
            f"max difference {diff:.3g} > {_CHECK_ATOL:g}); please report it"
        )
    return diff
