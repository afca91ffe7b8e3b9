"""Video decoding: files -> RGB frames ``uint8 (N, H, W, 3)``, exact, reading only what is asked.

Place in the data flow: **videos -> [io] -> frames** -> features -> sequences -> logits.
Imports nothing else of vidseq but ``errors``; decoding libraries are imported on first use.

FIGURES_PLACEHOLDER
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vidseq.io._backends import DEFAULT_BACKENDS, available_backends
from vidseq.io._base import Size, VideoInfo
from vidseq.io._reader import VideoReader

__all__ = [
    "DEFAULT_BACKENDS",
    "Size",
    "VideoInfo",
    "VideoReader",
    "available_backends",
    "iter_frames",
    "open_video",
    "probe",
    "read_frames",
]


def open_video(path: str | Path, *, backend: str = "auto") -> VideoReader:
    """A reader for ``path``; nothing is opened until it is first used (fork-safe)."""
    return VideoReader(path, backend=backend)


def probe(path: str | Path, *, backend: str = "auto") -> VideoInfo:
    """Size, frame rate, codec and the real (decodable) frame count of a video.

    Raises VideoDecodeError naming the file if it is missing, empty, not a video, has no video
    stream or no backend can decode it; BackendUnavailableError for a backend not installed.
    """
    with open_video(path, backend=backend) as reader:
        return reader.info


def read_frames(
    path: str | Path,
    frame_indices: Sequence[int] | np.ndarray,
    *,
    size: Size = None,
    backend: str = "auto",
) -> np.ndarray:
    """The frames at ``frame_indices`` (any order, repeats allowed) as ``uint8 (N, H, W, 3)`` RGB.

    ``size``: None keeps the native size; an int makes the shorter side that long (aspect
    kept); ``(height, width)`` gives exactly that. Indices past the last decodable frame return
    that frame (headers lie); negative indices raise ValueError.
    """
    with open_video(path, backend=backend) as reader:
        return reader.read(frame_indices, size=size)


def iter_frames(
    path: str | Path,
    *,
    size: Size = None,
    backend: str = "auto",
    chunk_size: int = 64,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode every frame in order, yielding ``(start_index, frames)`` chunks; memory stays flat."""
    with open_video(path, backend=backend) as reader:
        yield from reader.iter_chunks(size=size, chunk_size=chunk_size)
