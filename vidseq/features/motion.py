"""The motion stream: dense optical flow between frame pairs, pooled on a grid, as a feature vector.

Place in the data flow: the frames the extraction already decoded and fitted for the backbone
(``uint8 (N, S, S, 3)`` RGB) -> **motion** -> ``(N, 3 * grid * grid)`` float32 (``2 * grid *
grid`` with ``intensity: false``), stored as its own stream beside the backbone features. A
frozen ImageNet CNN says what is in a frame, not how it moves; the flow says how it moves (the
classic two-stream answer), at a small fraction of the CNN's cost: both frames are resized to
``size x size`` grey, OpenCV's DIS (or Farneback) flow is computed between them and averaged
over a ``grid x grid`` layout of cells.

A sampled frame ``i`` is paired with frame ``i + step`` of the source video (the next frame by
default: flow between frames far apart, as in sparse sampling, means nothing); where ``i + step``
is past the end, the pair is the last ``step`` frames before. A video of ``step`` frames or fewer
has no pair: ``MotionError``.

The vector is ``[dx of each cell (row-major), dy of each cell, dI of each cell]``: dx and dy in
percent of the frame side per pair (a pan of 2 % of the frame per frame reads 2.0), whatever
``size`` and the video's resolution; dI (``intensity``, on by default) is the cell's mean grey in
the second frame minus in the first, in percent of full scale (255 -> 100), from the same grey
frames the flow reads. Flow assumes brightness is constant, so a fade or a light switched on
moves nothing for it; dI is what sees it (TSN's RGB difference, pooled to a few numbers).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from vidseq.config import MotionConfig
from vidseq.errors import VidseqError

MOTION_VERSION = 2  # bump when the same config gives other vectors (2: the intensity part)


class MotionError(VidseqError):
    """A video cannot give the motion stream (too short for a frame pair)."""


def motion_dim(config: MotionConfig) -> int:
    """Numbers per frame: dx, dy (and dI with ``intensity``) of each of the ``grid x grid`` cells."""
    return (3 if config.intensity else 2) * config.grid * config.grid


def recorded_motion_config(recorded: dict[str, Any]) -> MotionConfig:
    """The flow settings a store or checkpoint recorded (its recipe's ``motion`` section), enabled.

    A recipe written before ``intensity`` existed has no such key and its vectors have no dI: it
    reads as ``intensity: false``, not as today's default.
    """
    return MotionConfig.model_validate({"intensity": False, **recorded, "enabled": True})


def motion_key(config: MotionConfig, geometry: dict[str, Any]) -> dict[str, Any]:
    """What changes the motion vectors: the flow settings, the frames' geometry (the backbone's
    resize/crop/size, which the flow sees) and this module's version."""
    settings = config.model_dump(mode="json", exclude={"enabled"})
    return {"motion": settings, "geometry": geometry, "motion_version": MOTION_VERSION}


def pair_indices(frame_indices: np.ndarray, num_frames: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, second)`` source frame indices of each sampled frame's pair.

    ``second = first + step``; a pair that would end past the last frame is moved back to end
    on it. Raises ``MotionError`` when the video has no pair at all (``num_frames <= step``).
    """
    if num_frames <= step:
        raise MotionError(
            f"too short for the motion stream: {num_frames} frame(s), a pair needs more than motion.step={step}"
        )
    first = np.minimum(np.asarray(frame_indices, dtype=np.int64), num_frames - 1 - step)
    return first, first + step


class FlowPooler:
    """``first, second: uint8 (N, H, W, 3)`` RGB -> pooled flow (and intensity change) ``(N,
    motion_dim(config))`` float32.

    Holds one OpenCV flow object (build one per process: they are not shared across forks).
    """

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._dis = None
        if config.method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        if first.shape != second.shape or first.ndim != 4 or first.shape[-1] != 3:
            raise ValueError(f"frame pairs must be two uint8 (N, H, W, 3) arrays, got {first.shape} and {second.shape}")
        out = np.empty((len(first), motion_dim(self.config)), dtype=np.float32)
        for n, (a, b) in enumerate(zip(first, second)):
            grey_a, grey_b = self.grey(a), self.grey(b)
            out[n] = self.pool(self.flow(grey_a, grey_b), grey_a, grey_b)
        return out

    def grey(self, frame: np.ndarray) -> np.ndarray:
        """One RGB frame -> ``size x size`` grey (area-averaged: no aliasing)."""
        size = self.config.size
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)

    def flow(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Dense flow ``(size, size, 2)`` in pixels from grey ``first`` to grey ``second``."""
        if self._dis is not None:
            return self._dis.calc(first, second, None)
        return cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 9, 3, 5, 1.1, 0)

    def pool(self, flow: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Average ``flow`` over the grid cells (percent of the frame side); with ``intensity``,
        then the cells' change of mean grey from ``first`` to ``second`` (percent of 255)."""
        cells = self._cells(flow.astype(np.float32)) * np.float32(100.0 / self.config.size)
        parts = [cells[..., 0].ravel(), cells[..., 1].ravel()]
        if self.config.intensity:
            change = self._cells(second.astype(np.float32)) - self._cells(first.astype(np.float32))
            parts.append(change.ravel() * np.float32(100.0 / 255.0))
        return np.concatenate(parts).astype(np.float32)

    def _cells(self, image: np.ndarray) -> np.ndarray:
        """Mean of each ``grid x grid`` cell (exact when ``size % grid == 0``; area-weighted otherwise)."""
        grid = self.config.grid
        return cv2.resize(image, (grid, grid), interpolation=cv2.INTER_AREA)
