"""Two feature streams: loading them side by side, early and late fusion, resume, evaluation.

The stores are made by hand (no CNN, no flow): 16 sources (groups) of 4 videos, each source
filmed for one class only. The appearance vectors hold the source's "scene" (a random vector
per group, plus noise): within the training groups it gives the class away, on unseen groups it
says nothing. The motion vectors hold the class as a constant pan (+/- on the dx dims, plus
noise): what generalises, and exactly what centring a sequence would wipe out. The split is by
group, so val and test hold unseen scenes. Everything trains in seconds on the CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.config import (
    BackboneConfig,
    IOConfig,
    ModelConfig,
    MotionConfig,
    SamplingConfig,
    TrainConfig,
)
from vidseq.errors import DatasetError, VidseqError
from vidseq.features import FeatureStore, FeatureStoreError, VideoFeatures
from vidseq.features.motion import motion_dim
from vidseq.models import LateFusion, load_model, pad_sequences
from vidseq.training.evaluate import evaluate
from vidseq.training.sequences import load_sequences
from vidseq.training.train import train
from vidseq.training.weights import choose_weights

CLASSES = ["pan_left", "pan_right"]
GROUPS, PER_GROUP = 16, 4
APPEARANCE_DIM, MOTION = 16, MotionConfig(grid=2, intensity=False)  # flow only: dx, dy (the data as drawn before dI)
MOTION_DIM = motion_dim(MOTION)
MODEL = ModelConfig(name="gru", hidden_size=16, dropout=0.0, center=False)
OPTIONS = {
    "epochs": 6,
    "patience": 50,
    "batch_size": 8,
    "lr": 0.01,
    "seed": 0,
    "warmup_epochs": 0.0,
    "val_fraction": 0.25,
    "test_fraction": 0.25,
}


def _recipe(**extra) -> dict:
    sections = {"backbone": BackboneConfig, "sampling": SamplingConfig, "io": IOConfig}
    return {**{name: section().model_dump(mode="json") for name, section in sections.items()}, **extra}


def make_stores(root: Path, *, link: bool = True, skip_motion: int = 0) -> FeatureStore:
    """The appearance store (and its linked motion sibling) of 16 groups x 4 videos under ``root``.

    ``skip_motion``: the last that many videos have no motion entry (failed in that stream).
    """
    rng = np.random.default_rng(0)
    appearance = FeatureStore.open(root / "features", {"test": "appearance"}, name="app", recipe=_recipe())
    motion = FeatureStore.open(
        root / "features",
        {"test": "motion"},
        name="motion",
        stream="motion",
        recipe=_recipe(motion=MOTION.model_dump(mode="json")),
    )
    rows, motion_rows = [], []
    for group in range(GROUPS):
        label = group % 2
        scene = rng.normal(0, 2.0, APPEARANCE_DIM)
        for k in range(PER_GROUP):
            video = root / "videos" / f"g{group:02d}_{k}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(f"video {group} {k}".encode())  # entries are keyed by content
            steps = int(rng.integers(6, 11))
            frames, times = np.arange(steps) * 3, np.arange(steps) * 0.12
            app = (scene + rng.normal(0, 0.5, (steps, APPEARANCE_DIM))).astype(np.float32)
            pan = np.zeros(MOTION_DIM)
            pan[: MOTION.grid**2] = 1.5 if label else -1.5  # dx of every cell
            mot = (pan + rng.normal(0, 1.0, (steps, MOTION_DIM))).astype(np.float32)
            row = {
                "path": str(video),
                "label": CLASSES[label],
                "status": "done",
                "frames": steps,
                "group": f"g{group:02d}",
            }
            entry = appearance.write(video, VideoFeatures(app, frames, times))
            rows.append({**row, "file": entry.relative_to(appearance.directory)})
            if len(rows) <= GROUPS * PER_GROUP - skip_motion:
                entry = motion.write(video, VideoFeatures(mot, frames, times))
                motion_rows.append({**row, "file": entry.relative_to(motion.directory)})
    for store, store_rows in ((appearance, rows), (motion, motion_rows)):
        store.add_labels(CLASSES)
        store.write_manifest(store_rows)
    if link:
        appearance.link_streams([motion])
        motion.link_streams([appearance])
    return appearance


def _train(store: FeatureStore, out: Path, *, model: ModelConfig = MODEL, **options):
    config = TrainConfig(**{**OPTIONS, **options})
    return train(model_config=model, config=config, features=store.directory, out=out, overwrite=True, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    return make_stores(tmp_path_factory.mktemp("two-stream"))


@pytest.fixture(scope="module")
def late(store, tmp_path_factory):
    """A late-fusion run, and the rows its ``on_epoch_end`` saw."""
    rows: list[dict] = []
    out = tmp_path_factory.mktemp("late") / "run"
    result = train(
        model_config=MODEL,
        config=TrainConfig(**OPTIONS, streams=["motion", "appearance"]),
        features=store.directory,
        out=out,
        progress=False,
        on_epoch_end=rows.append,
    )
    return result, rows


# ------------------------------------------------------------------------------------ sequences


def test_streams_are_concatenated_in_canonical_order(store):
    data = load_sequences(store, ["motion", "appearance"])
    assert data.streams == [("appearance", APPEARANCE_DIM), ("motion", MOTION_DIM)]
    assert data.feature_dim == APPEARANCE_DIM + MOTION_DIM and len(data) == GROUPS * PER_GROUP
    motion = store.stream_store("motion")
    first = FeatureStore.read(motion.directory / motion.read_manifest()[0]["file"]).features
    np.testing.assert_array_equal(data.features[0][:, APPEARANCE_DIM:], first)
    np.testing.assert_array_equal(data.stream("motion").features[0], first)
    assert data.subset("all").streams == data.streams
    assert load_sequences(store).streams == [("appearance", APPEARANCE_DIM)]  # a plain store: its own stream
    assert load_sequences(motion).streams == [("motion", MOTION_DIM)]


def test_videos_missing_from_a_stream_are_left_out_with_a_warning(tmp_path):
    store = make_stores(tmp_path, skip_motion=3)
    with pytest.warns(UserWarning, match="3 of 64 videos are not done in the motion stream"):
        data = load_sequences(store, ["appearance", "motion"])
    assert len(data) == 61
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_sequences(store)) == 64


def test_streams_that_sampled_other_frames_are_an_error(tmp_path):
    store = make_stores(tmp_path)
    motion = store.stream_store("motion")
    row = motion.read_manifest()[5]
    item = FeatureStore.read(motion.directory / row["file"])
    motion.write(row["path"], VideoFeatures(item.features, item.frame_indices + 1, item.timestamps))
    with pytest.raises(DatasetError, match="the motion stream holds other frames .* extract both streams again"):
        load_sequences(store, ["appearance", "motion"])


def test_a_store_without_a_motion_link_says_how_to_extract_it(tmp_path):
    store = make_stores(tmp_path, link=False)
    with pytest.raises(
        FeatureStoreError,
        match=r"no motion stream was extracted with this store; extract it "
        r"\(vidseq extract --motion",
    ):
        load_sequences(store, ["appearance", "motion"])
    with pytest.raises(FeatureStoreError, match="no motion stream"):
        _train(store, tmp_path / "run", streams=["appearance", "motion"])


# --------------------------------------------------------------------------------- late fusion


def test_late_fusion_is_at_least_as_good_as_either_stream_and_leans_on_motion(late):
    result, _ = late
    streams = result.extra["streams"]
    assert list(streams) == ["appearance", "motion"]
    assert set(streams["motion"]) == {"val", "test", "best_epoch", "history"}
    accuracy = {name: record["test"]["accuracy"] for name, record in streams.items()}
    assert accuracy["motion"] >= 0.9 and accuracy["appearance"] <= 0.75, accuracy  # scenes do not generalise
    assert result.test["accuracy"] >= max(accuracy.values()), (result.test["accuracy"], accuracy)
    weights = result.extra["fusion"]["weights"]
    assert result.extra["fusion"]["kind"] == "late" and len(weights) == 2 and sum(weights) == pytest.approx(1)
    assert weights[1] > weights[0], weights  # motion, the stream that generalises, weighs more
    assert weights == choose_weights(_val_probabilities(result.out), _val_targets(result.out))


def test_late_fusion_run_folders_and_epoch_rows(late):
    result, rows = late
    for folder in (result.out, result.out / "appearance", result.out / "motion"):
        for name in (
            "best.pt",
            "config.yaml",
            "labels.json",
            "history.json",
            "curves.png",
            "val_metrics.json",
            "test_metrics.json",
            "val_confusion.csv",
            "test_per_class.csv",
        ):
            assert (folder / name).is_file(), folder / name
    assert (result.out / "motion" / "last.pt").is_file() and not (result.out / "last.pt").exists()
    assert [row["epoch"] for row in rows] == [*range(1, 7), *range(1, 7)]
    assert {"epoch", "appearance_train_loss", "appearance_val_accuracy", "appearance_lr"} == set(rows[0]) - {
        "appearance_train_accuracy",
        "appearance_val_loss",
        "appearance_val_macro_f1",
    }
    assert "motion_val_accuracy" in rows[-1] and all(isinstance(v, (int, float)) for v in rows[-1].values())
    assert result.history[0]["epoch"] == 1 and {"appearance_val_accuracy", "motion_val_accuracy"} <= set(
        result.history[0]
    )
    stream_state = torch.load(result.out / "motion" / "best.pt", weights_only=True)
    assert stream_state["streams"] == ["motion"] and stream_state["config"]["train"]["streams"] == ["motion"]
    assert stream_state["splits"] == torch.load(result.out / "appearance" / "best.pt", weights_only=True)["splits"]


def test_the_fused_checkpoint_rebuilds_and_averages_its_members(late, store):
    result, _ = late
    state = torch.load(result.best_checkpoint, weights_only=True)
    assert state["streams"] == ["appearance", "motion"]
    assert state["stream_stores"] == {
        "appearance": str(store.directory),
        "motion": str(store.stream_store("motion").directory),
    }
    assert state["fusion"] == result.extra["fusion"] and state["labels"] == CLASSES
    assert state["extraction"]["motion"] == MOTION.model_dump(mode="json") and "backbone" in state["extraction"]
    model = load_model(state["model"])
    assert isinstance(model, LateFusion) and model.hparams["weights"] == state["fusion"]["weights"]
    members = [load_model(torch.load(result.out / s / "best.pt", weights_only=True)["model"]) for s in state["streams"]]
    padded, lengths = pad_sequences(load_sequences(store, ["appearance", "motion"]).features[:5])
    w = state["fusion"]["weights"]
    with torch.no_grad():
        expected = w[0] * torch.softmax(members[0](padded[..., :APPEARANCE_DIM], lengths), -1) + w[1] * torch.softmax(
            members[1](padded[..., APPEARANCE_DIM:], lengths), -1
        )
        torch.testing.assert_close(torch.softmax(model(padded, lengths), -1), expected)


def test_evaluate_reads_the_streams_the_fused_checkpoint_recorded(late, store, tmp_path):
    result, _ = late
    report = evaluate(result.best_checkpoint, out=tmp_path / "eval")
    assert report.metrics["num_samples"] == result.test["num_samples"]
    assert report.metrics["accuracy"] == pytest.approx(result.test["accuracy"])
    again = evaluate(result.best_checkpoint, features=store.stream_store("motion").directory, out=tmp_path / "e2")
    assert again.metrics["accuracy"] == pytest.approx(result.test["accuracy"])


def test_the_fused_checkpoint_makes_a_model_bundle(late, tmp_path):
    from vidseq.predict import write_bundle

    result, _ = late
    bundle = write_bundle(result.best_checkpoint, tmp_path / "model")
    state = torch.load(next(bundle.glob("*.pt")), weights_only=True)
    assert isinstance(load_model(state["model"]), LateFusion)


def test_resume_after_a_kill_in_the_second_stream_ends_like_an_uninterrupted_run(late, store, tmp_path):
    whole, _ = late
    out = tmp_path / "cut"

    def kill(row):
        if "motion_val_accuracy" in row and row["epoch"] == 3:
            raise KeyboardInterrupt

    config = TrainConfig(**OPTIONS, streams=["appearance", "motion"])
    with pytest.raises(KeyboardInterrupt):
        train(model_config=MODEL, config=config, features=store.directory, out=out, progress=False, on_epoch_end=kill)
    assert torch.load(out / "motion" / "last.pt", weights_only=True)["epoch"] == 3
    with pytest.raises(VidseqError, match="already holds a training run: pass --resume"):
        train(model_config=MODEL, config=config, features=store.directory, out=out, progress=False)
    rows: list[dict] = []
    resumed = train(
        model_config=MODEL,
        config=config,
        features=store.directory,
        out=out,
        resume=True,
        progress=False,
        on_epoch_end=rows.append,
    )
    assert [(row["epoch"], "motion_lr" in row) for row in rows] == [(4, True), (5, True), (6, True)]  # appearance done
    assert resumed.history == whole.history
    assert resumed.extra["fusion"] == whole.extra["fusion"]
    assert resumed.test["accuracy"] == whole.test["accuracy"]


def test_the_weight_is_the_best_val_accuracy_then_the_lower_loss_then_the_even_split():
    targets = np.array([0, 1, 0, 1])
    right = np.array([[0.8, 0.2], [0.2, 0.8], [0.8, 0.2], [0.2, 0.8]])
    unsure = np.array([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]])
    wrong = right[:, ::-1]
    assert choose_weights([right, right], targets) == [0.5, 0.5]  # every weight ties: the even split
    assert choose_weights([unsure, right], targets) == [0.0, 1.0]  # all correct: the lower loss
    assert choose_weights([wrong, unsure], targets) == [0.0, 1.0]  # accuracy first
    assert choose_weights([right, wrong], targets)[0] == 1.0
    half = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])  # right on 0 and 2 only
    assert choose_weights([half, unsure], targets) == [0.0, 1.0]  # w < 0.2 keeps all correct; 0 the lowest loss


# --------------------------------------------------------------------------- early fusion, motion


def test_early_fusion_trains_one_model_and_leaves_the_motion_dims_alone(store, tmp_path):
    result = _train(
        store,
        tmp_path / "early",
        model=MODEL.model_copy(update={"center": True}),
        streams=["appearance", "motion"],
        fusion="early",
    )
    state = torch.load(result.best_checkpoint, weights_only=True)
    hparams = state["model"]["hparams"]
    assert state["model"]["name"] == "gru" and hparams["input_dim"] == APPEARANCE_DIM + MOTION_DIM
    assert hparams["center"] and hparams["streams"] == [["appearance", APPEARANCE_DIM], ["motion", MOTION_DIM]]
    assert bool((state["model"]["state_dict"]["input.scale"][APPEARANCE_DIM:] != 1).all())  # fitted on train
    assert state["streams"] == ["appearance", "motion"] and "motion" in state["extraction"]
    assert (result.out / "last.pt").is_file() and not (result.out / "motion").exists() and not result.extra
    assert result.test["accuracy"] >= 0.8, result.test
    assert evaluate(result.best_checkpoint, out=tmp_path / "eval").metrics["accuracy"] == pytest.approx(
        result.test["accuracy"]
    )


def test_motion_alone_is_never_centred(store, tmp_path):
    result = _train(store, tmp_path / "motion", model=MODEL.model_copy(update={"center": True}), streams=["motion"])
    state = torch.load(result.best_checkpoint, weights_only=True)
    assert state["model"]["hparams"]["streams"] == [["motion", MOTION_DIM]] and state["streams"] == ["motion"]
    assert state["stream_stores"] == {"motion": str(store.stream_store("motion").directory)}
    assert state["extraction"]["motion"] == MOTION.model_dump(mode="json")
    assert result.test["accuracy"] >= 0.9, result.test  # centred, the constant pan would be gone


def test_an_appearance_checkpoint_without_streams_still_evaluates(store, tmp_path):
    result = _train(store, tmp_path / "app", epochs=2)
    state = torch.load(result.best_checkpoint, weights_only=True)
    assert state["streams"] == ["appearance"] and "motion" not in state["extraction"]
    old = {k: v for k, v in state.items() if k not in ("streams", "stream_stores")}
    old["model"] = {**old["model"], "hparams": {k: v for k, v in old["model"]["hparams"].items() if k != "streams"}}
    torch.save(old, tmp_path / "old.pt")
    report = evaluate(tmp_path / "old.pt", out=tmp_path / "eval")
    assert report.metrics["accuracy"] == pytest.approx(result.test["accuracy"])


# ------------------------------------------------------------------------------------ helpers


def _val_probabilities(out: Path) -> list[np.ndarray]:
    from vidseq.training.evaluate import predict_proba

    state = torch.load(out / "best.pt", weights_only=True)
    data = load_sequences(state["stream_stores"], state["streams"])
    val = [i for i, p in enumerate(data.paths) if state["splits"][p] == "val"]
    probs = []
    for stream in state["streams"]:
        model = load_model(torch.load(out / stream / "best.pt", weights_only=True)["model"])
        probs.append(predict_proba(model, [data.stream(stream).features[i] for i in val]))
    return probs


def _val_targets(out: Path) -> np.ndarray:
    state = torch.load(out / "best.pt", weights_only=True)
    data = load_sequences(state["stream_stores"], state["streams"])
    return np.array([t for t, p in zip(data.targets, data.paths) if state["splits"][p] == "val"])
