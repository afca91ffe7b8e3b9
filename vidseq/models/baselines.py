"""Baselines that a recurrent model must beat to earn its keep: bag of frames, temporal convs.

Place in the data flow: the same ``features (B, T, D)`` + ``lengths (B,)`` as
``RecurrentClassifier`` -> ``logits (B, C)``. ``MeanPoolClassifier`` ignores frame order
entirely (a shuffled video gets the same logits), so the gap between it and an LSTM/GRU is what
order is worth on a dataset. ``TemporalConvClassifier`` sees order within its receptive field.
Both read only the first ``lengths[b]`` frames: padding never changes a prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from vidseq.errors import ConfigError
from vidseq.models.base import (
    bool_option,
    check_inputs,
    choice_option,
    int_option,
    probability_option,
)
from vidseq.models.sequence import length_mask, masked_max, masked_mean
from vidseq.models.streams import StreamInput, streams_option


class MeanPoolClassifier(nn.Module):
    """Bag of frames: LayerNorm per frame -> masked mean over time -> MLP -> ``logits (B, C)``."""

    supports_streaming = False  # no ``step``: see RecurrentClassifier

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        hidden_size: int = 256,
        dropout: float = 0.0,
        normalize_input: bool = True,
        streams: list | None = None,
    ) -> None:
        super().__init__()
        self.hparams = {
            "input_dim": int_option("input_dim", input_dim),
            "num_classes": int_option("num_classes", num_classes),
            "hidden_size": int_option("hidden_size", hidden_size),
            "dropout": probability_option("dropout", dropout),
            "normalize_input": bool_option("normalize_input", normalize_input),
            "streams": streams_option(streams, input_dim),
        }
        self.input = StreamInput(self.hparams["streams"], normalize_input=normalize_input)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(input_dim, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features (B, T, D)`` float, ``lengths (B,)`` int (``None``: all ``T``)."""
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        mask = length_mask(lengths, features.shape[1], device=features.device)
        return self.mlp(masked_mean(self.input(features, mask), mask))


class TemporalConvClassifier(nn.Module):
    """1-D convolutions over time (dilation 1, 2, 4, ...) -> masked max/mean -> ``logits (B, C)``.

    Padded steps are zeroed before every convolution, so a sequence's edge in a padded batch
    looks exactly like the zero padding of the convolution itself: padding never leaks.
    ``kernel_size`` must be odd (a centred window keeps ``T`` unchanged).
    """

    supports_streaming = False

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        hidden_size: int = 256,
        kernel_size: int = 3,
        num_layers: int = 2,
        dropout: float = 0.0,
        pooling: str = "max",
        normalize_input: bool = True,
        streams: list | None = None,
    ) -> None:
        super().__init__()
        self.hparams = {
            "input_dim": int_option("input_dim", input_dim),
            "num_classes": int_option("num_classes", num_classes),
            "hidden_size": int_option("hidden_size", hidden_size),
            "kernel_size": int_option("kernel_size", kernel_size),
            "num_layers": int_option("num_layers", num_layers),
            "dropout": probability_option("dropout", dropout),
            "pooling": choice_option("pooling", pooling, ("max", "mean")),
            "normalize_input": bool_option("normalize_input", normalize_input),
            "streams": streams_option(streams, input_dim),
        }
        if kernel_size % 2 == 0:
            raise ConfigError(f"model option kernel_size must be odd (a centred window), got {kernel_size}")
        self.input = StreamInput(self.hparams["streams"], normalize_input=normalize_input)
        self.convs = nn.ModuleList(
            nn.Conv1d(
                input_dim if i == 0 else hidden_size,
                hidden_size,
                kernel_size,
                dilation=2**i,
                padding=2**i * (kernel_size - 1) // 2,
            )
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features (B, T, D)`` float, ``lengths (B,)`` int (``None``: all ``T``)."""
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        mask = length_mask(lengths, features.shape[1], device=features.device)
        x = self.input(features, mask)
        for conv in self.convs:
            x = torch.where(mask[..., None], x, x.new_zeros(()))  # (B, T, F)
            x = self.dropout(torch.relu(conv(x.transpose(1, 2)).transpose(1, 2)))
        pool = masked_max if self.hparams["pooling"] == "max" else masked_mean
        return self.head(pool(x, mask))
