"""The pose stream's core (vidseq.features.pose) on real frames: found where a person is, the vector
unchanged by shifting, scaling and padding the frame, presence 0 where nobody is, clear errors."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason='the pose extra is not installed: pip install -e ".[pose]"')

import google.protobuf  # noqa: E402 (mediapipe brings it)

from vidseq.config import PoseConfig  # noqa: E402
from vidseq.errors import ConfigError  # noqa: E402
from vidseq.features.pose import (  # noqa: E402
    LEFT_HIP,
    LEFT_SHOULDER,
    NUM_LANDMARKS,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    PoseEstimator,
    pose_dim,
    pose_key,
    require_mediapipe,
)
from vidseq.io import probe, read_frames  # noqa: E402

L = NUM_LANDMARKS
runs_pose = pytest.mark.skipif(
    int(google.protobuf.__version__.split(".")[0]) >= 5,
    reason=f"mediapipe 0.10.14 cannot run with protobuf {google.protobuf.__version__}: pip install 'protobuf<5'",
)

# Measured on these frames (static mode, 640x360): x, y moved by at most 0.085 torso lengths
# (mean 0.023) under the transforms below, the world depth by 0.24 (mean 0.10), visibility by 0.15.
XY_MAX, XY_MEAN = 0.15, 0.05
DEPTH_MAX, DEPTH_MEAN = 0.4, 0.15
VIS_MAX = 0.25


def split(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """A depth vector's parts: x, y, depth, visibility (each ``(N, 33)``) and presence ``(N,)``."""
    return {
        "x": vectors[:, :L],
        "y": vectors[:, L : 2 * L],
        "depth": vectors[:, 2 * L : 3 * L],
        "vis": vectors[:, 3 * L : 4 * L],
        "presence": vectors[:, 4 * L],
    }


@pytest.fixture(scope="module")
def ntu_frames(clip_paths) -> np.ndarray:
    """12 frames spread over the NTU clip (one person standing, 1920x1080), read at 640x360."""
    path = next(p for p in clip_paths if p.name.startswith("ntu_A001"))
    indices = np.linspace(0, probe(path).num_frames - 1, 12).round().astype(int)
    return read_frames(path, indices, size=(360, 640))


@pytest.fixture(scope="module")
def estimator():
    with PoseEstimator(PoseConfig(depth=True)) as pose:
        yield pose


@pytest.fixture(scope="module")
def ntu_vectors(estimator, ntu_frames) -> np.ndarray:
    return estimator(ntu_frames)


@runs_pose
def test_pose_found_on_the_ntu_clip_and_normalised_to_the_torso(ntu_vectors):
    assert ntu_vectors.shape == (12, pose_dim(PoseConfig(depth=True))) == (12, 133)
    assert ntu_vectors.dtype == np.float32 and np.isfinite(ntu_vectors).all()
    parts = split(ntu_vectors)
    assert parts["presence"].sum() >= 10  # measured: 12 of 12
    found = parts["presence"] == 1
    xy = np.stack([parts["x"][found], parts["y"][found]], axis=-1)  # (F, 33, 2)
    hip = xy[:, [LEFT_HIP, RIGHT_HIP]].mean(axis=1)
    shoulder = xy[:, [LEFT_SHOULDER, RIGHT_SHOULDER]].mean(axis=1)
    np.testing.assert_allclose(hip, 0, atol=1e-5)  # centred on the hips
    np.testing.assert_allclose(np.linalg.norm(shoulder - hip, axis=1), 1, atol=1e-5)  # torso length 1
    assert (shoulder[:, 1] < -0.9).all()  # a standing person: shoulders above the hips (y points down)
    assert (parts["vis"][found][:, [LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP]] > 0.5).all()


def _transforms(frame: np.ndarray) -> dict[str, np.ndarray]:
    h, w = frame.shape[:2]
    return {
        "shifted (padded left/top)": cv2.copyMakeBorder(frame, 60, 0, 120, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)),
        "padded right/bottom": cv2.copyMakeBorder(frame, 0, 100, 0, 200, cv2.BORDER_CONSTANT, value=(0, 0, 0)),
        "scaled 0.75x": cv2.resize(frame, (int(w * 0.75), int(h * 0.75)), interpolation=cv2.INTER_AREA),
        "scaled 1.5x": cv2.resize(frame, (int(w * 1.5), int(h * 1.5)), interpolation=cv2.INTER_LINEAR),
    }


@runs_pose
@pytest.mark.parametrize("which", [0, 6, 11])
def test_vector_unchanged_when_the_frame_is_shifted_scaled_or_padded(estimator, ntu_frames, ntu_vectors, which):
    base = split(ntu_vectors[which : which + 1])
    assert base["presence"][0] == 1
    visible = base["vis"][0] > 0.5
    for name, frame in _transforms(ntu_frames[which]).items():
        got = split(estimator(frame[None]))
        assert got["presence"][0] == 1, name
        xy = np.abs(np.concatenate([got["x"] - base["x"], got["y"] - base["y"]])[:, visible])
        assert xy.max() < XY_MAX and xy.mean() < XY_MEAN, f"{name}: x, y moved by {xy.max():.3f} (mean {xy.mean():.3f})"
        depth = np.abs(got["depth"] - base["depth"])[0, visible]
        assert depth.max() < DEPTH_MAX and depth.mean() < DEPTH_MEAN, f"{name}: depth moved by {depth.max():.3f}"
        assert np.abs(got["vis"] - base["vis"]).max() < VIS_MAX, name


@runs_pose
def test_nobody_gives_presence_0_and_zeros(estimator, ntu_frames):
    rng = np.random.default_rng(0)
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)
    noise = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    person = cv2.resize(ntu_frames[0], (320, 180), interpolation=cv2.INTER_AREA)
    person = cv2.copyMakeBorder(person, 30, 30, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    vectors = estimator(np.stack([grey, noise, person]))
    assert np.isfinite(vectors).all()
    assert (vectors[:2] == 0).all()  # nobody: presence 0 and every number 0
    assert vectors[2, -1] == 1  # a person among them is still found


@runs_pose
def test_without_depth_the_vector_is_the_depth_vector_less_depth(estimator, ntu_frames, ntu_vectors):
    with PoseEstimator(PoseConfig()) as flat:
        vectors = flat(ntu_frames[:2])
    assert vectors.shape == (2, pose_dim(PoseConfig())) == (2, 100)
    expected = np.delete(ntu_vectors[:2], np.s_[2 * L : 3 * L], axis=1)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)  # static mode: a frame's vector is its own


@runs_pose
def test_video_mode_tracks_and_resets(ntu_frames):
    with PoseEstimator(PoseConfig(mode="video")) as pose:
        vectors = pose(ntu_frames)
        assert vectors[:, -1].sum() >= 10
        pose.reset()
        assert (pose(np.full((1, 120, 160, 3), 128, dtype=np.uint8)) == 0).all()


def test_missing_mediapipe_is_one_line_naming_the_extra(monkeypatch):
    for name in ("mediapipe", "mediapipe.python", "mediapipe.python.solutions", "mediapipe.python.solutions.pose"):
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    with pytest.raises(ConfigError) as err:
        PoseEstimator(PoseConfig())
    assert 'pip install -e ".[pose]"' in str(err.value) and "\n" not in str(err.value)


def test_protobuf_too_new_is_one_line_saying_which(monkeypatch):
    monkeypatch.setattr(google.protobuf, "__version__", "7.36.2")
    with pytest.raises(ConfigError, match=r"protobuf 4, not 7\.36\.2: pip install 'protobuf>=4\.25\.3,<5'"):
        require_mediapipe()


@runs_pose
def test_complexity_whose_model_is_not_installed_is_refused_not_downloaded():
    from pathlib import Path

    mp_pose = require_mediapipe()
    heavy = Path(mp_pose.__file__).parents[2] / "modules" / "pose_landmark" / "pose_landmark_heavy.tflite"
    if heavy.exists():
        pytest.skip(f"{heavy} is installed here")
    with pytest.raises(ConfigError, match=r"pose\.complexity=2 needs pose_landmark_heavy\.tflite.*pose\.complexity=1"):
        PoseEstimator(PoseConfig(complexity=2))
    assert not heavy.exists()


def test_key_changes_with_what_changes_vectors_only():
    base = pose_key(PoseConfig())
    assert base["pose_version"] >= 1 and base["mediapipe"] == "0.10.14"
    assert pose_key(PoseConfig(enabled=True)) == base
    for other in (PoseConfig(depth=True), PoseConfig(mode="video"), PoseConfig(min_confidence=0.3)):
        assert pose_key(other) != base
    assert pose_key(PoseConfig(), {"size": 224}) != base


@runs_pose
def test_frames_must_be_uint8_rgb(estimator):
    with pytest.raises(ValueError, match="uint8"):
        estimator(np.zeros((1, 32, 32, 3), dtype=np.float32))
