"""The table of backbones: name -> builder, in one dict, built lazily.

Place in the data flow: ``vidseq.features`` (and the CLI through the config) ask
``create_backbone(name, ...)`` for a frames -> features module. Builders import their heavy
libraries (ultralytics, timm) only when called, so importing ``vidseq.backbones`` stays cheap.
A family name ending in ``:`` (``"torchvision:"``, ``"timm:"``) takes the part after the colon
as its model name: ``create_backbone("torchvision:resnet34")``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from vidseq.backbones.base import Backbone, BackboneError, grid_size

Builder = Callable[..., Backbone]
B = TypeVar("B", bound=Builder)

BACKBONES: dict[str, Builder] = {}
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_WEIGHTS = "DEFAULT"


def register_backbone(name: str) -> Callable[[B], B]:
    """Decorator: put ``builder(*, weights, pooling, **options) -> Backbone`` in the table."""

    def decorator(builder: B) -> B:
        if name in BACKBONES:
            raise BackboneError(f"backbone {name!r} is already registered")
        BACKBONES[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    """The valid names, sorted; families are shown as ``torchvision:<model>``."""
    return sorted(n + "<model>" if n.endswith(":") else n for n in BACKBONES)


def _lookup(name: str) -> tuple[Builder, dict[str, Any]]:
    """The builder of ``name`` and the options its name implies (a family's model name)."""
    if name in BACKBONES and not name.endswith(":"):
        return BACKBONES[name], {}
    family, colon, model = name.partition(":")
    if colon and model and family + ":" in BACKBONES:
        return BACKBONES[family + ":"], {"model": model}
    raise BackboneError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")


def _check_options(name: str, builder: Builder, options: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = sorted(set(params) - {"weights", "pooling", "model"})
        raise BackboneError(f"backbone {name!r} got unknown option(s) {unknown}; its options are: {valid}")


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    device: str | torch.device = "cpu",
    **options: Any,
) -> Backbone:
    """Build a backbone by name, in eval mode on ``device``.

    ``weights``: ``"DEFAULT"`` (the kind's usual pretrained weights), an enum name
    (torchvision), a file path, or ``None`` for random init (shape tests only). ``pooling``:
    ``"avg"`` or ``"gridK"`` (K x K cells, concatenated). ``options`` go to the builder, e.g.
    ``input_size=160`` or, for YOLO, ``layers=(9,)``.
    """
    builder, implied = _lookup(name)
    grid_size(pooling)  # fail early on a bad pooling name
    _check_options(name, builder, options)
    backbone = builder(weights=weights, pooling=pooling, **implied, **options)
    return backbone.to(device).eval()
