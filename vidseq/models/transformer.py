"""A small temporal transformer encoder over per-frame features, with exact padding and streaming.

Place in the data flow: ``features (B, T, D)`` + ``lengths (B,)`` (``pad_sequences`` of cached
per-video features) -> padded steps zeroed -> the declared streams' input treatment
(``vidseq.models.streams``: appearance optionally centred and LayerNorm'd, the other streams
standardised with fitted statistics) -> input dropout -> linear projection to ``hidden_size`` + sinusoidal positions ->
``num_layers`` pre-norm blocks (multi-head self-attention, then a GELU feed-forward of
``2 * hidden_size``, each with a residual) -> final LayerNorm -> pooling over time (``last``: the
output at each video's last valid step, ``mean``, ``attention`` or a class token ``cls``) ->
dropout -> linear head -> ``logits (B, C)``. ``last`` is the default: on the direction pairs
(real features, 76 training clips, centred) it reached pair accuracy 1.0 where ``mean`` reached
0.72 and ``cls`` 0.78 (GRU: 1.0).

Padding never reaches the logits: padded steps are replaced by zeros (``torch.where``, so NaN or
inf in the padding cannot leak through ``0 * x``) before anything else, no query attends to a
padded key, and the pooling reads the valid steps only.

Positions are sinusoidal (fixed, not learned): they are defined for every length, so a model
trained on 16 steps reads 1024 without an extrapolation rule and there is no maximum length.

``causal=True`` lets each step attend to itself and the steps before it only. With ``pooling``
``last`` or ``mean`` (and ``center=False``) such a model streams: ``step(chunk, state)`` caches
each layer's keys and values, so feeding a video in chunks gives the logits of one ``forward``
over the prefix read so far. The cache grows with the video (one key and value per layer and
step): the cost of a step grows linearly with the prefix, where an LSTM/GRU step is constant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidseq.errors import ConfigError
from vidseq.models.base import (
    ModelError,
    bool_option,
    check_inputs,
    choice_option,
    int_option,
    probability_option,
)
from vidseq.models.sequence import AttentionPool, length_mask, masked_mean
from vidseq.models.streams import StreamInput, streams_option

POOLINGS = ("last", "mean", "attention", "cls")
STREAMING_POOLINGS = ("last", "mean")
State = tuple[torch.Tensor, ...]


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(..., dim)`` encodings of integer ``positions (...)``: sin/cos at geometric frequencies.

    Defined for any position, so lengths never seen in training need no rule of their own.
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=positions.device, dtype=torch.float32) * (-math.log(10_000.0) / max(half, 1))
    )
    angles = positions.to(torch.float32)[..., None] * freqs
    encoding = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        encoding = F.pad(encoding, (0, 1))
    return encoding


class _Block(nn.Module):
    """Pre-norm encoder block: ``x + attn(norm(x))``, then ``x + ff(norm(x))``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v`` of ``x (B, T, F)``, each ``(B, heads, T, F / heads)``."""
        batch, steps, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, steps, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, Tq, F)``; ``allowed (B, Tq, Tk)`` bool: which keys each query may read.

        ``cache``: the keys and values of earlier steps, put before this chunk's. Returns the
        block's output and the keys and values of all ``Tk`` steps.
        """
        q, k, v = self.keys_values(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=dropout)
        batch, _, steps, _ = attended.shape
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, steps, -1)))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, k, v


class TransformerClassifier(nn.Module):
    """``features (B, T, D)``, ``lengths (B,)`` -> ``logits (B, C)`` through a transformer encoder.

    ``hidden_size`` is the model width (a multiple of ``num_heads``); ``dropout`` acts inside
    the blocks and before the head, ``input_dropout`` on the (normalised) frame features.
    ``hparams`` holds every constructor argument (plain JSON types).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        input_dropout: float = 0.0,
        pooling: str = "last",
        causal: bool = False,
        normalize_input: bool = True,
        center: bool = False,
        streams: list | None = None,
    ) -> None:
        super().__init__()
        self.hparams = {
            "input_dim": int_option("input_dim", input_dim),
            "num_classes": int_option("num_classes", num_classes),
            "hidden_size": int_option("hidden_size", hidden_size),
            "num_layers": int_option("num_layers", num_layers),
            "num_heads": int_option("num_heads", num_heads),
            "dropout": probability_option("dropout", dropout),
            "input_dropout": probability_option("input_dropout", input_dropout),
            "pooling": choice_option("pooling", pooling, POOLINGS),
            "causal": bool_option("causal", causal),
            "normalize_input": bool_option("normalize_input", normalize_input),
            "center": bool_option("center", center),
            "streams": streams_option(streams, input_dim),
        }
        if hidden_size % num_heads:
            raise ConfigError(
                f"model option hidden_size must be a multiple of num_heads={num_heads}, got {hidden_size}"
            )
        if causal and pooling == "cls":
            raise ConfigError(
                "model option pooling 'cls' reads a class token that a causal model cannot attend "
                "from; use pooling last or mean with causal: true"
            )
        self.input = StreamInput(self.hparams["streams"], normalize_input=normalize_input, center=center)
        self.input_dropout = nn.Dropout(input_dropout)
        self.project = nn.Linear(input_dim, hidden_size)
        self.blocks = nn.ModuleList(_Block(hidden_size, num_heads, dropout) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden_size)
        self.cls = nn.Parameter(torch.randn(hidden_size) * 0.02) if pooling == "cls" else None
        self.attention = AttentionPool(hidden_size, hidden_size) if pooling == "attention" else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))

    @property
    def supports_streaming(self) -> bool:
        """Whether ``step`` works: a causal, uncentred model with pooling ``last`` or ``mean``."""
        hp = self.hparams
        return hp["causal"] and hp["pooling"] in STREAMING_POOLINGS and not hp["center"]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``features (B, T, D)`` float, ``lengths (B,)`` int, any device (``None``: all ``T``)."""
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        steps = features.shape[1]
        mask = length_mask(lengths, steps, device=features.device)  # (B, T) valid steps
        x = self._embed(features, mask, lengths, torch.zeros_like(lengths))
        keys = mask
        if self.cls is not None:  # the class token: first, no position, always a valid key
            x = torch.cat([self.cls.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
            keys = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        allowed = keys[:, None, :].expand(-1, keys.shape[1], -1)
        if self.hparams["causal"]:
            allowed = allowed & torch.ones(keys.shape[1], keys.shape[1], dtype=torch.bool, device=x.device).tril()
        for block in self.blocks:
            x, _, _ = block(x, allowed)
        x = self.final_norm(x)
        return self.head(self._pool(x, mask, lengths))

    def step(
        self,
        features: torch.Tensor,
        state: State | None = None,
        *,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Feed the next chunk ``(B, t, D)`` of each video; return ``(logits (B, C), new_state)``.

        ``state``: ``None`` at a video's start, then the ``new_state`` of the previous chunk:
        per layer its keys and values ``(B, num_heads, S, hidden_size / num_heads)`` of the
        ``S`` steps read so far, then ``valid (B, S)`` bool, the running sum of the outputs
        ``(B, hidden_size)`` and the steps read per video ``(B,)``. ``lengths (B,)`` marks a
        last chunk shorter than ``t`` (its padded steps are never read again).
        """
        if not self.supports_streaming:
            hp = self.hparams
            raise ModelError(
                "streaming (step) needs a transformer with causal=true, pooling last or mean and no "
                f"centring; this one has causal={hp['causal']}, pooling={hp['pooling']!r}, center={hp['center']}"
            )
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        batch, steps = features.shape[:2]
        caches, valid, total, seen = self._check_state(state, features)
        mask = length_mask(lengths, steps, device=features.device)
        x = self._embed(features, mask, lengths, seen)
        keys = torch.cat([valid, mask], dim=1)  # (B, S + t)
        earlier = valid.shape[1]
        causal = torch.ones(steps, earlier + steps, dtype=torch.bool, device=x.device).tril(diagonal=earlier)
        allowed = keys[:, None, :] & causal
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, k, v = block(x, allowed, cache)
            new_caches += [k, v]
        x = self.final_norm(x)
        total = total + torch.where(mask[..., None], x, x.new_zeros(())).sum(dim=1).to(total.dtype)
        seen = seen + lengths.to(seen.device)
        if self.hparams["pooling"] == "last":
            pooled = x[torch.arange(batch, device=x.device), (lengths - 1).to(x.device)]
        else:
            pooled = (total / seen.to(total.device, total.dtype)[:, None]).to(x.dtype)
        return self.head(pooled), (*new_caches, keys, total, seen)

    def _embed(
        self, features: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, offset: torch.Tensor
    ) -> torch.Tensor:
        """Zeroed padding -> centring -> LayerNorm -> dropout -> projection + positions ``offset + t``."""
        features = torch.where(mask[..., None], features, features.new_zeros(()))
        x = self.project(self.input_dropout(self.input(features, mask)))
        positions = offset.to(x.device)[:, None] + torch.arange(x.shape[1], device=x.device)
        return x + sinusoidal_positions(positions, x.shape[-1]).to(x.dtype)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, F)``: the configured pooling over the valid steps only."""
        pooling = self.hparams["pooling"]
        if pooling == "cls":
            return x[:, 0]
        if pooling == "last":
            return x[torch.arange(x.shape[0], device=x.device), (lengths - 1).to(x.device)]
        if pooling == "mean":
            return masked_mean(x, mask)
        return self.attention(x, mask)

    def _check_state(self, state: State | None, features: torch.Tensor):
        """``(caches per layer, valid, total, seen)`` of ``state`` after checking it, or fresh ones."""
        hp, batch, device = self.hparams, features.shape[0], features.device
        width = hp["hidden_size"]
        if state is None:
            empty = features.new_zeros(batch, hp["num_heads"], 0, width // hp["num_heads"])
            caches = [(empty, empty)] * hp["num_layers"]
            valid = torch.zeros(batch, 0, dtype=torch.bool, device=device)
            total = torch.zeros(batch, width, dtype=torch.float32, device=device)
            return caches, valid, total, torch.zeros(batch, dtype=torch.int64, device=device)
        count = 2 * hp["num_layers"] + 3
        if not isinstance(state, tuple) or len(state) != count or not all(isinstance(p, torch.Tensor) for p in state):
            raise ModelError(
                f"state must be the tuple of {count} tensors that step returned, got {type(state).__name__}"
            )
        *kv, valid, total, seen = state
        cached = valid.shape[1] if valid.ndim == 2 else -1
        shape = (batch, hp["num_heads"], cached, width // hp["num_heads"])
        if valid.shape != (batch, cached) or total.shape != (batch, width) or seen.shape != (batch,):
            raise ModelError(
                f"state does not fit a batch of {batch}: valid {tuple(valid.shape)}, seen {tuple(seen.shape)}"
            )
        for part in kv:
            if tuple(part.shape) != shape:
                raise ModelError(f"each cached key/value must be {shape}, got {tuple(part.shape)}")
        return list(zip(kv[0::2], kv[1::2])), valid, total, seen
