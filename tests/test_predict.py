"""Prediction: folders of real clips with bad files, resumable outputs, long videos as timelines."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import BackboneConfig, ModelConfig, SamplingConfig, SynthConfig, TrainConfig
from vidseq.predict import PredictError, Predictor, load_predictor, write_bundle
from vidseq.predict.batch import predict_batch
from vidseq.predict.windows import Window, merge_segments, predict_timeline

CLASSES = ["move_left", "move_right", "grow", "shrink"]
CLIP_FRAMES, FPS, RATE = 64, 25.0, 6.25  # a clip is 2.56 s; features every 4th frame


@pytest.fixture(scope="module")
def motion_model(tmp_path_factory) -> Path:
    """A GRU trained on 64-frame synthetic clips, features sampled at 6.25 frames/s (stride)."""
    from vidseq.datasets import discover
    from vidseq.features import extract
    from vidseq.synth import generate_dataset
    from vidseq.training.train import train

    root = tmp_path_factory.mktemp("motion-model")
    generate_dataset(
        root / "data",
        SynthConfig(classes=CLASSES, videos_per_class=12, num_frames=CLIP_FRAMES, size=96, seed=3),
        progress=None,
    )
    store = extract(
        discover(root / "data" / "labels.csv"),
        out=root / "features",
        progress=False,
        sampling=SamplingConfig(mode="stride", target_fps=RATE),
        backbone=BackboneConfig(pooling="grid2"),
    ).store
    train(
        model_config=ModelConfig(hidden_size=64),
        config=TrainConfig(epochs=20, crop_min=0.5, lr=0.003),
        features=store.directory,
        out=root / "train",
        progress=False,
    )
    return root / "train" / "best.pt"


def vidseq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("VIDSEQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# -- segments (pure) -------------------------------------------------------------------------


def test_segments_join_windows_and_split_halfway_between_centres():
    windows = [Window(0, 2, "a", 0.9), Window(1, 3, "a", 0.7), Window(2, 4, "b", 0.6), Window(3, 5, "b", 0.8)]
    segments = merge_segments(windows, duration=5.0)
    assert [(s.start, s.end, s.label, s.windows) for s in segments] == [(0.0, 2.5, "a", 2), (2.5, 5.0, "b", 2)]
    assert segments[0].probability == pytest.approx(0.8)
    assert merge_segments([], duration=3.0) == []


# -- long videos ---------------------------------------------------------------------------


@pytest.mark.slow
def test_long_video_segments_match_the_true_boundaries(motion_model, tmp_path):
    from vidseq.io import write_video
    from vidseq.synth import render_clip

    order = ["grow", "move_left", "shrink", "move_right", "grow", "move_right"]
    rng = np.random.default_rng(7)
    frames = np.concatenate([render_clip(c, rng, num_frames=CLIP_FRAMES, size=96) for c in order])
    video = tmp_path / "long.mp4"
    write_video(video, frames, fps=FPS)
    predictor = Predictor.from_checkpoint(motion_model, device="cpu")
    window = CLIP_FRAMES / FPS / 2  # half an action: 8 features
    timeline = predict_timeline(predictor, video, window=window, hop=window / 4, smooth=3)
    clip = CLIP_FRAMES / FPS
    assert timeline.error == "" and timeline.duration == pytest.approx(len(order) * clip, abs=0.2)
    assert timeline.frames == len(frames) // 4
    # Every true boundary has a predicted one within one window.
    predicted = [s.start for s in timeline.segments[1:]]
    for k in range(1, len(order)):
        assert min(abs(b - k * clip) for b in predicted) <= window, (k, predicted)
    # In the middle of every action, the segment there has its label.
    for k, label in enumerate(order):
        middle = (k + 0.5) * clip
        assert next(s for s in timeline.segments if s.start <= middle < s.end).label == label
    # Windows wholly inside one action are mostly right (those across two are ambiguous).
    inside = [
        (w, order[int(w.start // clip)])
        for w in timeline.windows
        if int(w.start // clip) == int((w.end - 1e-6) // clip)
    ]
    assert sum(w.label == truth for w, truth in inside) / len(inside) >= 0.75
    assert len(timeline.segments) <= 2 * len(order)


def test_window_and_hop_must_be_positive(motion_model, tmp_path):
    predictor = Predictor.from_checkpoint(motion_model, device="cpu")
    with pytest.raises(PredictError, match="--window and --hop must be positive"):
        predict_timeline(predictor, tmp_path / "x.mp4", window=0, hop=1)


# -- batches -------------------------------------------------------------------------------


@pytest.fixture()
def clip_folder(tmp_path, clip_paths) -> Path:
    """Real clips (linked, not copied), a junk .mp4, a truncated real .mp4 and a text file."""
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for path in clip_paths[:4]:
        (folder / path.name).symlink_to(path)
    (folder / "sub" / clip_paths[4].name).symlink_to(clip_paths[4])
    (folder / "broken.mp4").write_bytes(b"\x00\x01 this is not a video" * 50)
    mp4 = next(p for p in clip_paths if p.suffix == ".mp4")
    (folder / "truncated.mp4").write_bytes(mp4.read_bytes()[:2000])
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.mark.slow
def test_cli_predicts_a_folder_of_real_clips_with_bad_files_and_resumes(
    motion_model, clip_folder, clip_paths, tmp_path
):
    out = tmp_path / "predictions.csv"
    run = vidseq("predict", str(clip_folder), "--model", str(motion_model), "--out", str(out), "--top-k", "3", "-q")
    assert run.returncode == 1, run.stderr  # some files failed
    rows = read_csv(out)
    assert len(rows) == 7  # 5 clips + broken + truncated; notes.txt is not a video file
    by_name = {Path(r["path"]).name: r for r in rows}
    for path in clip_paths[:5]:
        row = by_name[path.name]
        assert row["error"] == "" and row["label"] in CLASSES and int(row["frames"]) > 0
        assert len(row["top_labels"].split("|")) == 3 and float(row["seconds"]) > 0
        probs = [float(p) for p in row["top_probabilities"].split("|")]
        assert probs == sorted(probs, reverse=True) and float(row["probability"]) == probs[0]
    for bad in ("broken.mp4", "truncated.mp4"):
        assert by_name[bad]["error"] and by_name[bad]["label"] == ""
    assert "failed: " in run.stderr and "broken.mp4" in run.stderr and "passed over" in run.stderr

    (clip_folder / clip_paths[5].name).symlink_to(clip_paths[5])  # one more clip, then run again
    again = vidseq("predict", str(clip_folder), "--model", str(motion_model), "--out", str(out), "-q")
    assert again.returncode == 1, again.stderr  # the two bad files are tried again and fail again
    assert "1 predicted, 5 already in" in again.stdout and "2 failed" in again.stdout, again.stdout + again.stderr
    rows_after = read_csv(out)  # the done rows kept; the failed ones replaced by their retries
    assert rows_after[:5] == [r for r in rows if not r["error"]] and len(rows_after) == 8
    new_names = sorted(Path(r["path"]).name for r in rows_after[5:])
    assert new_names == sorted(["broken.mp4", "truncated.mp4", clip_paths[5].name])


@pytest.mark.slow
def test_windows_and_segments_as_csv_rows_and_json_lines(motion_model, tmp_path):
    from vidseq.io import write_video
    from vidseq.synth import render_clip

    predictor = load_predictor(motion_model, device="cpu")
    clip = tmp_path / "three-actions.mp4"
    rng = np.random.default_rng(1)
    write_video(
        clip, np.concatenate([render_clip(c, rng, num_frames=CLIP_FRAMES, size=96) for c in CLASSES[:3]]), fps=FPS
    )
    csv_out, jsonl_out = tmp_path / "w.csv", tmp_path / "w.jsonl"
    result = predict_batch(
        predictor, [clip, tmp_path / "missing.mp4"], out=csv_out, window=2.0, hop=1.0, progress=False
    )
    assert (result.predicted, result.failed) == (1, 1)
    rows = read_csv(csv_out)
    windows = [r for r in rows if r["kind"] == "window"]
    segments = [r for r in rows if r["kind"] == "segment"]
    assert len(windows) >= 6 and segments and [r for r in rows if r["kind"] == "video"][0]["error"]
    starts = [float(r["start"]) for r in windows]
    assert starts == sorted(starts) and starts[1] - starts[0] == pytest.approx(0.96, abs=0.2)
    assert float(segments[0]["start"]) == 0.0 and float(segments[-1]["end"]) >= float(windows[-1]["start"])
    predict_batch(predictor, [clip], out=jsonl_out, window=2.0, progress=False)
    (record,) = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    assert record["path"] == str(clip) and len(record["windows"]) == len(windows)  # hop: half a window
    assert [s["label"] for s in record["segments"]] == [r["label"] for r in segments]
    with pytest.raises(PredictError, match="holds other columns"):
        predict_batch(predictor, [clip], out=csv_out, progress=False)  # without --window: other columns


def test_models_load_from_checkpoints_bundles_and_mlflow_folders(motion_model, tmp_path):
    bundle = write_bundle(motion_model, tmp_path / "bundle")
    assert (bundle / "checkpoint.pt").stat().st_size < motion_model.stat().st_size / 2  # no optimiser state
    (tmp_path / "mlflow-model" / "data").mkdir(parents=True)
    (tmp_path / "mlflow-model" / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: vidseq.predict\n    data: data/model\n"
    )
    write_bundle(motion_model, tmp_path / "mlflow-model" / "data" / "model")
    for source in (motion_model, bundle, tmp_path / "mlflow-model"):
        assert load_predictor(source, device="cpu").labels == sorted(CLASSES)
    with pytest.raises(PredictError, match="not a checkpoint, a vidseq model folder or an MLflow model folder"):
        load_predictor(tmp_path, device="cpu")


def test_carried_state_labels_equal_a_full_read_of_everything_so_far(motion_model, tmp_path):
    """--carry-state: one recurrent step per hop, the state carried from the start; the label at
    each hop is what the model says reading the whole video up to there (checked exactly)."""
    import torch

    from vidseq.io import write_video
    from vidseq.models import build_model, make_checkpoint
    from vidseq.synth import render_clip

    state = torch.load(motion_model, weights_only=True)
    torch.manual_seed(0)
    gru = build_model(
        "gru", input_dim=state["model"]["hparams"]["input_dim"], num_classes=4, hidden_size=16, center=False
    ).eval()
    streaming = tmp_path / "streaming.pt"
    torch.save(
        {"model": make_checkpoint("gru", gru), "labels": state["labels"], "extraction": state["extraction"]}, streaming
    )
    video = tmp_path / "v.mp4"
    write_video(video, render_clip("grow", np.random.default_rng(0), num_frames=CLIP_FRAMES, size=96), fps=FPS)
    predictor = Predictor.from_checkpoint(streaming, device="cpu")
    window = CLIP_FRAMES / FPS / 2
    timeline = predict_timeline(predictor, video, window=window, hop=window / 4, carry_state=True)
    features = predictor.features([video], sampling=SamplingConfig(mode="stride", target_fps=RATE))[0][
        str(video)
    ].features
    assert len(timeline.windows) == len(features) // 2  # one label per hop of 2 grid frames
    for k, win in enumerate(timeline.windows):
        prefix = torch.from_numpy(features[: 2 * (k + 1)])[None]
        with torch.no_grad():
            probs = torch.softmax(gru(prefix), dim=1)[0]
        assert win.label == state["labels"][int(probs.argmax())]
        assert win.probability == pytest.approx(float(probs.max()), abs=1e-5)
    with pytest.raises(PredictError, match="carrying the recurrent state needs"):
        predict_timeline(
            Predictor.from_checkpoint(motion_model, device="cpu"), video, window=window, hop=window, carry_state=True
        )


@pytest.mark.slow
def test_cli_stream_prints_labels_per_window_and_render_keeps_every_frame(motion_model, tmp_path):
    from vidseq.io import iter_frames, probe, write_video
    from vidseq.synth import render_clip

    video = tmp_path / "two-actions.mp4"
    rng = np.random.default_rng(5)
    write_video(
        video,
        np.concatenate([render_clip(c, rng, num_frames=CLIP_FRAMES, size=96) for c in ("grow", "shrink")]),
        fps=FPS,
    )
    window = CLIP_FRAMES / FPS / 2
    out = vidseq(
        "predict",
        "--stream",
        str(video),
        "--model",
        str(motion_model),
        "--window",
        str(window),
        "--hop",
        str(window / 2),
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "latency" in line]
    assert len(lines) >= 5 and all(any(c in line for c in CLASSES) for line in lines)
    assert all(int(line.split("latency")[1].split("ms")[0]) >= 0 for line in lines)

    rendered = tmp_path / "labelled.mp4"
    out = vidseq(
        "predict", str(video), "--model", str(motion_model), "--window", str(window), "--render", str(rendered)
    )
    assert out.returncode == 0, out.stderr
    assert f"wrote {rendered}" in out.stdout and "segments:" in out.stdout
    count = sum(len(chunk) for _, chunk in iter_frames(rendered))
    assert count == 2 * CLIP_FRAMES == probe(video).num_frames
    first_in, first_out = next(iter_frames(video))[1][0], next(iter_frames(rendered))[1][0]
    assert first_out.shape == first_in.shape and not np.array_equal(first_in, first_out)  # the label is drawn
    out = vidseq(
        "predict",
        str(video),
        str(video.with_name("other.mp4")),
        "--model",
        str(motion_model),
        "--render",
        str(rendered),
    )
    assert out.returncode == 2 and "--render draws on one video" in out.stderr


def test_the_default_window_is_the_training_clips_length(motion_model, tmp_path):
    # 64 frames at 25 fps sampled at 6.25 frames/s: 16 features spanning 2.56 s.
    predictor = Predictor.from_checkpoint(motion_model, device="cpu")
    assert predictor.clip_seconds == pytest.approx(CLIP_FRAMES / FPS, abs=0.01)
    assert predictor.default_window == pytest.approx(2.56, abs=0.01)
    assert (
        load_predictor(write_bundle(motion_model, tmp_path / "b"), device="cpu").default_window
        == predictor.default_window
    )
