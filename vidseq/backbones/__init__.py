"""Frame -> feature models: each a spec (preprocessing, feature size) and a module.

Place in the data flow: sampled frames ``uint8 (N, H, W, 3)`` RGB -> ``fit_frames`` (fitted
``(N, S, S, 3)``) -> ``FrameEncoder`` -> ``(N, D)`` per-frame features for ``vidseq.features``
(the extraction loop and its store) and ``vidseq.predict``: the one frames -> features path.

    backbone = create_backbone("efficientnet_lite0", pooling="grid2", device="cuda")
    encoder = FrameEncoder(backbone, precision="auto", channels_last=True)
    features = encoder(fit_frames(frames, backbone.spec))  # numpy (N, backbone.spec.feature_dim)
    cache_key = backbone.spec.key()                        # everything that changes the features
    onnx_encoder = FrameEncoder(backbone, runtime="onnxruntime")  # same features via ONNX Runtime

Importing this package registers the table (``list_backbones()``) but imports neither
torchvision models nor ultralytics nor timm: builders import them when called.
"""

from __future__ import annotations

# Imported for their registrations; each is cheap (heavy imports live inside the builders).
from vidseq.backbones import efficientnet_lite, timm_models, torchvision_models, yolo  # noqa: F401
from vidseq.backbones.base import (
    Backbone,
    BackboneError,
    BackboneSpec,
    normalize_frames,
    pool_maps,
)
from vidseq.backbones.efficientnet_lite import EfficientNetLite0Backbone, imagenet_classes
from vidseq.backbones.encode import (
    FrameEncoder,
    autocast_dtype,
    decode_size,
    decoded_frames,
    fit_frames,
    preprocess_frames,
)
from vidseq.backbones.onnx import (
    PARITY_TOL,
    RUNTIMES,
    BackboneExportError,
    OnnxFallbackWarning,
    cached_export,
    export_backbone,
    parity_error,
)
from vidseq.backbones.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    DEFAULT_WEIGHTS,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_WEIGHTS",
    "IMAGENET_CLASSES",
    "PARITY_TOL",
    "RUNTIMES",
    "Backbone",
    "BackboneError",
    "BackboneExportError",
    "BackboneSpec",
    "EfficientNetLite0Backbone",
    "FrameEncoder",
    "OnnxFallbackWarning",
    "autocast_dtype",
    "cached_export",
    "create_backbone",
    "decode_size",
    "export_backbone",
    "decoded_frames",
    "fit_frames",
    "imagenet_classes",
    "list_backbones",
    "normalize_frames",
    "parity_error",
    "pool_maps",
    "preprocess_frames",
    "register_backbone",
]


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "IMAGENET_CLASSES":  # loaded on first use, from torchvision's metadata
        return imagenet_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
