"""timm CNNs as backbones (optional): ``timm:<model>``, where timm is installed.

Place in the data flow: frames -> (this) ``forward_features`` map, the head removed by timm's
``num_classes=0`` -> pooled features -> ``vidseq.features``. Preprocessing comes from the
model's ``pretrained_cfg`` (input size, crop_pct, mean/std, interpolation), as timm's own
eval transform does. Models whose features are tokens (ViTs) are refused: no spatial map to pool.

Weights: ``"DEFAULT"`` (timm's default pretrained tag, downloaded from the Hugging Face hub when
online), a local file (``pretrained_cfg_overlay={"file": ...}``), or ``None``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseq.backbones.base import (
    Backbone,
    BackboneError,
    BackboneSpec,
    file_sha256,
    grid_size,
    with_size,
)
from vidseq.backbones.registry import DEFAULT_WEIGHTS, register_backbone


class TimmBackbone(Backbone):
    """A timm model's ``forward_features`` map."""

    def __init__(self, spec: BackboneSpec, net: nn.Module) -> None:
        super().__init__(spec)
        self.net = net

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.net.forward_features(x)]


def _create(model: str, weights: str | os.PathLike | None) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise BackboneError(f"timm:{model} needs timm: `pip install timm`") from exc
    options: dict[str, Any] = {"pretrained": weights is not None, "num_classes": 0}
    if weights is not None and str(weights) != DEFAULT_WEIGHTS:
        if not Path(weights).is_file():
            raise BackboneError(f"weights file not found: {weights}")
        options["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        return timm.create_model(model, **options).eval()
    except Exception as exc:  # unknown name (RuntimeError), hub download errors (many types)
        raise BackboneError(f"cannot create timm model {model!r} with weights={weights!r}: {exc}") from exc


def _spec(model: str, net: nn.Module, *, weights: str | None, pooling: str) -> BackboneSpec:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=net)
    size = int(config["input_size"][-1])
    interpolation = config.get("interpolation", "bilinear")
    return BackboneSpec(
        name=f"timm:{model}",
        weights=weights,
        weights_sha256=file_sha256(weights) if weights and Path(weights).is_file() else None,
        input_size=size,
        resize=math.floor(size / config.get("crop_pct", 1.0)),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
        feature_dim=_channels(net, model, size) * grid_size(pooling) ** 2,
        pooling=pooling,
    )


@torch.no_grad()
def _channels(net: nn.Module, model: str, size: int) -> int:
    """Channels of the feature map, probed at the model's own size (some models fix it)."""
    fmap = net.forward_features(torch.zeros(1, 3, size, size))
    if fmap.ndim != 4:
        raise BackboneError(f"timm:{model} gives tokens {tuple(fmap.shape)}, not a feature map")
    return int(fmap.shape[1])


def _weights_name(net: nn.Module, model: str, weights: str | os.PathLike | None) -> str | None:
    if weights is None:
        return None
    if str(weights) != DEFAULT_WEIGHTS:
        return str(weights)
    tag = getattr(net, "pretrained_cfg", {}).get("tag")
    return f"{model}.{tag}" if tag else model


@register_backbone("timm:")
def build_timm(
    *,
    model: str,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    input_size: int | None = None,
    resize: int | None = None,
) -> TimmBackbone:
    """A timm CNN by name, features before its head."""
    net = _create(model, weights)
    named = _weights_name(net, model, weights)
    spec = _spec(model, net, weights=named, pooling=pooling)
    return TimmBackbone(with_size(spec, input_size=input_size, resize=resize), net)
