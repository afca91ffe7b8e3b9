"""Training and evaluation on real EfficientNet-Lite0 features of synthetic motion videos."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.config import (
    BackboneConfig,
    EvaluateConfig,
    ExtractConfig,
    ModelConfig,
    SamplingConfig,
    SynthConfig,
    TrainConfig,
)
from vidseq.datasets import discover
from vidseq.errors import VidseqError
from vidseq.features import extract
from vidseq.models import load_model
from vidseq.synth import generate_dataset
from vidseq.training.evaluate import evaluate, predict_proba
from vidseq.training.train import train

PAIR_CLASSES = ["move_left", "move_right", "grow", "shrink"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """4 classes (two time-reversed pairs) x 14 videos, real features with 2x2 grid pooling."""
    work = tmp_path_factory.mktemp("motion")
    generate_dataset(
        work / "synth", SynthConfig(classes=PAIR_CLASSES, videos_per_class=14, num_frames=12, size=96, seed=3)
    )
    result = extract(
        discover(work / "synth" / "labels.csv"),
        out=work / "features",
        backbone=BackboneConfig(pooling="grid2", input_size=128),
        sampling=SamplingConfig(count=8),
        config=ExtractConfig(num_workers=1, batch_size=32),
        progress=False,
    )
    assert result.ok
    return result.store.directory


def _train(store_dir, out, name="gru", **train_options):
    options = {"epochs": 30, "patience": 30, "seed": 0, **train_options}
    return train(
        model_config=ModelConfig(name=name, hidden_size=128),
        config=TrainConfig(features=str(store_dir), **options),
        out=out,
        overwrite=True,
        progress=False,
    )


def _pair_accuracy(result_dir: Path, store_dir: Path) -> float:
    """Accuracy between the two classes of each pair, on the val+test videos (order decides)."""
    from vidseq.training.sequences import load_sequences

    state = torch.load(result_dir / "best.pt", weights_only=True)
    model = load_model(state["model"])
    data = load_sequences(store_dir)
    held = [i for i, p in enumerate(data.paths) if state["splits"][p] in ("val", "test")]
    probs = predict_proba(model, [data.features[i] for i in held])
    targets = data.targets[held]
    labels = state["labels"]
    correct = []
    for a, b in (("move_left", "move_right"), ("grow", "shrink")):
        ia, ib = labels.index(a), labels.index(b)
        for row, target in zip(probs, targets):
            if target in (ia, ib):
                correct.append((ia if row[ia] >= row[ib] else ib) == target)
    return float(np.mean(correct))


@pytest.mark.slow
def test_recurrent_models_use_frame_order_and_the_bag_of_frames_cannot(tmp_path, store_dir):
    scores = {
        name: _pair_accuracy(_train(store_dir, tmp_path / name, name).out, store_dir)
        for name in ("gru", "lstm", "meanpool")
    }
    assert scores["gru"] >= 0.85, scores
    assert scores["lstm"] >= 0.85, scores
    assert scores["meanpool"] <= 0.7, scores


def test_run_folder_has_checkpoints_reports_and_loads_weights_only(tmp_path, store_dir):
    result = _train(store_dir, tmp_path / "run", epochs=3)
    for name in (
        "last.pt",
        "best.pt",
        "config.yaml",
        "labels.json",
        "curves.png",
        "history.json",
        "val_confusion.png",
        "val_confusion.csv",
        "val_per_class.csv",
        "val_metrics.json",
        "test_confusion.png",
        "test_metrics.json",
    ):
        assert (result.out / name).is_file(), name
    state = torch.load(result.out / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["labels"] == result.labels
    assert set(state["splits"].values()) == {"train", "val", "test"}
    metrics = json.loads((result.out / "test_metrics.json").read_text())
    assert {"accuracy", "top5", "mean_class_accuracy", "macro_f1"} <= set(metrics)
    with open(result.out / "val_confusion.csv") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + len(PAIR_CLASSES)


def test_resume_after_interruption_ends_like_an_uninterrupted_run(tmp_path, store_dir):
    whole = _train(store_dir, tmp_path / "whole", epochs=5)

    def stop(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            model_config=ModelConfig(hidden_size=128),
            config=TrainConfig(features=str(store_dir), epochs=5, patience=30),
            out=tmp_path / "cut",
            overwrite=True,
            progress=False,
            on_epoch_end=stop,
        )
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    resumed = train(
        model_config=ModelConfig(hidden_size=128),
        config=TrainConfig(features=str(store_dir), epochs=5, patience=30),
        out=tmp_path / "cut",
        resume=True,
        progress=False,
    )
    assert resumed.history == whole.history
    assert resumed.test["accuracy"] == whole.test["accuracy"]


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, store_dir):
    script = f"""
import os, signal
from vidseq.config import ModelConfig, TrainConfig
from vidseq.training.train import train
def kill(row):
    if row["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
train(model_config=ModelConfig(hidden_size=128), config=TrainConfig(features={str(store_dir)!r}, epochs=4, patience=30),
      out={str(tmp_path / "run")!r}, progress=False, on_epoch_end=kill)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    resumed = train(
        model_config=ModelConfig(hidden_size=128),
        config=TrainConfig(features=str(store_dir), epochs=4, patience=30),
        out=tmp_path / "run",
        resume=True,
        progress=False,
    )
    whole = _train(store_dir, tmp_path / "whole", epochs=4)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == whole.history


def test_an_existing_run_is_never_overwritten_by_accident(tmp_path, store_dir):
    _train(store_dir, tmp_path / "run", epochs=1)
    with pytest.raises(VidseqError, match="already holds a training run: pass --resume"):
        train(config=TrainConfig(features=str(store_dir), epochs=1), out=tmp_path / "run", progress=False)


def test_evaluate_reuses_the_recorded_split_and_writes_reports(tmp_path, store_dir):
    result = _train(store_dir, tmp_path / "run", epochs=4)
    report = evaluate(result.best_checkpoint, config=EvaluateConfig(split="test", views=3))
    assert report.out == result.out / "eval-test"
    assert report.metrics["num_samples"] == result.test["num_samples"]
    assert report.metrics["accuracy"] == pytest.approx(result.test["accuracy"])
    for name in ("confusion.png", "confusion.csv", "per_class.csv", "metrics.json"):
        assert (report.out / name).is_file()
    with pytest.raises(VidseqError, match="checkpoint not found"):
        evaluate(tmp_path / "nope.pt")


def test_features_argument_must_be_a_store(tmp_path):
    with pytest.raises(VidseqError, match="not a feature store"):
        train(config=TrainConfig(features=str(tmp_path)), out=tmp_path / "run", progress=False)
