"""The pose stream: body keypoints per frame (MediaPipe Pose), normalised to the body, as a feature vector.

Place in the data flow: RGB frames ``uint8 (N, H, W, 3)`` -> **pose** -> ``(N, pose_dim)`` float32,
stored as its own stream beside the backbone features, like ``motion``: the extraction's decode
workers run ``PoseEstimator`` on the frames they decode (``features._engine.video_chunks``) into
a linked ``pose-mediapipe`` store (issue 18). Appearance says what is in the scene and the motion stream how
the whole image moves; neither says how a *body* moves, which is what most human actions are.

The estimator is MediaPipe's ``solutions.pose`` (BlazePose, 33 landmarks), an optional extra
(``pip install -e ".[pose]"``, pinned to mediapipe 0.10.14: it ships the pose detector and the
``full`` landmark model inside the wheel, so it runs offline; later releases drop
``solutions``). It finds the most prominent person of a frame, one pose per frame: the pose of
each person needs their crop (the per-person actors), which is not built yet.

The vector of a frame, in this order (``pose_dim``: 100 numbers, 133 with ``depth``):

- ``x`` of the 33 landmarks, then their ``y``: image landmarks in pixels (so the frame's aspect
  ratio is respected), minus the hip centre (mean of both hips), divided by the torso length
  (hip centre to shoulder centre, in pixels). So the vector does not depend on where the person
  stands or how large they appear; ``y`` points down, as in the image. Typical range -3..3.
- with ``depth``: each landmark's depth from MediaPipe's *world* landmarks (metric 3D, origin at
  the hips), minus the hip centre's, divided by the world torso length. Not the image
  landmarks' ``z``: measured on the NTU clip, padding or rescaling the frame moved the image
  ``z`` by up to 0.95 torso lengths (mean 0.2-0.45) against 0.24 (mean <= 0.1) for the world
  depth and <= 0.09 (mean <= 0.03) for ``x, y``. Off by default: still the noisiest part.
- each landmark's visibility (0..1; MediaPipe extrapolates landmarks outside the frame, with a
  low visibility: a half-body shot still has hips, and a torso length from them).
- a presence flag: 1 where a person was found, 0 where nobody was (then every other number is
  0, never NaN), or where the torso is under ``MIN_TORSO_PX`` pixels (no usable scale).

What the vector needs as model input: nothing per video and nothing blind per frame. It is
already normalised per frame (translation and scale). Centring it per video (``model.center``)
would subtract the person's mean posture, the very signal of a clip of someone sitting against
one standing; a per-frame LayerNorm would divide each frame by its own spread across numbers
that mix coordinates, visibilities and the flag (a crouch and a stretch pulled together; a
nobody frame, all zeros, becomes 0/0). What it does need: absent frames told apart (the flag,
zeros elsewhere: a model may mask them) and a per-dimension standardisation fitted on the
training split's frames where a person is present, with the flag left as it is.

``mode: static`` (default) runs the detector on every frame, so a frame's vector depends on
that frame alone: the same frame gives the same vector in extraction, in windows and in a
stream. ``mode: video`` uses MediaPipe's tracking and landmark smoothing across the frames of
one video (faster where frames are consecutive; meaningless on sparsely sampled frames): call
``reset()`` between videos.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import PoseConfig
from vidseq.errors import ConfigError

POSE_VERSION = 1  # bump when the same config gives other vectors
NUM_LANDMARKS = 33
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24
MIN_TORSO_PX = 2.0  # a torso shorter than this (pixels) gives no usable scale: presence 0
_MIN_WORLD_TORSO = 1e-3  # metres
_INSTALL_HINT = 'pip install -e ".[pose]"'
_LANDMARK_MODELS = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}
# The process that built a MediaPipe graph (a child forked from it inherits the value). Measured
# with mediapipe 0.10.14: once a process has built one (even closed since), a child forked from
# it that builds one aborts in malloc ("unaligned tcache chunk"); a parent that only imported
# mediapipe is fine. So graphs are built after the fork, and never by a child of such a process.
_BUILT_IN: int | None = None


def pose_dim(config: PoseConfig | None = None) -> int:
    """Numbers per frame: x and y (and depth) of the 33 landmarks, their visibilities, the presence flag."""
    depth = config is not None and config.depth
    return NUM_LANDMARKS * (3 if depth else 2) + NUM_LANDMARKS + 1


def pose_key(config: PoseConfig, geometry: dict[str, Any] | None = None) -> dict[str, Any]:
    """What changes the pose vectors: the settings, the frames' geometry (what the estimator
    sees, when the caller resizes or crops them), this module's version and MediaPipe's."""
    settings = config.model_dump(mode="json", exclude={"enabled"})
    return {"pose": settings, "geometry": geometry, "pose_version": POSE_VERSION, "mediapipe": _mediapipe_version()}


def _mediapipe_version() -> str | None:
    try:
        return metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        return None


def require_mediapipe() -> Any:
    """MediaPipe's ``solutions.pose`` module, or a ``ConfigError`` that says how to install it."""
    try:
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError:
        raise ConfigError(f"the pose stream needs the pose extra, which is not installed: {_INSTALL_HINT}") from None
    import google.protobuf

    protobuf = google.protobuf.__version__
    if int(protobuf.split(".")[0]) >= 5:
        raise ConfigError(
            f"mediapipe 0.10.14 needs protobuf 4, not {protobuf}: pip install 'protobuf>=4.25.3,<5' "
            "(onnx 1.22 works with it; onnx 1.23 needs protobuf 6)"
        )
    return mp_pose


def check_pose(config: PoseConfig) -> Path:
    """What building a ``PoseEstimator`` for ``config`` needs, checked without building one (no
    MediaPipe graph, no thread, so safe before a fork): the extra and the landmark model file.
    Its path; else a one-line ``ConfigError`` that says the fix."""
    mp_pose = require_mediapipe()
    models = Path(mp_pose.__file__).parents[2] / "modules" / "pose_landmark"  # mediapipe/python/solutions/pose.py
    model = models / _LANDMARK_MODELS[config.complexity]
    if not model.is_file():
        raise ConfigError(
            f"pose.complexity={config.complexity} needs {model.name}, which the mediapipe wheel does not ship "
            f"(MediaPipe would download it): use pose.complexity=1, or put the file at {model}"
        )
    return model


def mediapipe_ran_here() -> bool:
    """Whether this process has built a MediaPipe graph: a child it forks cannot build one (decode
    the pose stream in this process instead; see ``workers.decode_videos``)."""
    return _BUILT_IN == os.getpid()


def present(vectors: np.ndarray) -> np.ndarray:
    """The presence flags of pose vectors ``(N, pose_dim)``: True where a person was found."""
    return vectors[:, -1] > 0


def pose_vector(
    image_xy: np.ndarray,
    visibility: np.ndarray,
    world_xyz: np.ndarray | None = None,
    *,
    depth: bool = False,
) -> np.ndarray:
    """One frame's vector from its landmarks: ``image_xy (33, 2)`` in pixels, ``visibility (33,)``,
    ``world_xyz (33, 3)`` (needed with ``depth``). Presence 0 and zeros where the torso gives no scale."""
    out = np.zeros(pose_dim(PoseConfig(depth=depth)), dtype=np.float32)
    hip = image_xy[[LEFT_HIP, RIGHT_HIP]].mean(axis=0)
    torso = float(np.linalg.norm(image_xy[[LEFT_SHOULDER, RIGHT_SHOULDER]].mean(axis=0) - hip))
    if not np.isfinite(torso) or torso < MIN_TORSO_PX:
        return out
    parts = [((image_xy - hip) / torso).T.ravel()]
    if depth:
        if world_xyz is None:
            return out
        world_hip = world_xyz[[LEFT_HIP, RIGHT_HIP]].mean(axis=0)
        world_torso = float(np.linalg.norm(world_xyz[[LEFT_SHOULDER, RIGHT_SHOULDER]].mean(axis=0) - world_hip))
        if not np.isfinite(world_torso) or world_torso < _MIN_WORLD_TORSO:
            return out
        parts.append((world_xyz[:, 2] - world_hip[2]) / world_torso)
    parts += [visibility, [1.0]]
    vector = np.concatenate(parts).astype(np.float32)
    if not np.isfinite(vector).all():
        return out
    return vector


class PoseEstimator:
    """``frames: uint8 (N, H, W, 3)`` RGB -> pose vectors ``(N, pose_dim)`` float32.

    Holds one MediaPipe graph (build one per process; ``close()`` or ``with`` frees it). Raises
    ``ConfigError`` when the pose extra is missing or unusable, or the landmark model of
    ``complexity`` is not installed (only ``1`` ships in the wheel; vidseq never downloads it).
    """

    def __init__(self, config: PoseConfig | None = None) -> None:
        global _BUILT_IN
        self.config = config or PoseConfig()
        if _BUILT_IN is not None and _BUILT_IN != os.getpid():
            raise ConfigError(
                f"MediaPipe cannot start in a process forked from one that ran it (pid {_BUILT_IN}): it would "
                "crash; run the pose stream in that process (extract.num_workers=0) or in a fresh one"
            )
        check_pose(self.config)
        mp_pose = require_mediapipe()
        static = self.config.mode == "static"
        self._pose = mp_pose.Pose(
            static_image_mode=static,
            model_complexity=self.config.complexity,
            smooth_landmarks=not static,
            enable_segmentation=False,
            min_detection_confidence=self.config.min_confidence,
            min_tracking_confidence=self.config.min_confidence,
        )
        _BUILT_IN = os.getpid()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        out = np.empty((len(frames), pose_dim(self.config)), dtype=np.float32)
        with warnings.catch_warnings():  # mediapipe 0.10.14 on protobuf 4: a deprecation notice per process
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            for n, frame in enumerate(frames):
                out[n] = self.frame(frame)
        return out

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """One RGB frame ``(H, W, 3)`` -> its vector (presence 0 and zeros where nobody is found)."""
        height, width = frame.shape[:2]
        result = self._pose.process(np.ascontiguousarray(frame))
        if result.pose_landmarks is None:
            return np.zeros(pose_dim(self.config), dtype=np.float32)
        marks = result.pose_landmarks.landmark
        image_xy = np.array([(m.x * width, m.y * height) for m in marks], dtype=np.float64)
        visibility = np.array([m.visibility for m in marks], dtype=np.float64)
        world_xyz = None
        if self.config.depth and result.pose_world_landmarks is not None:
            world_xyz = np.array([(m.x, m.y, m.z) for m in result.pose_world_landmarks.landmark], dtype=np.float64)
        return pose_vector(image_xy, visibility, world_xyz, depth=self.config.depth)

    def reset(self) -> None:
        """Forget the frames seen so far (``mode: video``: call it between videos; harmless otherwise)."""
        self._pose.reset()

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
