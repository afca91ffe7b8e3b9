"""The pose of each tracked person: MediaPipe Pose run inside a square crop around their box.

Place in the data flow: a grid frame + a tracked box (``actors.PersonTracker``) -> **pose_crop**
-> ``pose.PoseEstimator`` (static mode: each crop on its own) -> one ``(1, pose_dim)`` vector per
tracked frame. ``actor_tracking.track_video`` calls it for every box of every grid frame it
decodes (the ``pose`` stream of a per-person store, and ``predict --actors``);
``actor_streams.streams_of_stored_tracks`` computes the same vectors for tracks already in a
store (their frames and boxes read back from the trajectory stream), so adding pose to finished
videos re-decodes their tracked frames and runs neither the detector nor the backbone.

The crop is not the backbone's: it is ``POSE_MARGIN`` (0.8) of the box's long side wider and
``POSE_CROP`` (224) pixels square, the same whatever the backbone (so the pose store does not
depend on it). Measured (``actors.fps`` 5, the shared detector at ``imgsz`` 512, first 10 s):
the crop's size hardly matters (160, 224, 256, 384 px: presence within 0.05 of each other on
the gym, pedestrians and NTU clips; MediaPipe resizes to 224/256 itself), the margin does. At the
backbone's margin (0.15) BlazePose often finds no body, or finds one whose hips lie outside the
tracked box (the box cut the person; another one): on the basketball gym clip 36% of crops had
a pose but only 14% with its hips inside the box; at 0.8, 51% and 40%, and the real players'
tracks went from 42/58/22/30% to 89/79/26/50% found. Pedestrians: 57% -> 64% found (48% -> 52%
hips inside), NTU 100% at both. A wider crop holds more of other people, yet the hips landed
outside the box no more often (pedestrians 9% -> 12% of crops, gym 22% -> 11%).

Boxes are rounded to 0.1 pixel (as the trajectory stream's ``boxes`` are stored) before the
crop is cut, so a pose computed later from a store gives the vectors extraction would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vidseq.features.actors import square_crop

POSE_CROP = 224  # pixels, square: what BlazePose's detector reads (its landmark model reads 256)
POSE_MARGIN = 0.8  # of the box's long side, around it (actors.margin is for the backbone's crops)


def pose_geometry() -> dict[str, Any]:
    """What the pose estimator sees of a tracked person (part of the pose store's key)."""
    return {"crop": POSE_CROP, "margin": POSE_MARGIN, "box_decimals": 1}


def pose_crop(frame: np.ndarray, box: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``uint8 (POSE_CROP, POSE_CROP, 3)`` around ``box`` (``x1, y1, x2, y2`` in the video's own
    pixels) on ``frame``, decoded at ``scale`` of the video's size."""
    box = np.round(np.asarray(box, dtype=np.float32), 1)
    if scale != 1.0:
        box = box * scale
    return square_crop(frame, box, margin=POSE_MARGIN, size=POSE_CROP)
