"""Shared pieces of the decoding layer: ``VideoInfo``, the ``Decoder`` interface every backend
implements, and the small pure helpers (index checks, output sizes, resizing).

Place in the data flow: videos -> **[io: decode + resize]** -> frames ``uint8 (N, H, W, 3)`` RGB.
Nothing here imports a decoding library; OpenCV is imported only when a frame is resized here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Size = int | tuple[int, int] | None
"""``None``: native size; ``int``: shorter side; ``(height, width)``: exactly that."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` reports. ``num_frames`` is the decodable count, not the header's claim."""

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    backend: str


class Decoder(Protocol):
    """One open video file in one backend. Created by a backend module's ``open_decoder``.

    ``read`` gets indices that are sorted, unique and below ``info.num_frames``; it returns
    their frames in that order. If the file ends early (damage), it repeats the last frame it
    could decode. ``iter_chunks`` decodes every frame in order, at most ``chunk_size`` at once.
    """

    info: VideoInfo

    def read(self, indices: Sequence[int], out_hw: tuple[int, int] | None) -> np.ndarray: ...

    def iter_chunks(self, out_hw: tuple[int, int] | None, chunk_size: int) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def check_indices(frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frame indices as a 1-D int64 array; raises ValueError for negatives or non-integers."""
    arr = np.asarray(frame_indices)
    if arr.ndim != 1:
        raise ValueError(f"frame_indices must be a 1-D sequence of ints, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"frame_indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        bad = arr[arr < 0][:5].tolist()
        raise ValueError(f"frame_indices must be >= 0 (negative indices are not supported): {bad}")
    return arr


def output_hw(size: Size, height: int, width: int) -> tuple[int, int] | None:
    """The ``(height, width)`` a frame of ``height x width`` is resized to, or None for native."""
    if size is None:
        return None
    if _positive_int(size):
        if height <= width:
            return int(size), max(1, round(width * size / height))
        return max(1, round(height * size / width)), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(_positive_int(v) for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be None, a positive int or a (height, width) tuple, got {size!r}")


def _positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def resize(frame: np.ndarray, out_hw: tuple[int, int] | None) -> np.ndarray:
    """Resize one ``(H, W, 3)`` frame with OpenCV (used where a backend cannot): INTER_AREA to
    shrink, INTER_LINEAR to enlarge. (INTER_AREA enlarges almost like nearest-neighbour, while
    libswscale's AREA, what PyAV uses, enlarges smoothly: features of small videos then differed
    by backend, cosine 0.63; with INTER_LINEAR they agree.)"""
    if out_hw is None or frame.shape[:2] == tuple(out_hw):
        return frame
    import cv2  # noqa: PLC0415 - only needed when resizing after decode

    shrink = out_hw[0] * out_hw[1] < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(frame, (out_hw[1], out_hw[0]), interpolation=interpolation)


def chunked(
    frames: Iterator[np.ndarray], chunk_size: int, out_hw: tuple[int, int] | None, info: VideoInfo
) -> Iterator[np.ndarray]:
    """Group decoded frames into ``(n <= chunk_size, H, W, 3)`` arrays, in order."""
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == chunk_size:
            yield stack(chunk, out_hw, info)
            chunk = []
    if chunk:
        yield stack(chunk, out_hw, info)


def stack(frames: list[np.ndarray], out_hw: tuple[int, int] | None, info: VideoInfo) -> np.ndarray:
    """Frames as one ``(N, H, W, 3)`` uint8 array (an empty list gives ``(0, H, W, 3)``)."""
    if frames:
        return np.stack(frames)
    height, width = out_hw if out_hw is not None else (info.height, info.width)
    return np.zeros((0, height, width, 3), dtype=np.uint8)
