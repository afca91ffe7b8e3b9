"""Temporal classifiers: ``features (B, T, D)`` + ``lengths (B,)`` -> ``logits (B, C)``.

Place in the data flow: per-video features from ``vidseq.features`` -> ``pad_sequences`` ->
a model built by name from ``MODELS`` -> logits for ``vidseq.training.train`` / ``evaluate`` /
``predict``. nn.Modules only: no training loop, no data loading, no tracking here.

    padded, lengths = pad_sequences([video_a, video_b])      # (2, T_max, D), (2,)
    model = build_model("gru", input_dim=padded.shape[-1], num_classes=5, pooling="attention")
    logits = model(padded, lengths)                          # (2, 5)
    torch.save(make_checkpoint("gru", model), path)
    model = load_model(torch.load(path, weights_only=True))

Models: ``lstm``/``gru`` (``RecurrentClassifier``; ``pack=False`` for the padded fast path,
``step`` for streaming long videos), the baselines ``meanpool`` (order-blind bag of frames)
and ``tcn`` (1-D convolutions over time), ``transformer`` (``TransformerClassifier``: a small
pre-norm encoder; ``causal=True`` streams with ``step``), and ``late_fusion`` (``LateFusion``: one trained model
per feature stream, probabilities averaged with weights; built from trained members, not trained).
Every model takes ``streams=[[name, dims], ...]``, the declared layout of its input
(``vidseq.models.streams``): each stream gets its own input treatment, and the statistics the
non-appearance streams are standardised with are fitted on the training split
(``model.input.set_stats(*fit_stream_stats(train_features, layout))``) and saved in its weights.
"""

from __future__ import annotations

from vidseq.models.base import ModelError
from vidseq.models.baselines import MeanPoolClassifier, TemporalConvClassifier
from vidseq.models.fusion import LateFusion, Member
from vidseq.models.recurrent import RecurrentClassifier
from vidseq.models.registry import (
    MODELS,
    build_late_fusion,
    build_model,
    list_models,
    load_model,
    make_checkpoint,
    model_options,
    register_model,
)
from vidseq.models.sequence import (
    AttentionPool,
    length_mask,
    masked_max,
    masked_mean,
    pad_sequences,
)
from vidseq.models.streams import StreamInput, fit_stream_stats, streams_option
from vidseq.models.transformer import TransformerClassifier

__all__ = [
    "MODELS",
    "AttentionPool",
    "LateFusion",
    "MeanPoolClassifier",
    "Member",
    "ModelError",
    "RecurrentClassifier",
    "StreamInput",
    "TemporalConvClassifier",
    "TransformerClassifier",
    "build_late_fusion",
    "build_model",
    "fit_stream_stats",
    "length_mask",
    "list_models",
    "load_model",
    "make_checkpoint",
    "masked_max",
    "masked_mean",
    "model_options",
    "pad_sequences",
    "register_model",
    "streams_option",
]
