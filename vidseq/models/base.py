"""What every temporal model shares: its error, option checks and the check of its inputs.

Place in the data flow: cached per-video ``features (T, D)`` -> ``pad_sequences`` ->
``features (B, T, D)`` + ``lengths (B,)`` -> a model of ``vidseq.models`` -> ``logits (B, C)``.
Options are checked here once, so each model's ``hparams`` hold plain JSON types only and a
checkpoint rebuilds the model with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from vidseq.errors import ConfigError, VidseqError


class ModelError(VidseqError, ValueError):
    """A model was called wrongly: bad ``features``, ``lengths`` or ``state``, or no streaming."""


def int_option(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as a plain ``int >= minimum``; anything else is a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"model option {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"model option {name} must be an integer >= {minimum}, got {value}")
    return int(value)


def probability_option(name: str, value: Any) -> float:
    """``value`` as a plain ``float`` in ``[0, 1)`` (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"model option {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def bool_option(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``1``/``"yes"`` are refused, not guessed)."""
    if not isinstance(value, bool):
        raise ConfigError(f"model option {name} must be true or false, got {value!r}")
    return value


def choice_option(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"model option {name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def check_inputs(features: torch.Tensor, lengths: torch.Tensor | None, *, input_dim: int) -> torch.Tensor:
    """Check ``features (B, T, D)`` and ``lengths (B,)``; return ``lengths`` as int64 on CPU.

    ``lengths=None`` means every sequence fills all ``T`` steps. Each length must be in
    ``1..T``: a video without frames has no prediction, so it is refused here, not guessed.
    """
    if features.ndim != 3 or features.shape[-1] != input_dim:
        raise ModelError(f"features must be (batch, time, {input_dim}), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ModelError(f"features must be floating point, got {features.dtype}")
    batch, steps = features.shape[:2]
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.int64)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.is_complex():
        raise ModelError(f"lengths must be integers of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to("cpu", torch.int64)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ModelError(
            f"lengths must be in 1..{steps} (the padded time axis), got "
            f"min {int(lengths.min())}, max {int(lengths.max())}; drop videos without frames"
        )
    return lengths
