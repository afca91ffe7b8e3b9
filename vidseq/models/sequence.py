"""Variable-length sequences: padding a batch, and pooling over time that ignores the padding.

Place in the data flow: per-video ``features (T_i, D)`` (from the feature store) ->
``pad_sequences`` -> ``features (B, T_max, D)`` + ``lengths (B,)`` -> a model, whose pooling
(``masked_mean``, ``masked_max``, ``AttentionPool``) reads only the first ``lengths[b]`` steps:
whatever the padding holds (zeros, garbage, even a longer neighbour) never reaches the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vidseq.models.base import ModelError


def pad_sequences(
    sequences: Sequence[np.ndarray | torch.Tensor], *, padding_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T_i, D)`` arrays/tensors -> ``padded (B, T_max, D)`` float32, ``lengths (B,)`` int64.

    Every sequence needs at least one frame and the same ``D``; the padded tensor is on the CPU
    (move the batch to the device once, after collation).
    """
    if len(sequences) == 0:
        raise ModelError("pad_sequences needs at least one sequence, got none")
    tensors = [torch.as_tensor(s).to("cpu", torch.float32) for s in sequences]
    dims = {t.shape[1] if t.ndim == 2 else None for t in tensors}
    for index, tensor in enumerate(tensors):
        if tensor.ndim != 2 or tensor.shape[0] == 0:
            raise ModelError(f"sequence {index} must be (T, D) with T >= 1 frames, got {tuple(tensor.shape)}")
    if len(dims) != 1:
        raise ModelError(f"sequences must share one feature size D, got {sorted(dims)}")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    padded = torch.full((len(tensors), int(lengths.max()), tensors[0].shape[1]), float(padding_value))
    for index, tensor in enumerate(tensors):
        padded[index, : tensor.shape[0]] = tensor
    return padded, lengths


def length_mask(lengths: torch.Tensor, steps: int, *, device: torch.device | None = None) -> torch.Tensor:
    """``(B, steps)`` bool: ``True`` at the valid steps ``t < lengths[b]``."""
    lengths = lengths.to(device or lengths.device)
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values (B, T, F)`` over the valid steps of ``mask (B, T)`` -> ``(B, F)``.

    ``torch.where``, not a product: padding that holds inf or NaN cannot leak through ``0 * x``.
    """
    kept = torch.where(mask[..., None], values, values.new_zeros(()))
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(values.dtype)
    return kept.sum(dim=1) / count


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Maximum of ``values (B, T, F)`` over the valid steps of ``mask (B, T)`` -> ``(B, F)``."""
    lowest = torch.finfo(values.dtype).min
    return torch.where(mask[..., None], values, values.new_full((), lowest)).amax(dim=1)


class AttentionPool(nn.Module):
    """Additive attention over time: ``softmax`` of a learned score per step, masked, then a sum.

    ``(B, T, F)`` + ``mask (B, T)`` -> ``(B, F)``; padded steps get weight exactly 0.
    """

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        values = torch.where(mask[..., None], values, values.new_zeros(()))
        scores = self.score(values).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("bt,btf->bf", weights, values)
