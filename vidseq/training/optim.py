"""The model and what updates it: building the model of a config, the optimizer, the warm-up +
cosine schedule, the loss (label smoothing, class weights) and the AMP scaler.

Place in the data flow: ``sequences`` (the training set, its feature size and streams) ->
**optim** -> the loop in ``train``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq.config import ModelConfig, TrainConfig
from vidseq.errors import VidseqError
from vidseq.models import build_model, fit_stream_stats, model_options
from vidseq.training import distributed
from vidseq.training.sequences import SequenceSet


@dataclass
class Optimisation:
    """The model and what updates it: optimizer, schedule, loss, AMP scaler and dtype."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    steps_per_epoch: int = 1  # optimiser steps of one epoch (this rank's)
    warmup_steps: float = 0.0  # the linear warm-up's length in optimiser steps


def build_optimisation(
    model_config: ModelConfig, config: TrainConfig, data: SequenceSet, device: torch.device
) -> Optimisation:
    torch.manual_seed(config.seed)
    options = model_build_options(model_config, streams=data.streams)
    model = build_model(model_config.name, input_dim=data.feature_dim, num_classes=len(data.labels), **options)
    fit_input_stats(model, data)
    model = distributed.wrap(model.to(device), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # an epoch's batches are shared out over the ranks: ceil(batches / world size) steps each
    steps_per_epoch = math.ceil(math.ceil(data.counts()["train"] / config.batch_size) / distributed.world_size())
    steps = steps_per_epoch * config.epochs
    warmup = warmup_length(config, steps_per_epoch, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, steps))
    weight = class_weights(data, len(data.labels)).to(device) if config.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    dtype = None
    if device.type == "cuda" and config.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return Optimisation(model, optimizer, scheduler, loss_fn, scaler, dtype, steps_per_epoch, warmup)


def warmup_length(config: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Warm-up in optimiser steps: ``warmup_epochs`` of them, but at least ``warmup_min_steps``
    (at most a quarter of the run) unless ``warmup_epochs`` is 0. With 75 clips and batches of
    32 an epoch is 3 steps: one epoch of warm-up would be 3 steps of it."""
    warmup = config.warmup_epochs * steps_per_epoch
    if config.warmup_epochs > 0:
        warmup = max(warmup, min(float(config.warmup_min_steps), total_steps / 4))
    return warmup


def model_build_options(model_config: ModelConfig, *, streams: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """The options of the ``model`` section that the chosen model takes.

    ``streams`` (``(name, dims)`` of the input, in order): the model's declared input layout
    (``vidseq.models.streams``): only appearance dims are centred and LayerNorm'd; motion, pose
    and trajectory dims are standardised with statistics fitted on the training split.
    """
    options = {k: v for k, v in model_config.model_dump().items() if k in model_options(model_config.name)}
    if streams:
        options["streams"] = [[name, int(dims)] for name, dims in streams]
    if model_config.name == "tcn" and options.get("pooling") not in ("max", "mean"):
        options.pop("pooling", None)  # 'last'/'attention' are recurrent poolings: the TCN's default
    if model_config.name in ("lstm", "gru") and options.get("pooling") == "max":
        raise VidseqError("model.pooling 'max' is for tcn; lstm/gru take last, mean or attention")
    return options


def fit_input_stats(model: nn.Module, data: SequenceSet) -> None:
    """Fit the model's stream statistics (``model.input``) on the training split's frames; every
    rank computes the same ones from the same data. A model without a standardised stream keeps
    the identity."""
    stream_input = getattr(model, "input", None)
    if stream_input is None or not stream_input.standardised:
        return
    train = [f for f, split in zip(data.features, data.splits) if split == "train"]
    stream_input.set_stats(*fit_stream_stats(train, stream_input.layout))


def warmup_cosine(warmup_steps: float, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def class_weights(data: SequenceSet, num_classes: int) -> torch.Tensor:
    train = data.targets[np.array(data.splits) == "train"]
    counts = np.bincount(train, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)
