"""Late fusion: one classifier per feature stream, their class probabilities averaged with weights.

Place in the data flow: ``features (B, T, D_appearance + D_motion)`` (the streams side by side
per frame, as ``vidseq.training.sequences`` concatenates them) + ``lengths (B,)`` -> each member reads
its own slice of the dims -> softmax per member -> weighted average ``p`` -> ``log p (B, C)``.

The output is the *log* of the fused probability, so ``softmax(model(x, lengths))`` is exactly
``sum_i w_i softmax(member_i(x_i, lengths))``: every caller that turns logits into probabilities
(evaluation, prediction) works unchanged. The members are trained apart (``vidseq.training.train``) and
fused afterwards; a fused model is for inference, not for further training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vidseq.errors import ConfigError
from vidseq.models.base import check_inputs


@dataclass(frozen=True)
class Member:
    """One stream's classifier in a ``LateFusion``: its table ``name`` and the dims it reads."""

    stream: str
    name: str
    model: nn.Module
    start: int
    stop: int


class LateFusion(nn.Module):
    """``features (B, T, D)`` -> ``log`` of the weighted mean of the members' softmax ``(B, C)``.

    ``hparams`` (plain types, for ``make_checkpoint``): ``input_dim``, ``num_classes``,
    ``members`` (per member: ``stream``, ``name``, ``hparams``, ``dims [start, stop)``) and
    ``weights`` (one per member, normalised to sum to 1).
    """

    supports_streaming = False

    def __init__(self, members: Sequence[Member], weights: Sequence[float]) -> None:
        super().__init__()
        if not members or len(weights) != len(members):
            raise ConfigError(f"late fusion needs one weight per member, got {len(weights)} for {len(members)}")
        weights = [float(w) for w in weights]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"late fusion weights must be >= 0 with a positive sum, got {weights}")
        classes = {int(m.model.hparams["num_classes"]) for m in members}
        if len(classes) != 1:
            raise ConfigError(f"late fusion members must share the classes, got num_classes {sorted(classes)}")
        for m in members:
            if m.stop - m.start != m.model.hparams["input_dim"] or m.start < 0:
                raise ConfigError(
                    f"late fusion member {m.stream}: dims [{m.start}, {m.stop}) do not fit its "
                    f"input_dim {m.model.hparams['input_dim']}"
                )
        total = sum(weights)
        self.hparams = {
            "input_dim": max(m.stop for m in members),
            "num_classes": classes.pop(),
            "members": [
                {"stream": m.stream, "name": m.name, "hparams": dict(m.model.hparams), "dims": [m.start, m.stop]}
                for m in members
            ],
            "weights": [w / total for w in weights],
        }
        self.members = nn.ModuleList(m.model for m in members)
        self.register_buffer("log_weights", torch.log(torch.tensor(self.hparams["weights"])), persistent=False)

    @property
    def streams(self) -> list[str]:
        return [m["stream"] for m in self.hparams["members"]]

    def member_probabilities(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Each member's softmax on its dims, ``(M, B, C)``."""
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        return torch.stack([self._member_log_probs(i, features, lengths).exp() for i in range(len(self.members))])

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``log sum_i w_i softmax(member_i)``; a member of weight 0 is not run."""
        lengths = check_inputs(features, lengths, input_dim=self.hparams["input_dim"])
        parts = [
            self._member_log_probs(i, features, lengths) + self.log_weights[i]
            for i, w in enumerate(self.hparams["weights"])
            if w > 0
        ]
        return torch.logsumexp(torch.stack(parts), dim=0)

    def _member_log_probs(self, index: int, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        start, stop = self.hparams["members"][index]["dims"]
        return torch.log_softmax(self.members[index](features[..., start:stop], lengths).float(), dim=-1)
