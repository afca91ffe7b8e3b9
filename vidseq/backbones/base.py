"""What every backbone is: a module frames -> features, described by its ``BackboneSpec``.

Place in the data flow: frames (``uint8 (N, H, W, 3)`` RGB, from ``vidseq.io`` + ``sampling``)
-> fitted to ``S x S`` and normalised (``encode.fit_frames``, ``spec.normalize_frames``) ->
``Backbone.forward`` (feature maps -> pooled, concatenated) -> ``features (N, D)`` for
``vidseq.features``. Subclasses only produce feature maps (``forward_maps``); pooling, and with it
the removal of every classifier head, happens here in one place. ``encode.FrameEncoder`` is the
one function that runs a backbone on frames (device, channels_last, autocast).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vidseq.backbones.encode import FrameEncoder, fit_frames, preprocess_frames
from vidseq.backbones.spec import (  # re-exported: the backbone modules import them from here
    SPEC_VERSION,
    BackboneError,
    BackboneSpec,
    file_sha256,
    frames_tensor,
    grid_size,
    normalize_frames,
    pool_maps,
    with_size,
)

__all__ = [
    "SPEC_VERSION", "Backbone", "BackboneError", "BackboneSpec", "file_sha256", "frames_tensor", "grid_size",
    "normalize_frames", "pool_maps", "with_size",
]  # fmt: skip


class Backbone(nn.Module):
    """Frames -> pooled per-frame features. Subclasses implement ``forward_maps`` only."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter (CPU for a parameterless module)."""
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Preprocessed ``(N, 3, S, S)`` -> the feature maps ``(N, C, h, w)`` that get pooled."""
        raise NotImplementedError

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames ``uint8 (N, H, W, 3)`` RGB -> ``float32 (N, 3, S, S)``, on the frames' device."""
        return preprocess_frames(frames, self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``(N, 3, S, S)`` -> ``float32 (N, spec.feature_dim)`` pooled features."""
        return pool_maps(self.forward_maps(x), self.spec.pooling)

    def features(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames ``uint8 (N, H, W, 3)`` RGB of any size -> ``float32 (N, D)`` features, on the
        module's device: ``fit_frames`` then a ``FrameEncoder`` at the extraction's defaults
        (precision "auto", channels_last: the module is converted in place), i.e. the features
        ``vidseq extract`` stores for frames its decoder gave at this size.
        """
        fitted = fit_frames(frames_tensor(frames).cpu().numpy(), self.spec)
        return FrameEncoder(self).encode(fitted)
