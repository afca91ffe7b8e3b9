"""A backbone's spec (preprocessing + feature size, the cache key of its features) and the
small pure pieces every backbone shares: normalising frames, pooling feature maps, hashing
weight files.

Place in the data flow: below ``base`` (the module) and ``encode`` (frames -> features); both
build on this, so neither imports the other back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vidseq.errors import VidseqError

# Bump when preprocessing or pooling code changes the features of an unchanged spec.
SPEC_VERSION = 1
_GRID = re.compile(r"^grid([1-9])$")
_HASH_CHUNK = 1 << 20


class BackboneError(VidseqError):
    """A backbone cannot be built: unknown name, missing weights, bad option or input."""


def grid_size(pooling: str) -> int:
    """Cells per side of a pooling mode: ``"avg"`` -> 1, ``"gridK"`` -> K (K x K cells)."""
    if pooling == "avg":
        return 1
    match = _GRID.match(pooling)
    if not match:
        raise BackboneError(f"unknown pooling {pooling!r}: use 'avg' or 'gridK' with K in 1..9 (e.g. 'grid2')")
    return int(match.group(1))


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to turn frames into this backbone's features, and to key a cache on them.

    ``mean``/``std`` apply to frames scaled to [0, 1]. ``fit="crop"``: resize the short side to
    ``resize`` then centre-crop ``input_size``; ``fit="letterbox"``: resize the long side to
    ``input_size`` and pad to a square with grey (YOLO style). ``feature_dim`` is the length after
    pooling: ``channels * k * k`` for ``gridK``, cell-major (cell 0's channels first, row by row).
    """

    name: str
    weights: str | None
    input_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    pooling: str = "avg"
    fit: Literal["crop", "letterbox"] = "crop"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grid_size(self.pooling)
        if self.fit not in ("crop", "letterbox"):
            raise BackboneError(f"unknown fit {self.fit!r}: use 'crop' or 'letterbox'")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise BackboneError(f"unknown interpolation {self.interpolation!r}: bilinear or bicubic")
        if self.input_size < 1 or (self.fit == "crop" and self.resize < self.input_size):
            raise BackboneError(f"{self.name}: need 1 <= input_size <= resize, got {self.input_size}/{self.resize}")

    def key(self) -> dict[str, Any]:
        """Everything that changes the features, as plain JSON-able values (for cache keys).

        Weights are identified by their content hash where a file was loaded (so the same file
        found at another path gives the same key), else by their name (enum or ``None``).
        ``weights=None`` means random init: such features are not reproducible across builds.
        """
        key = dataclasses.asdict(self)
        key["weights"] = self.weights_sha256 or self.weights
        del key["weights_sha256"]
        key["mean"], key["std"] = list(self.mean), list(self.std)
        key["spec_version"] = SPEC_VERSION
        return key


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def with_size(spec: BackboneSpec, *, input_size: int | None, resize: int | None) -> BackboneSpec:
    """``spec`` at another input size; ``resize`` keeps the spec's resize/crop ratio if unset."""
    if input_size is None and resize is None:
        return spec
    size = input_size or spec.input_size
    if resize is None:
        resize = round(size * spec.resize / spec.input_size)
    return dataclasses.replace(spec, input_size=size, resize=resize)


def frames_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Checks frames are ``uint8 (N, H, W, 3)`` RGB (numpy or torch, any device); returns torch.

    A numpy array is wrapped without a copy where it is contiguous.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[-1] != 3:
        shape = tuple(getattr(frames, "shape", ())) or type(frames).__name__
        raise BackboneError(f"frames must be uint8 RGB of shape (N, H, W, 3), got {shape}")
    if x.dtype != torch.uint8:
        raise BackboneError(f"frames must be uint8 RGB (0..255), got dtype {x.dtype}")
    return x


def normalize_frames(frames: np.ndarray | torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """Frames already fitted to ``(N, S, S, 3)`` uint8 (resized and cropped elsewhere, e.g. by
    the extraction's decode workers) -> normalised ``float32 (N, 3, S, S)``, channels-last in
    memory (what a channels_last network wants).
    """
    x = frames_tensor(frames)
    if tuple(x.shape[1:3]) != (spec.input_size, spec.input_size):
        raise BackboneError(f"frames must already be {spec.input_size}x{spec.input_size}, got {tuple(x.shape[1:3])}")
    return _normalize(x.permute(0, 3, 1, 2).float(), spec)


def _normalize(x: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """Float ``0..255`` (a new tensor: normalised in place) -> ``(x / 255 - mean) / std``."""
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1) * 255.0
    return x.sub_(mean).div_(std)


def pool_maps(maps: list[torch.Tensor], pooling: str) -> torch.Tensor:
    """Feature maps ``(N, C_i, h, w)`` -> ``float32 (N, sum(C_i) * k * k)``, cell-major per map."""
    k = grid_size(pooling)
    pooled = []
    for fmap in maps:
        cells = F.adaptive_avg_pool2d(fmap.float(), k)  # (N, C, k, k)
        pooled.append(cells.permute(0, 2, 3, 1).flatten(1))
    return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)


def cache_folder(name: str, *, hint: str) -> Path:
    """A writable folder for vidseq's caches: ``$XDG_CACHE_HOME/vidseq/<name>`` (``~/.cache``), else
    ``vidseq-<name>`` in the temp dir; BackboneError with ``hint`` (what to set) when neither is."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidseq" / name
    for folder in (cache, Path(tempfile.gettempdir()) / f"vidseq-{name}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise BackboneError(f"no writable folder {hint}")
