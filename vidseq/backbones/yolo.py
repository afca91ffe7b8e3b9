"""Ultralytics YOLO networks as backbones: per-frame features from chosen layers.

Place in the data flow: frames -> (ours) letterbox or crop to a multiple of 32, scaled to [0, 1]
-> the YOLO network's layers up to the last chosen one (the head never runs) -> each chosen
layer's map pooled, concatenated -> ``vidseq.features``. We call the torch module on tensors we
prepared, never ``Model.predict``/``embed`` (they letterbox and go through the predictor).

``weights``: an Ultralytics checkpoint ``.pt`` (pickled classes: load only files you trust) or a
model ``.yaml`` such as ``yolov8n.yaml``/``yolo11n-cls.yaml`` (architecture, random weights; built
offline). ultralytics is imported only inside the builder, after ``YOLO_OFFLINE=1``,
``YOLO_AUTOINSTALL=0`` and a writable ``YOLO_CONFIG_DIR`` are set (unless already set).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vidseq.backbones.base import Backbone, BackboneError, BackboneSpec, file_sha256, grid_size
from vidseq.backbones.registry import DEFAULT_WEIGHTS, register_backbone
from vidseq.backbones.spec import cache_folder

MAX_STRIDE = 32
_PROBE_SIZE = 64
_TRUTHY = frozenset({"1", "true", "yes", "on", "y", "t"})  # as ultralytics reads YOLO_OFFLINE


def _config_dir() -> Path:
    """A writable folder for Ultralytics' settings file: ~/.cache/vidseq/ultralytics or /tmp."""
    return cache_folder("ultralytics", hint="for YOLO_CONFIG_DIR: set it to one")


def prepare_ultralytics_env() -> None:
    """Offline, no run-time pip installs, a writable settings folder (what is unset only)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(_config_dir())


def load_yolo_network(weights: str) -> nn.Module:
    """The torch network (e.g. ``DetectionModel``) of a ``.pt`` or ``.yaml``, in fp32, eval mode."""
    prepare_ultralytics_env()
    _refuse_download_offline(weights)
    from ultralytics import YOLO

    try:
        net = YOLO(weights, verbose=False).model
    except Exception as exc:  # ultralytics raises many types (FileNotFound, Connection, ...)
        raise BackboneError(
            f"cannot load YOLO model {weights!r}: {exc}. Pass an existing .pt checkpoint or a "
            "model .yaml (e.g. 'yolov8n.yaml'); offline, official .pt names cannot be downloaded"
        ) from exc
    if not isinstance(net, nn.Module) or not hasattr(net, "yaml"):
        raise BackboneError(f"{weights!r} is not a PyTorch YOLO model (exported formats are not)")
    return net.float().eval()


def _refuse_download_offline(weights: str) -> None:
    """Offline, a missing ``.pt`` is an error here: ultralytics would still ask GitHub for it."""
    offline = os.environ.get("YOLO_OFFLINE", "").strip().lower() in _TRUTHY
    if offline and not weights.endswith((".yaml", ".yml")) and not Path(weights).is_file():
        raise BackboneError(
            f"YOLO checkpoint not found: {weights} (YOLO_OFFLINE is set, so nothing is downloaded; "
            "pass an existing .pt, a model .yaml such as 'yolov8n.yaml', or set YOLO_OFFLINE=0)"
        )


class YoloBackbone(Backbone):
    """Runs a YOLO network's layers up to the last chosen one; returns the chosen layers' maps."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, layers: Sequence[int]) -> None:
        super().__init__(spec)
        self.layer_ids = tuple(sorted(set(layers)))
        self.layers = nn.ModuleList(net.model[: self.layer_ids[-1] + 1])  # the head is dropped
        self.saved = frozenset(net.save) | frozenset(self.layer_ids)

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Walks the network's graph: each layer reads the previous output or saved ones (``f``)."""
        outputs: list[Any] = []  # per layer index; None where nothing later reads it
        maps = []
        for layer in self.layers:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in self.saved else None)
            if layer.i in self.layer_ids:
                maps.append(x)
        return maps


def _default_layers(net: nn.Module) -> tuple[int]:
    """The last backbone layer (SPPF in YOLOv8 detect, C2PSA in YOLO11)."""
    return (len(net.yaml["backbone"]) - 1,)


def _check_layers(net: nn.Module, layers: Sequence[int]) -> tuple[int, ...]:
    if not layers:
        raise BackboneError("layers must name at least one layer index")
    count = len(net.model)
    bad = [i for i in layers if not 0 <= i < count]
    if bad:
        raise BackboneError(f"YOLO layer indices {bad} out of range: this model has layers 0..{count - 1}")
    return tuple(int(i) for i in layers)


@torch.no_grad()
def _probe_channels(backbone: YoloBackbone) -> list[int]:
    maps = backbone.forward_maps(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE))
    for layer_id, fmap in zip(backbone.layer_ids, maps, strict=True):
        if not isinstance(fmap, torch.Tensor) or fmap.ndim != 4:
            kind = type(backbone.layers[layer_id]).__name__
            raise BackboneError(f"YOLO layer {layer_id} ({kind}) gives no feature map; choose another")
    return [int(fmap.shape[1]) for fmap in maps]


@register_backbone("yolo")
def build_yolo(
    *,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    layers: Sequence[int] | None = None,
    input_size: int = 640,
    fit: Literal["letterbox", "crop"] = "letterbox",
    fuse: bool = True,
) -> YoloBackbone:
    """A YOLO network's features from ``layers`` (default: its last backbone layer).

    ``input_size`` must be a multiple of 32. ``fit="letterbox"`` keeps the whole frame (as YOLO
    was trained); ``"crop"`` takes the centre square. ``fuse`` folds BatchNorm into the convs.
    """
    if weights is None or str(weights) == DEFAULT_WEIGHTS:
        raise BackboneError(
            "yolo has no default weights: pass weights=<checkpoint .pt> or a model .yaml "
            "(e.g. 'yolov8n.yaml', random weights)"
        )
    if input_size % MAX_STRIDE:
        raise BackboneError(f"YOLO input_size must be a multiple of {MAX_STRIDE}, got {input_size}")
    weights = str(weights)
    net = load_yolo_network(weights)
    if fuse:
        net = net.fuse(verbose=False)
    layer_ids = _check_layers(net, _default_layers(net) if layers is None else layers)
    spec = BackboneSpec(
        name="yolo",
        weights=weights,
        weights_sha256=file_sha256(weights) if Path(weights).is_file() else None,
        input_size=input_size,
        resize=input_size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        feature_dim=0,
        pooling=pooling,
        fit=fit,
        extra={"layers": sorted(set(layer_ids)), "fused": fuse},
    )
    backbone = YoloBackbone(spec, net, layer_ids).eval()
    dim = sum(_probe_channels(backbone)) * grid_size(pooling) ** 2
    backbone.spec = dataclasses.replace(spec, feature_dim=dim)
    return backbone
