"""torchvision ImageNet CNNs as backbones: ``torchvision:<model>`` and a few named shortcuts.

Place in the data flow: frames -> (this) the last feature map before global pooling -> pooled
features -> ``vidseq.features``. Preprocessing (resize, crop, mean/std, interpolation) is read from
the weights' own transforms, so it always matches the weights. ``feature_trunk`` is the one place
where a classifier loses its head.

Weights: ``"DEFAULT"`` or an enum name (``"IMAGENET1K_V1"``; downloaded by torchvision into its
cache when online, read from that cache offline), a local ``.pth`` state dict, or ``None``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseq.backbones.base import Backbone, BackboneError, BackboneSpec, grid_size, with_size
from vidseq.backbones.registry import DEFAULT_WEIGHTS, register_backbone
from vidseq.backbones.weights import load_state_dict_file

SHORTCUTS = (
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)
_PROBE_SIZE = 64


class TorchvisionBackbone(Backbone):
    """A torchvision classifier cut before its global pooling."""

    def __init__(self, spec: BackboneSpec, trunk: nn.Module) -> None:
        super().__init__(spec)
        self.trunk = trunk

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(x)]


def feature_trunk(net: nn.Module) -> nn.Module:
    """The layers of a torchvision classifier before its global pooling (the head removed).

    Works for every model with an ``avgpool`` child run last-but-head (ResNet/ResNeXt, RegNet,
    MobileNet, EfficientNet, ConvNeXt, VGG, Swin), plus DenseNet, ShuffleNetV2 and MNASNet.
    """
    from torchvision import models

    children = dict(net.named_children())
    if any(name.lower().startswith("aux") for name in children):
        raise BackboneError(f"{type(net).__name__} has auxiliary heads: not supported as a backbone")
    if "avgpool" in children:
        before = list(children)[: list(children).index("avgpool")]
        return nn.Sequential(*(children[name] for name in before))
    if isinstance(net, models.DenseNet):
        return nn.Sequential(net.features, nn.ReLU())
    if isinstance(net, models.ShuffleNetV2):
        return nn.Sequential(*(m for name, m in children.items() if name != "fc"))
    if isinstance(net, models.MNASNet):
        return net.layers
    raise BackboneError(
        f"torchvision {type(net).__name__} has no feature map vidseq knows how to take; "
        "use a CNN (resnet, regnet, mobilenet, efficientnet, convnext, densenet...) or timm:<model>"
    )


def _weights_enum(model: str) -> Any:
    from torchvision import models

    try:
        return models.get_model_weights(model)
    except (ValueError, KeyError) as exc:
        names = ", ".join(models.list_models(module=models))
        raise BackboneError(f"unknown torchvision model {model!r}; valid: {names}") from exc


def _split_weights(weights: str | os.PathLike | None, enum: Any) -> tuple[Any, Path | None]:
    """``weights`` -> (a torchvision weights enum member or None, a local file or None)."""
    if weights is None:
        return None, None
    text = str(weights)
    member = text.rsplit(".", 1)[-1] if text.startswith(enum.__name__ + ".") else text
    if member in enum.__members__:
        return enum[member], None
    if text.endswith((".pth", ".pt")) or Path(text).expanduser().exists():
        return None, Path(text).expanduser()
    names = ", ".join(["DEFAULT", *enum.__members__])
    raise BackboneError(f"unknown weights {text!r} for {enum.__name__}: use {names}, a .pth or None")


def _meta_weights(enum: Any, sha256: str | None) -> Any:
    """The enum member whose file has this content (by the hash in its URL), else DEFAULT."""
    for member in enum:
        url_hash = member.url.rsplit("-", 1)[-1].split(".")[0]
        if sha256 and sha256.startswith(url_hash):
            return member
    return enum.DEFAULT


def _build_net(model: str, member: Any) -> nn.Module:
    from torchvision import models

    try:
        return models.get_model(model, weights=member)
    except OSError as exc:  # URLError offline, or an unwritable torch hub cache
        raise BackboneError(
            f"cannot get torchvision weights {member} ({exc}); offline, pass weights=<local copy "
            f"of {member.url.rsplit('/', 1)[-1]}> or weights=None"
        ) from exc


def _load_file(net: nn.Module, path: Path) -> str:
    state, sha256 = load_state_dict_file(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: does not fit {type(net).__name__}: {exc}") from exc
    return sha256


def _spec_from_meta(
    name: str, meta: Any, *, weights: str | None, sha256: str | None, pooling: str, channels: int
) -> BackboneSpec:
    """The spec with ``meta``'s preprocessing (a torchvision weights enum member)."""
    transform = meta.transforms()
    return BackboneSpec(
        name=name,
        weights=weights,
        weights_sha256=sha256,
        input_size=int(transform.crop_size[0]),
        resize=int(transform.resize_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation="bicubic" if transform.interpolation.value == "bicubic" else "bilinear",
        feature_dim=channels * grid_size(pooling) ** 2,
        pooling=pooling,
    )


@torch.no_grad()
def _channels(trunk: nn.Module) -> int:
    return int(trunk.eval()(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)).shape[1])


@register_backbone("torchvision:")
def build_torchvision(
    *,
    model: str,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    input_size: int | None = None,
    resize: int | None = None,
) -> TorchvisionBackbone:
    """A torchvision ImageNet classifier by name, cut before its global pooling."""
    enum = _weights_enum(model)
    member, path = _split_weights(weights, enum)
    net = _build_net(model, member)
    sha256 = _load_file(net, path) if path is not None else None
    trunk = feature_trunk(net)
    meta = member if member is not None else _meta_weights(enum, sha256)
    named = str(member) if member is not None else (str(path) if path is not None else None)
    spec = _spec_from_meta(
        f"torchvision:{model}",
        meta,
        weights=named,
        sha256=sha256,
        pooling=pooling,
        channels=_channels(trunk),
    )
    return TorchvisionBackbone(with_size(spec, input_size=input_size, resize=resize), trunk)


for _name in SHORTCUTS:
    register_backbone(_name)(functools.partial(build_torchvision, model=_name))
