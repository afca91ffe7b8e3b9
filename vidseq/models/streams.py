"""The input layout of a model: named streams side by side per frame, each with its own treatment.

Place in the data flow: ``features (B, T, D)`` (the streams of ``vidseq.training.sequences``
concatenated per frame) + the valid-step ``mask (B, T)`` -> **StreamInput** -> the same shape,
each stream treated as it needs -> the model's RNN / transformer / MLP.

A model's ``streams`` option declares the layout, ``[[name, dims], ...]`` in the order of the
dims (recorded in its ``hparams``, so a checkpoint says which dims are whose):

- ``appearance`` (a frozen CNN's vector): optionally centred per video (``center``: each
  video's own mean over its valid frames is subtracted, so what stays is how frames change),
  then a per-frame LayerNorm over the appearance dims (``normalize_input``).
- every other stream (``motion``: pooled flow and intensity change; ``trajectory``: a
  person's box and its velocities; ``pose``: body keypoints): **standardised per dimension**
  with statistics fitted on the training split (``fit_stream_stats``) and kept as buffers of
  this module, so they travel in the checkpoint's ``state_dict`` and in every export. Never
  centred per video (a constant pan or a held posture *is* the signal) and never LayerNorm'd
  per frame (that maps a pan left and a pan down to one vector, and divides a pose by its
  own spread across numbers that mix coordinates, visibilities and a flag).
- ``pose`` in particular: its last dim is the presence flag (``vidseq.features.pose``). Its
  statistics come from the frames where a person is present; the flag passes unchanged, and a
  frame with nobody stays all zeros after the standardisation (absent is told apart from an
  average posture).

Before a model is fitted the statistics are the identity (shift 0, scale 1). Standardisation
is what the scales need: the real clips' flow is about 0.55 % of the frame per frame against
4.3 % for the camera synth's pans, so raw vectors put very different scales before one RNN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq.errors import ConfigError

LAYERNORM_STREAMS = ("appearance",)  # the rest are standardised with fitted statistics
PRESENCE_FLAG = {"pose": -1}  # stream -> index (in the stream) of its presence flag
MIN_SCALE = 1e-3  # a dim whose spread on the training split is below this is divided by this


Layout = list[list[Any]]  # [[name, dims], ...]


def streams_option(value: Any, input_dim: int) -> Layout:
    """The ``streams`` option as ``[[name, dims], ...]`` covering exactly ``input_dim`` dims.

    ``None``: one appearance stream of all the dims."""
    if value is None:
        return [["appearance", int(input_dim)]]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"model option streams must be a list of [name, dims] pairs, got {value!r}")
    layout, names = [], set()
    for item in value:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
            or item[1] < 1
        ):
            raise ConfigError(f"model option streams: each entry must be [name, dims >= 1], got {item!r}")
        if item[0] in names:
            raise ConfigError(f"model option streams names {item[0]!r} twice: {value!r}")
        names.add(item[0])
        layout.append([item[0], int(item[1])])
    total = sum(dims for _, dims in layout)
    if total != input_dim:
        raise ConfigError(f"model option streams covers {total} dims, but input_dim is {input_dim}: {value!r}")
    return layout


def layout_from_motion_dims(input_dim: int, motion_dims: int) -> Layout:
    """The layout of a checkpoint written before layouts existed (``motion_dims``: the last N dims)."""
    motion_dims = int(motion_dims or 0)
    layout = [["appearance", input_dim - motion_dims]] if input_dim > motion_dims else []
    return layout + ([["motion", motion_dims]] if motion_dims else [])


def spans(layout: Iterable[Sequence[Any]]) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of each stream."""
    out, start = [], 0
    for name, dims in layout:
        out.append((str(name), start, start + int(dims)))
        start += int(dims)
    return out


def _masked_centre(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence minus its mean over its valid steps; padded steps zero."""
    keep = mask[..., None]
    valid = torch.where(keep, x, torch.zeros_like(x))
    mean = valid.sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1).to(x.dtype)
    return torch.where(keep, x - mean, valid)


class StreamInput(nn.Module):
    """``features (B, T, D)``, ``mask (B, T)`` -> each stream treated as its name says (see above).

    ``shift`` and ``scale`` (``(D,)`` buffers, identity on LayerNorm'd dims) hold the fitted
    statistics; ``set_stats`` puts them in. Plain slicing with Python ints: it traces for ONNX."""

    def __init__(self, layout: Layout, *, normalize_input: bool = True, center: bool = False) -> None:
        super().__init__()
        self.layout = [[str(n), int(d)] for n, d in layout]
        self.center = bool(center)
        self.parts = spans(self.layout)
        normed = sum(stop - start for name, start, stop in self.parts if name in LAYERNORM_STREAMS)
        self.norm = nn.LayerNorm(normed) if normalize_input and normed else nn.Identity()
        dim = sum(d for _, d in self.layout)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def standardised(self) -> list[str]:
        return [name for name, _, _ in self.parts if name not in LAYERNORM_STREAMS]

    def set_stats(self, shift: np.ndarray | torch.Tensor, scale: np.ndarray | torch.Tensor) -> None:
        """Put fitted statistics (``(D,)`` each, from ``fit_stream_stats``) into the buffers."""
        shift, scale = torch.as_tensor(shift, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)
        if shift.shape != self.shift.shape or scale.shape != self.scale.shape:
            raise ConfigError(f"stream statistics must be ({self.shift.shape[0]},), got {tuple(shift.shape)}")
        if not bool(torch.isfinite(shift).all() and (scale > 0).all()):
            raise ConfigError("stream statistics must be finite with positive scales")
        with torch.no_grad():
            self.shift.copy_(shift.to(self.shift.device))
            self.scale.copy_(scale.to(self.scale.device))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed, other = [], []
        for name, start, stop in self.parts:
            x = features[..., start:stop]
            if name in LAYERNORM_STREAMS:
                normed.append((start, x))
                continue
            y = (x - self.shift[start:stop].to(x.dtype)) / self.scale[start:stop].to(x.dtype)
            if name in PRESENCE_FLAG:
                flag_at = PRESENCE_FLAG[name] % (stop - start)
                flag = x[..., flag_at : flag_at + 1]
                present = flag > 0.5
                y = torch.where(present, y, torch.zeros_like(y))
                y = torch.cat([y[..., :flag_at], flag, y[..., flag_at + 1 :]], dim=-1)
            other.append((start, y))
        if normed:
            x = torch.cat([x for _, x in normed], dim=-1) if len(normed) > 1 else normed[0][1]
            if self.center:
                x = _masked_centre(x, mask)
            x = self.norm(x)
            widths = [part.shape[-1] for _, part in normed]
            normed = list(zip([s for s, _ in normed], torch.split(x, widths, dim=-1)))
        pieces = sorted(normed + other, key=lambda item: item[0])
        return pieces[0][1] if len(pieces) == 1 else torch.cat([p for _, p in pieces], dim=-1)


def fit_stream_stats(features: Sequence[np.ndarray], layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim ``shift`` (mean) and ``scale`` (standard deviation) of the standardised streams over
    every frame of ``features`` (the training split's ``(T_i, D)`` arrays); identity on the
    LayerNorm'd dims. Pose dims use the frames where the flag says a person is present (the flag
    itself stays identity). A dim that hardly varies is divided by ``MIN_SCALE`` at least."""
    dim = sum(int(d) for _, d in layout)
    shift, scale = np.zeros(dim, np.float64), np.ones(dim, np.float64)
    if not features:
        return shift.astype(np.float32), scale.astype(np.float32)
    frames = np.concatenate([np.asarray(f, dtype=np.float64) for f in features], axis=0)
    for name, start, stop in spans(layout):
        if name in LAYERNORM_STREAMS:
            continue
        x = frames[:, start:stop]
        if name in PRESENCE_FLAG:
            flag_at = PRESENCE_FLAG[name] % (stop - start)
            x = x[x[:, flag_at] > 0.5]
        if len(x):
            shift[start:stop] = x.mean(axis=0)
            scale[start:stop] = np.maximum(x.std(axis=0), MIN_SCALE)
        if name in PRESENCE_FLAG:
            shift[start + flag_at], scale[start + flag_at] = 0.0, 1.0
    return shift.astype(np.float32), scale.astype(np.float32)
