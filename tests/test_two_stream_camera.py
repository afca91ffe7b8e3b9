"""The motion stream end to end on real photos: the CI-sized version of the camera comparison.

A `synth --kind camera` dataset (pan, zoom and roll over scikit-image's bundled photos; split by
photo, so the test scenes are never seen in training) -> real EfficientNet-Lite0 features and the
DIS motion stream in one extraction -> GRUs on appearance only, motion only, both concatenated
(early fusion) and both fused late. Appearance alone memorises scenes; the motion stream and the
late fusion name the camera motion on unseen scenes. Then the fused model predicts from video
files (batch, windows, a stream, an MLflow-style bundle) with both streams.

Measured over 3 dataset seeds at these sizes (benchmarks/two_stream.py gives the full-size
figures): the thresholds below leave a margin of about a quarter of the measured gap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseq.config import ExtractConfig, ModelConfig, MotionConfig, SamplingConfig, SynthConfig, TrainConfig
from vidseq.datasets import discover
from vidseq.features import extract
from vidseq.models import load_model
from vidseq.predict import Predictor, write_bundle
from vidseq.predict.stream import stream_labels
from vidseq.predict.windows import predict_timeline
from vidseq.synth import generate_dataset
from vidseq.training.evaluate import predict_proba
from vidseq.training.sequences import load_sequences
from vidseq.training.train import train

pytestmark = pytest.mark.slow

VARIANTS = {
    "appearance": (["appearance"], "late"),
    "motion": (["motion"], "late"),
    "early": (["appearance", "motion"], "early"),
    "late": (["appearance", "motion"], "late"),
}


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """The dataset, its two linked stores and a trained GRU of each variant."""
    root = tmp_path_factory.mktemp("camera")
    synth = SynthConfig(kind="camera", videos_per_class=12, num_frames=24, size=96, seed=0)
    generate_dataset(root / "synth", synth)
    result = extract(
        discover(root / "synth" / "labels.csv"),
        out=root / "features",
        sampling=SamplingConfig(count=12),
        motion=MotionConfig(enabled=True),
        config=ExtractConfig(num_workers=1),
        progress=False,
    )
    assert result.ok and result.motion is not None and result.motion.ok
    runs = {}
    for variant, (streams, fusion) in VARIANTS.items():
        config = TrainConfig(epochs=30, seed=0, streams=streams, fusion=fusion)
        runs[variant] = train(
            model_config=ModelConfig(name="gru"),
            config=config,
            features=result.store.directory,
            out=root / variant,
            progress=False,
        )
    return result.store, runs


def test_motion_and_late_fusion_name_camera_motion_on_unseen_scenes(camera):
    _, runs = camera
    test = {variant: run.test["accuracy"] for variant, run in runs.items()}
    print("camera test accuracy (GRU):", test, "late weights:", runs["late"].extra["fusion"]["weights"])
    assert test["motion"] >= 0.8, test
    assert test["late"] >= 0.8, test
    assert test["late"] >= max(test["appearance"], test["motion"]) - 1 / 16, test  # one test clip of 16
    assert test["appearance"] <= 0.6, test  # scenes of the test split were never seen
    assert test["late"] - test["appearance"] >= 0.3, test


def test_late_fusion_keeps_each_streams_run_and_its_metrics(camera):
    _, runs = camera
    late = runs["late"]
    assert set(late.extra["streams"]) == {"appearance", "motion"}
    assert sum(late.extra["fusion"]["weights"]) == pytest.approx(1.0)
    for stream, record in late.extra["streams"].items():
        assert (late.out / stream / "best.pt").is_file() and record["test"]["accuracy"] == pytest.approx(
            runs[stream].test["accuracy"]
        )  # the same run as training that stream alone
    state = torch.load(late.best_checkpoint, weights_only=True)
    assert state["streams"] == ["appearance", "motion"] and state["extraction"]["motion"]["method"] == "dis"


def test_the_fused_model_predicts_video_files_with_both_streams(camera, tmp_path):
    store, runs = camera
    checkpoint = runs["late"].best_checkpoint
    state = torch.load(checkpoint, weights_only=True)
    test_paths = sorted(path for path, split in state["splits"].items() if split == "test")[:6]
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    predictions = predictor.predict(test_paths)
    assert all(not p.error for p in predictions), [p.error for p in predictions]
    # the same probabilities as the stored features of both streams give
    data = load_sequences(store, ["appearance", "motion"])
    stored = [data.features[data.paths.index(p)] for p in test_paths]
    expected = predict_proba(load_model(state["model"]), stored)
    np.testing.assert_allclose([p.probabilities for p in predictions], expected, atol=1e-4)
    # and the bundle an MLflow model holds gives them too
    bundled = Predictor.from_bundle(write_bundle(checkpoint, tmp_path / "bundle"), device="cpu")
    assert [p.label for p in bundled.predict(test_paths)] == [p.label for p in predictions]


def test_windows_and_streams_read_both_streams(camera):
    _, runs = camera
    predictor = Predictor.from_checkpoint(runs["late"].best_checkpoint, device="cpu")
    assert predictor.streams == ["appearance", "motion"] and predictor.pair_step == 1
    clip = sorted(torch.load(runs["late"].best_checkpoint, weights_only=True)["splits"])[0]
    timeline = predict_timeline(predictor, clip, window=0.5, hop=0.25)
    assert not timeline.error and timeline.windows, timeline.error
    labels = list(stream_labels(predictor, clip, window=0.5, hop=0.25))
    assert labels and all(label.label in predictor.labels for label in labels)
