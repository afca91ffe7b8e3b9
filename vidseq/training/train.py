"""Training: a temporal classifier on the sequences of a feature store, resumable after a kill.

Place in the data flow: feature store -> sequences -> **train** -> checkpoints (``last.pt``
every epoch, ``best.pt`` on the best validation metric), curves and metrics. The loop is plain
functions (``train_one_epoch``, ``fit``) that read top to bottom. Every epoch's data order and
augmentation come from ``(seed, epoch)`` and the checkpoint holds the model, optimiser,
scheduler and RNG states, so ``resume=True`` after a kill ends where an uninterrupted run would.
Checkpoints hold plain types and tensors only: they load with ``torch.load(weights_only=True)``.

Under torchrun (``WORLD_SIZE`` > 1, see ``vidseq.training.distributed``) the same loop trains one model in
several processes with ``DistributedDataParallel``. Every rank augments every clip and builds the
same length-grouped batch list from ``(seed, epoch)`` (the augmentation of a clip is the one a
single process would draw); rank r trains on batches r, r+W, ... (the list is padded by repeating
its first batches so every rank takes the same number of steps) and dropout is seeded from
``(seed, epoch, rank)``. The schedule counts the global steps of an epoch; train loss and accuracy
are summed over all ranks. Rank 0 alone validates (the result is broadcast, so best.pt and early
stopping decide the same everywhere), writes every file and calls ``on_epoch_end``; every rank
returns the same ``TrainResult``. Checkpoints hold the unwrapped model: they load like a single
process's, and ``resume=True`` works with any number of processes.

Streams (``config.streams``; see ``vidseq.training.sequences``): one stream trains as above (motion is
never centred: a pan is a constant flow vector). ``fusion: early`` trains one model on the
streams concatenated (only the appearance dims centred). ``fusion: late`` trains a full run per
stream in ``out/<stream>/`` (one split for all, assigned once), then ``vidseq.training.weights`` chooses
the streams' weights on val and ``out/`` gets the fused ``LateFusion`` as ``best.pt`` with the
reports of a run. Resuming continues the unfinished stream run; a finished one is not trained
again; the fusion is redone from the streams' ``best.pt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq.config import EvaluateConfig, ModelConfig, TrainConfig
from vidseq.errors import VidseqError
from vidseq.features import FeatureStore, resolve_device
from vidseq.models import load_model, make_checkpoint, pad_sequences
from vidseq.outputs import check_writable
from vidseq.threads import local_processes, set_torch_threads, thread_budget
from vidseq.training import checkpoint as checkpoints
from vidseq.training import distributed
from vidseq.training.evaluate import evaluate_sequences
from vidseq.training.optim import Optimisation, build_optimisation
from vidseq.training.runs import (
    check_out,
    check_resume_stores,
    exists_on_main,
    features_dir,
    report_splits,
    write_config,
    write_reports,
)
from vidseq.training.sequences import (
    SequenceSet,
    assign_splits,
    augment,
    length_batches,
    load_sequences,
    stream_stores,
)
from vidseq.training.weights import fuse, merge_histories, prefixed

EpochHook = Callable[[dict[str, float]], None]


@dataclass
class TrainResult:
    """Where the run is and how it went.

    Late fusion: ``val``/``test`` are the fused model's; ``history`` merges the streams' rows
    (keys prefixed ``<stream>_``); ``best_epoch`` is the latest of the streams' best epochs;
    ``extra["streams"]`` holds per stream ``{"val", "test", "best_epoch", "history"}`` and
    ``extra["fusion"]`` ``{"kind": "late", "weights": [one per stream, in canonical order]}``.
    """

    out: Path
    best_epoch: int
    history: list[dict[str, float]]
    val: dict[str, Any]
    test: dict[str, Any] | None
    labels: list[str]
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""  # one line: why training ended (early stopping, or all epochs run)

    @property
    def best_checkpoint(self) -> Path:
        return self.out / "best.pt"


def train(
    *,
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    evaluate_config: EvaluateConfig | None = None,
    features: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: EpochHook | None = None,
) -> TrainResult:
    """Train on the store at ``features`` (or ``config.features``) into ``out`` (or ``config.out``).

    ``features`` may be any stream's store of the root: the streams of ``config.streams`` are its
    linked siblings. Under torchrun every process calls this: the process group lives for the
    call (or is the caller's, if one exists); ``progress`` and ``on_epoch_end`` apply on rank 0
    only. Late fusion: ``on_epoch_end`` gets each stream run's rows, keys prefixed ``<stream>_``.
    """
    model_config, config = model_config or ModelConfig(), config or TrainConfig()
    evaluate_config = evaluate_config or EvaluateConfig()
    set_torch_threads(thread_budget().training(processes=local_processes()))  # see vidseq.threads
    out = Path(out or config.out)
    stores = stream_stores(FeatureStore.load_existing(features_dir(features or config.features)), config.streams)
    check_writable(out, what="train --out, the run folder")
    with distributed.process_group(resolve_device(config.device)) as device:
        resuming = check_out(out, resume=resume, overwrite=overwrite)
        given = load_sequences(stores)
        if resuming:
            check_resume_stores(out, stores, given, late=len(stores) > 1 and config.fusion == "late")
        data = assign_splits(
            given, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
        )
        if distributed.is_main():
            report_splits(given, data, out, table=progress)
        job = _TrainRequest(model_config, config, evaluate_config, device, resume, progress)
        if len(stores) > 1 and config.fusion == "late":
            return _train_late(job, out, stores, data, on_epoch_end)
        return _train_one_model(job, out, stores, data, on_epoch_end)


@dataclass(frozen=True)
class _TrainRequest:
    """What every run of one ``train`` call shares."""

    model_config: ModelConfig
    config: TrainConfig
    evaluate_config: EvaluateConfig
    device: torch.device
    resume: bool
    progress: bool


def _train_one_model(
    job: _TrainRequest,
    out: Path,
    stores: dict[str, FeatureStore],
    data: SequenceSet,
    on_epoch_end: EpochHook | None,
    *,
    config: TrainConfig | None = None,
) -> TrainResult:
    """One ordinary run into ``out``: continued where ``resume`` and ``out/last.pt`` exists."""
    config = config or job.config
    setup = build_optimisation(job.model_config, config, data, job.device)
    run = _TrainingState(out, stores, data, job.model_config, config, setup, job.device)
    if job.resume and exists_on_main(out / "last.pt"):
        run.restore(checkpoints.load(out / "last.pt"))
    elif distributed.is_main():
        run.write_config(job.evaluate_config)
    return fit(run, job.evaluate_config, progress=job.progress, on_epoch_end=on_epoch_end)


def _train_late(
    job: _TrainRequest, out: Path, stores: dict[str, FeatureStore], data: SequenceSet, on_epoch_end: EpochHook | None
) -> TrainResult:
    """A run per stream in ``out/<stream>/`` on the same split, then their late fusion in ``out``."""
    results = {}
    for stream, store in stores.items():
        hook = None if on_epoch_end is None else (lambda row, s=stream: on_epoch_end(prefixed(row, s)))
        config = job.config.model_copy(update={"streams": [stream], "out": str(out / stream)})
        results[stream] = _train_one_model(job, out / stream, {stream: store}, data.stream(stream), hook, config=config)
    histories = {stream: r.history for stream, r in results.items()}
    fused = _fuse_runs(job, out, stores, data, histories) if distributed.is_main() else None
    weights, val, test = distributed.broadcast(fused)
    extra = {
        "streams": {
            stream: {"val": r.val, "test": r.test, "best_epoch": r.best_epoch, "history": r.history}
            for stream, r in results.items()
        },
        "fusion": {"kind": "late", "weights": weights},
    }
    return TrainResult(
        out,
        max(r.best_epoch for r in results.values()),
        merge_histories(histories),
        val,
        test,
        data.labels,
        all(r.stopped_early for r in results.values()),
        extra,
        "; ".join(f"{stream}: {r.stop_reason}" for stream, r in results.items()),
    )


def _fuse_runs(
    job: _TrainRequest,
    out: Path,
    stores: dict[str, FeatureStore],
    data: SequenceSet,
    histories: dict[str, list[dict[str, float]]],
) -> tuple[list[float], dict[str, Any], dict[str, Any] | None]:
    """Fuse the streams' ``best.pt`` into ``out/best.pt`` and write the run's files (rank 0)."""
    states = {stream: checkpoints.load(out / stream / "best.pt") for stream in stores}
    model = fuse(states, data, device=job.device)
    weights = list(model.hparams["weights"])
    history = merge_histories(histories)
    state = {
        **checkpoints.run_record(stores, data, job.model_config, job.config),
        "model": make_checkpoint("late_fusion", model),
        "fusion": {"kind": "late", "weights": weights},
        "best_epoch": max(int(state["best_epoch"]) for state in states.values()),
        "history": history,
    }
    checkpoints.save(state, out / "best.pt")
    write_config(out, data, model=job.model_config, train=job.config, evaluate=job.evaluate_config)
    val, test = write_reports(out, model.to(job.device), data, history, job.evaluate_config, job.device)
    return weights, val, test


class _TrainingState:
    """The state of one training run: what a checkpoint saves and restores."""

    def __init__(
        self,
        out: Path,
        stores: dict[str, FeatureStore],
        data: SequenceSet,
        model_config: ModelConfig,
        config: TrainConfig,
        setup: Optimisation,
        device: torch.device,
    ) -> None:
        self.out, self.stores, self.data = out, stores, data
        self.model_config, self.config, self.setup, self.device = model_config, config, setup, device
        self.epoch, self.best, self.best_epoch, self.bad_epochs = 0, None, 0, 0
        self.history: list[dict[str, float]] = []
        self.record = checkpoints.run_record(stores, data, model_config, config)  # computed once: reads entries

    def write_config(self, evaluate_config: EvaluateConfig) -> None:
        write_config(self.out, self.data, model=self.model_config, train=self.config, evaluate=evaluate_config)

    def checkpoint(self) -> dict[str, Any]:
        s = self.setup
        return {
            "model": make_checkpoint(self.model_config.name, distributed.unwrap(s.model)),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            **self.record,
        }

    def restore(self, state: dict[str, Any]) -> None:
        s = self.setup
        distributed.unwrap(s.model).load_state_dict(state["model"]["state_dict"])
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
        s.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.bad_epochs, self.history = state["bad_epochs"], list(state["history"])

    def save(self, name: str) -> None:
        """Write a checkpoint (rank 0 only: the others hold the same state)."""
        if distributed.is_main():
            checkpoints.save(self.checkpoint(), self.out / name)


def fit(
    run: _TrainingState,
    evaluate_config: EvaluateConfig,
    *,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Epochs until ``config.epochs`` or early stopping; then the best model on val and test."""
    config, train_set, val_set = run.config, run.data.subset("train"), run.data.subset("val")
    if len(train_set) == 0 or len(val_set) == 0:
        raise VidseqError(f"need videos in both train and val splits, got {run.data.counts()}")
    stopped = _patience_spent(run)
    desc = "train" if list(run.stores) == ["appearance"] else f"train {'+'.join(run.stores)}"
    bar = _epoch_bar(config.epochs, run.epoch, progress and distributed.is_main(), desc)
    while run.epoch < config.epochs and not stopped:
        run.epoch += 1
        row = {"epoch": run.epoch, **train_one_epoch(run, train_set)}
        val = _validate(run, val_set)
        row.update(
            val_loss=val["loss"],
            val_accuracy=val["accuracy"],
            val_macro_f1=val["macro_f1"],
            lr=run.setup.optimizer.param_groups[0]["lr"],
        )
        run.history.append(row)
        _track_best(run, val)
        run.save("last.pt")
        stopped = _patience_spent(run)
        bar.set_postfix_str(f"loss {row['train_loss']:.3f} val acc {row['val_accuracy']:.3f}")
        bar.update(1)
        if on_epoch_end is not None and distributed.is_main():
            on_epoch_end(row)
    bar.close()
    return _finish(run, evaluate_config, stopped)


def train_one_epoch(run: _TrainingState, train_set: SequenceSet) -> dict[str, float]:
    """One pass over the training sequences (augmented, batched by length; this rank's share)."""
    s, config = run.setup, run.config
    rng = np.random.default_rng([config.seed, run.epoch])
    clips = [
        augment(f, rng, crop_min=config.crop_min, subsample_prob=config.subsample_prob) for f in train_set.features
    ]
    lengths = np.array([len(c) for c in clips])
    batches = _shard(list(length_batches(lengths, config.batch_size, rng=rng)))
    _seed_rank(config.seed, run.epoch)
    s.model.train()
    total_loss, correct, count = 0.0, 0, 0
    for batch, counted in batches:
        padded, lens = pad_sequences([clips[i] for i in batch])
        targets = torch.from_numpy(train_set.targets[batch]).to(run.device)
        with torch.autocast(run.device.type, dtype=s.autocast_dtype, enabled=s.autocast_dtype is not None):
            logits = s.model(padded.to(run.device, non_blocking=True), lens)
            loss = s.loss_fn(logits.float(), targets)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        if config.grad_clip:
            s.scaler.unscale_(s.optimizer)
            nn.utils.clip_grad_norm_(s.model.parameters(), config.grad_clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        if counted:
            total_loss += loss.item() * len(batch)
            correct += (logits.argmax(1) == targets).sum().item()
            count += len(batch)
    totals = distributed.all_reduce_sum(torch.tensor([total_loss, correct, count], dtype=torch.float64)).tolist()
    return {"train_loss": totals[0] / totals[2], "train_accuracy": totals[1] / totals[2]}


def _shard(batches: list[np.ndarray]) -> list[tuple[np.ndarray, bool]]:
    """This rank's batches (r, r+W, ...) and whether each counts in the epoch's loss/accuracy.

    DDP needs the same number of steps on every rank: the list is padded with repeats of its
    first batches, which are trained on but not counted (each clip counts once). Alone: all of them.
    """
    size, rank = distributed.world_size(), distributed.rank()
    extra = -len(batches) % size
    padded = [(b, True) for b in batches] + [(batches[i % len(batches)], False) for i in range(extra)]
    return padded[rank::size]


def _seed_rank(seed: int, epoch: int) -> None:
    """Under DDP, torch's RNG (dropout) from ``(seed, epoch, rank)``: ranks differ, reruns and
    resumes repeat. A single process keeps the one generator its checkpoint restores."""
    if distributed.world_size() > 1:
        state = np.random.SeedSequence([seed, epoch, distributed.rank()]).generate_state(1)
        torch.manual_seed(int(state[0]))


def _validate(run: _TrainingState, val_set: SequenceSet) -> dict[str, Any]:
    """Metrics of the model on val, computed on rank 0 and the same on every rank."""
    val = None
    if distributed.is_main():
        val = evaluate_sequences(distributed.unwrap(run.setup.model), val_set, device=run.device)
    return distributed.broadcast(val)


def _track_best(run: _TrainingState, val: dict[str, Any]) -> None:
    """Keep best.pt at the best monitored value; on a tie of accuracy/F1 the lower val loss wins
    (a small val split saturates at 1.0 early; without the tie-break best.pt stays undertrained)."""
    monitor = run.config.monitor
    score = (float(val[monitor]), -float(val["loss"])) if monitor != "loss" else (-float(val["loss"]), 0.0)
    if run.best is None or score > tuple(run.best):
        run.best, run.best_epoch, run.bad_epochs = list(score), run.epoch, 0
        run.save("best.pt")
    elif run.epoch * run.setup.steps_per_epoch > run.setup.warmup_steps:  # warm-up epochs do not count
        run.bad_epochs += 1


def _patience_spent(run: _TrainingState) -> bool:
    """Early stopping: ``patience`` epochs without a better val metric (after the warm-up) that
    also hold ``patience_steps`` optimiser steps (an epoch of a small dataset is a few steps)."""
    config = run.config
    steps = run.bad_epochs * run.setup.steps_per_epoch
    return run.bad_epochs >= config.patience and steps >= config.patience_steps


def _stop_reason(run: _TrainingState, stopped: bool) -> str:
    """One line: why the run ended and where its best epoch is."""
    config, spe = run.config, run.setup.steps_per_epoch
    best = f"best val {config.monitor} at epoch {run.best_epoch}"
    if stopped:
        return (
            f"early stopping after epoch {run.epoch} of {config.epochs}: val {config.monitor} did not improve for "
            f"{run.bad_epochs} epochs ({run.bad_epochs * spe} optimiser steps; patience {config.patience} epochs "
            f"and {config.patience_steps} steps); {best}"
        )
    return f"ran all {run.epoch} epochs ({run.epoch * spe} optimiser steps, {spe} per epoch); {best}"


def _finish(run: _TrainingState, evaluate_config: EvaluateConfig, stopped: bool) -> TrainResult:
    """The best model on val and test with reports, written by rank 0; the others wait for its
    metrics, so every rank returns the same result."""
    reports = _final_reports(run, evaluate_config) if distributed.is_main() else None
    val, test = distributed.broadcast(reports)
    reason = _stop_reason(run, stopped)
    return TrainResult(run.out, run.best_epoch, run.history, val, test, run.data.labels, stopped, stop_reason=reason)


def _final_reports(
    run: _TrainingState, evaluate_config: EvaluateConfig
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    best = load_model(checkpoints.load(run.out / "best.pt")["model"]).to(run.device)
    return write_reports(run.out, best, run.data, run.history, evaluate_config, run.device)


def _epoch_bar(total: int, initial: int, enabled: bool, desc: str = "train"):
    from vidseq.progress import progress_bar

    return progress_bar(total, initial=initial, desc=desc, unit="epoch", enabled=enabled)
