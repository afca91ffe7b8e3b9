"""The head in a form that exports: a trained temporal model -> ``ExportHead`` (``vidseq export``).

Place in the data flow: a model ``vidseq predict`` accepts -> **export_head** -> an ``nn.Module``
that ``export.export_model`` traces to ONNX or TorchScript: ``features float32 (B, T, D)`` +
``lengths int64 (B,)`` -> ``probabilities float32 (B, C)``. The trained module is not traced as
is: ``pack_padded_sequence`` and the input checks do not export, so each model's forward is
rebuilt from its own layers without data-dependent Python (masks from ``lengths``; a
bidirectional RNN run as one single-direction RNN per layer and direction, the backward one over
each sequence reversed within its length), which gives the packed model's outputs for padded
batches. Late fusion exports as the weighted mean of its members' softmax (members of weight 0
left out).
"""

from __future__ import annotations

import torch
from torch import nn

from vidseq.models import (
    LateFusion,
    MeanPoolClassifier,
    RecurrentClassifier,
    TemporalConvClassifier,
    TransformerClassifier,
)
from vidseq.models.recurrent import CELLS
from vidseq.models.sequence import masked_max, masked_mean
from vidseq.predict.exported import ExportError


def _valid(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool, True at ``t < lengths[b]``; from a cumulative sum, not ``arange(T)``, so
    the time axis stays symbolic in both exporters."""
    steps = torch.ones_like(features[..., 0]).cumsum(1)  # 1..T per row
    return steps <= lengths[:, None].to(features.dtype)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x (B, T, F)`` reordered along time by ``index (B, T)``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class _Recurrent(nn.Module):
    """``RecurrentClassifier.forward`` without packing: one single-direction RNN per layer and
    direction (the trained weights, copied); the backward direction reads each sequence reversed
    within its own length, so padding never reaches a valid step, as with a packed batch."""

    def __init__(self, model: RecurrentClassifier) -> None:
        super().__init__()
        hp = model.hparams
        self.input, self.head, self.attention = model.input, model.head, model.attention
        self.pooling, self.bidirectional = hp["pooling"], bool(hp["bidirectional"])
        self.hidden = int(hp["hidden_size"])
        cell = CELLS[hp["cell"]]
        directions = ("", "_reverse") if self.bidirectional else ("",)
        self.forward_rnns, self.backward_rnns = nn.ModuleList(), nn.ModuleList()
        for layer in range(int(hp["num_layers"])):
            for suffix in directions:
                source = f"l{layer}{suffix}"
                inputs = getattr(model.rnn, f"weight_ih_{source}").shape[1]
                rnn = cell(inputs, self.hidden, batch_first=True, bias=model.rnn.bias)
                with torch.no_grad():
                    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        if hasattr(rnn, f"{kind}_l0"):
                            getattr(rnn, f"{kind}_l0").copy_(getattr(model.rnn, f"{kind}_{source}"))
                (self.backward_rnns if suffix else self.forward_rnns).append(rnn)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = _valid(features, lengths)
        x = self.input(features, mask)  # the streams' treatment (centring, LayerNorm, fitted statistics)
        last = (lengths - 1).clamp(min=0)
        if self.bidirectional:
            position = torch.ones_like(mask, dtype=torch.int64).cumsum(1) - 1  # (B, T): 0..T-1
            reverse = torch.where(mask, last[:, None] - position, position)
        for layer, rnn in enumerate(self.forward_rnns):
            out, _ = rnn(x)
            if self.bidirectional:
                back, _ = self.backward_rnns[layer](_gather_time(x, reverse))
                out = torch.cat([out, _gather_time(back, reverse)], dim=-1)
            x = out
        if self.pooling == "last":
            pooled = _gather_time(x[..., : self.hidden], last[:, None]).squeeze(1)
            if self.bidirectional:  # the backward direction ends at step 0
                pooled = torch.cat([pooled, x[:, 0, self.hidden :]], dim=-1)
        elif self.pooling == "mean":
            pooled = masked_mean(x, mask)
        else:
            pooled = self.attention(x, mask)
        return self.head(pooled)


class _MeanPool(nn.Module):
    def __init__(self, model: MeanPoolClassifier) -> None:
        super().__init__()
        self.input, self.mlp = model.input, model.mlp

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = _valid(features, lengths)
        return self.mlp(masked_mean(self.input(features, mask), mask))


class _TemporalConv(nn.Module):
    def __init__(self, model: TemporalConvClassifier) -> None:
        super().__init__()
        self.input, self.convs, self.head = model.input, model.convs, model.head
        self.max_pool = model.hparams["pooling"] == "max"

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = _valid(features, lengths)
        x = self.input(features, mask)
        for conv in self.convs:
            x = torch.where(mask[..., None], x, torch.zeros_like(x))
            x = torch.relu(conv(x.transpose(1, 2)).transpose(1, 2))
        return self.head(masked_max(x, mask) if self.max_pool else masked_mean(x, mask))


class _LateFusion(nn.Module):
    """``LateFusion.forward``: ``log sum_i w_i softmax(member_i(x[..., dims_i]))``."""

    def __init__(self, model: LateFusion) -> None:
        super().__init__()
        members = model.hparams["members"]
        kept = [i for i, w in enumerate(model.hparams["weights"]) if w > 0]
        self.members = nn.ModuleList(_logits_module(model.members[i]) for i in kept)
        self.dims = [tuple(int(d) for d in members[i]["dims"]) for i in kept]
        self.register_buffer("log_weights", torch.log(torch.tensor([model.hparams["weights"][i] for i in kept])))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        parts = [
            torch.log_softmax(member(features[..., start:stop], lengths).float(), dim=-1) + self.log_weights[i]
            for i, (member, (start, stop)) in enumerate(zip(self.members, self.dims))
        ]
        return torch.logsumexp(torch.stack(parts), dim=0)


class _Transformer(nn.Module):
    """The transformer head as it is: masks, not packing, keep padding out, so it traces whole."""

    def __init__(self, model: TransformerClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(features, lengths)


_WRAPPERS = (  # (trained class, its exportable form, its name in the manifest; lstm/gru: its cell)
    (LateFusion, _LateFusion, "late_fusion"),
    (RecurrentClassifier, _Recurrent, None),
    (MeanPoolClassifier, _MeanPool, "meanpool"),
    (TemporalConvClassifier, _TemporalConv, "tcn"),
    (TransformerClassifier, _Transformer, "transformer"),
)


def model_name(model: nn.Module) -> str:
    """The registry's name of a trained head (``lstm``, ``gru``, ``transformer``, ...), as the manifest gives it."""
    for kind, _, name in _WRAPPERS:
        if isinstance(model, kind):
            return name or model.hparams["cell"]
    return type(model).__name__


def _logits_module(model: nn.Module) -> nn.Module:
    for kind, wrapper, _ in _WRAPPERS:
        if isinstance(model, kind):
            return wrapper(model)
    raise ExportError(
        f"a {type(model).__name__} head does not export (exportable: lstm, gru, transformer, meanpool, tcn, "
        "late_fusion)"
    )


class ExportHead(nn.Module):
    """A trained temporal model as it exports: ``features (B, T, D)``, ``lengths (B,)`` int64 ->
    ``probabilities (B, C)`` (softmax of its logits; for late fusion, the fused probability)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.logits = _logits_module(model)
        self.eval()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features, lengths).float(), dim=-1)


def export_head(model: nn.Module) -> ExportHead:
    """``model`` (eval mode, CPU) wrapped for export; see ``ExportHead``."""
    return ExportHead(model.cpu().eval())
