"""Training: a temporal classifier on the sequences of a feature store, resumable after a kill.

Place in the data flow: feature store -> sequences -> **train** -> checkpoints (``last.pt``
every epoch, ``best.pt`` on the best validation metric), curves and metrics. The loop is plain
functions (``train_one_epoch``, ``fit``) that read top to bottom. Every epoch's data order and
augmentation come from ``(seed, epoch)`` and the checkpoint holds the model, optimiser,
scheduler and RNG states, so ``resume=True`` after a kill ends where an uninterrupted run would.
Checkpoints hold plain types and tensors only: they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vidseq import __version__
from vidseq import metrics as M
from vidseq.config import EvaluateConfig, ModelConfig, TrainConfig
from vidseq.errors import VidseqError
from vidseq.evaluate import _load_checkpoint, evaluate_sequences, write_report
from vidseq.features import FeatureStore
from vidseq.models import build_model, load_model, make_checkpoint, model_options, pad_sequences
from vidseq.sequences import SequenceSet, assign_splits, augment, length_batches, load_sequences


@dataclass
class TrainResult:
    """Where the run is and how it went."""

    out: Path
    best_epoch: int
    history: list[dict[str, float]]
    val: dict[str, Any]
    test: dict[str, Any] | None
    labels: list[str]
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

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
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on the store at ``features`` (or ``config.features``) into ``out`` (or ``config.out``)."""
    model_config, config = model_config or ModelConfig(), config or TrainConfig()
    evaluate_config = evaluate_config or EvaluateConfig()
    out = Path(out or config.out)
    store = FeatureStore.load_existing(_features_dir(features or config.features))
    _check_out(out, resume=resume, overwrite=overwrite)
    data = assign_splits(load_sequences(store), val_fraction=config.val_fraction,
                         test_fraction=config.test_fraction, seed=config.seed)
    device = _device(config.device)
    setup = _setup(model_config, config, data, device)
    run = _Run(out, store, data, model_config, config, setup, device)
    if resume and (out / "last.pt").is_file():
        run.restore(_load_checkpoint(out / "last.pt"))
    else:
        run.write_config(evaluate_config)
    return fit(run, evaluate_config, progress=progress, on_epoch_end=on_epoch_end)


@dataclass
class _Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None


def _setup(model_config: ModelConfig, config: TrainConfig, data: SequenceSet, device: torch.device) -> _Setup:
    torch.manual_seed(config.seed)
    options = model_build_options(model_config)
    model = build_model(model_config.name, input_dim=data.feature_dim, num_classes=len(data.labels), **options)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(data.counts()["train"] / config.batch_size) * config.epochs
    warmup = config.warmup_epochs * math.ceil(data.counts()["train"] / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(warmup, steps))
    weight = _class_weights(data, len(data.labels)).to(device) if config.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    dtype = None
    if device.type == "cuda" and config.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return _Setup(model, optimizer, scheduler, loss_fn, scaler, dtype)


def model_build_options(model_config: ModelConfig) -> dict[str, Any]:
    """The options of the ``model`` section that the chosen model takes."""
    options = {k: v for k, v in model_config.model_dump().items() if k in model_options(model_config.name)}
    if model_config.name == "tcn" and options.get("pooling") not in ("max", "mean"):
        options.pop("pooling", None)  # 'last'/'attention' are recurrent poolings: the TCN's default
    if model_config.name in ("lstm", "gru") and options.get("pooling") == "max":
        raise VidseqError("model.pooling 'max' is for tcn; lstm/gru take last, mean or attention")
    return options


def _warmup_cosine(warmup_steps: float, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _class_weights(data: SequenceSet, num_classes: int) -> torch.Tensor:
    train = data.targets[np.array(data.splits) == "train"]
    counts = np.bincount(train, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


class _Run:
    """The state of one training run: what a checkpoint saves and restores."""

    def __init__(self, out, store, data, model_config, config, setup, device) -> None:
        self.out, self.store, self.data = out, store, data
        self.model_config, self.config, self.setup, self.device = model_config, config, setup, device
        self.epoch, self.best, self.best_epoch, self.bad_epochs = 0, None, 0, 0
        self.history: list[dict[str, float]] = []

    def write_config(self, evaluate_config: EvaluateConfig) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        text = to_yaml_sections(model=self.model_config, train=self.config, evaluate=evaluate_config)
        _atomic_write(self.out / "config.yaml", text.encode())
        M.write_json(self.out / "labels.json", self.data.labels)

    def checkpoint(self) -> dict[str, Any]:
        s = self.setup
        return {
            "model": make_checkpoint(self.model_config.name, s.model),
            "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "history": self.history, "labels": self.data.labels,
            "splits": dict(zip(self.data.paths, self.data.splits)), "features": str(self.store.directory),
            "feature_key": self.store.key, "extraction": self.store.recipe,
            "config": {"model": self.model_config.model_dump(mode="json"), "train": self.config.model_dump(mode="json")},
            "vidseq_version": __version__,
        }

    def restore(self, state: dict[str, Any]) -> None:
        s = self.setup
        s.model.load_state_dict(state["model"]["state_dict"])
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
        s.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.bad_epochs, self.history = state["bad_epochs"], list(state["history"])

    def save(self, name: str) -> None:
        _atomic_save(self.checkpoint(), self.out / name)


def fit(run: _Run, evaluate_config: EvaluateConfig, *, progress: bool = True,
        on_epoch_end: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Epochs until ``config.epochs`` or early stopping; then the best model on val and test."""
    config, train_set, val_set = run.config, run.data.subset("train"), run.data.subset("val")
    if len(train_set) == 0 or len(val_set) == 0:
        raise VidseqError(f"need videos in both train and val splits, got {run.data.counts()}")
    stopped = run.bad_epochs >= config.patience
    bar = _epoch_bar(config.epochs, run.epoch, progress)
    while run.epoch < config.epochs and not stopped:
        run.epoch += 1
        row = {"epoch": run.epoch, **train_one_epoch(run, train_set)}
        val = evaluate_sequences(run.setup.model, val_set, device=run.device)
        row.update(val_loss=val["loss"], val_accuracy=val["accuracy"], val_macro_f1=val["macro_f1"],
                   lr=run.setup.optimizer.param_groups[0]["lr"])
        run.history.append(row)
        _track_best(run, val)
        run.save("last.pt")
        stopped = run.bad_epochs >= config.patience
        bar.set_postfix_str(f"loss {row['train_loss']:.3f} val acc {row['val_accuracy']:.3f}")
        bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(row)
    bar.close()
    return _finish(run, evaluate_config, stopped)


def train_one_epoch(run: _Run, train_set: SequenceSet) -> dict[str, float]:
    """One pass over the training sequences (augmented, batched by length)."""
    s, config = run.setup, run.config
    rng = np.random.default_rng([config.seed, run.epoch])
    clips = [augment(f, rng, crop_min=config.crop_min, subsample_prob=config.subsample_prob) for f in train_set.features]
    lengths = np.array([len(c) for c in clips])
    s.model.train()
    total_loss, correct = 0.0, 0
    for batch in length_batches(lengths, config.batch_size, rng=rng):
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
        total_loss += loss.item() * len(batch)
        correct += (logits.argmax(1) == targets).sum().item()
    return {"train_loss": total_loss / len(train_set), "train_accuracy": correct / len(train_set)}


def _track_best(run: _Run, val: dict[str, Any]) -> None:
    """Keep best.pt at the best monitored value; on a tie of accuracy/F1 the lower val loss wins
    (a small val split saturates at 1.0 early; without the tie-break best.pt stays undertrained)."""
    monitor = run.config.monitor
    score = (float(val[monitor]), -float(val["loss"])) if monitor != "loss" else (-float(val["loss"]), 0.0)
    if run.best is None or score > tuple(run.best):
        run.best, run.best_epoch, run.bad_epochs = list(score), run.epoch, 0
        run.save("best.pt")
    else:
        run.bad_epochs += 1


def _finish(run: _Run, evaluate_config: EvaluateConfig, stopped: bool) -> TrainResult:
    best = load_model(_load_checkpoint(run.out / "best.pt")["model"]).to(run.device)
    val = evaluate_sequences(best, run.data.subset("val"), device=run.device)
    write_report(val, run.out, prefix="val_")
    test_set = run.data.subset("test")
    test = None
    if len(test_set):
        test = evaluate_sequences(best, test_set, device=run.device, num_views=evaluate_config.views,
                                  view_fraction=evaluate_config.view_fraction)
        write_report(test, run.out, prefix="test_")
    M.plot_training_curves(run.out / "curves.png", run.history)
    M.write_json(run.out / "history.json", run.history)
    return TrainResult(run.out, run.best_epoch, run.history, val, test, run.data.labels, stopped)


def _features_dir(features: str | Path | None) -> Path:
    if features is None:
        raise VidseqError("no feature store given: pass the folder `vidseq extract` wrote (train.features)")
    path = Path(features)
    if not (path / "store.json").is_file():
        stores = sorted(p.parent for p in path.glob("*/store.json"))
        if len(stores) == 1:
            return stores[0]
        hint = f"; it holds {len(stores)} stores, pick one: {', '.join(map(str, stores))}" if stores else ""
        raise VidseqError(f"{path}: not a feature store{hint}")
    return path


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    if (out / "last.pt").exists() and not (resume or overwrite):
        raise VidseqError(f"{out} already holds a training run: pass --resume to continue it or --overwrite to start again")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _epoch_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", desc="train", disable=not enabled, dynamic_ncols=True)


def to_yaml_sections(**sections: Any) -> str:
    """The resolved sections a run used, as YAML (recorded beside its checkpoints)."""
    import yaml

    return yaml.safe_dump({name: cfg.model_dump(mode="json") for name, cfg in sections.items()}, sort_keys=False)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
