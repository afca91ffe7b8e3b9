"""Video decoding: files -> RGB frames ``uint8 (N, H, W, 3)``, exact, reading only what is asked.

Place in the data flow: **videos -> [io] -> frames** -> features -> sequences -> logits.
Imports nothing else of vidseq but ``errors``; decoding libraries are imported on first use.

Public API: ``probe``, ``read_frames``, ``iter_frames``, ``open_video`` -> ``VideoReader``,
``VideoInfo``, ``available_backends``, ``DEFAULT_BACKENDS``. Backends: ``pyav``, ``opencv``,
``decord``, ``torchcodec`` (optional), one module each behind the ``Decoder`` interface.

What every backend shares (``_scan``): one demux pass over the packets (no decoding; 0.02 s for
the 98 s pianist clip) checks the file, counts the frames that are really there (headers lie:
``mgt_dancer.avi`` claims 1,572 and has 1,571; the MKV clip has no count; a truncated file keeps
its full-length header), finds the keyframes, and tells whether the pts are presentation times.
Indices past the real end are clamped to the last decodable frame, so no backend is ever asked
for a frame that is not there (decord loops forever on some, dmlc/decord#373).

Exactness (frame ``i`` = the ``i``-th frame of a full sequential decode), measured against a
sequential decode on the shared clips: every backend, as used here and where it accepts the
file, is exact (MAD 0.0) at 25 positions of the pianist, dancer and pedestrians clips. Left to themselves, decord's
``get_batch``/``seek``/``skip_frames`` return neighbouring frames on ``mgt_pianist.avi`` (AVI +
H.264 B-frames, pts are decode-order counters; off by up to 5 frames, MAD 4-8), torchcodec too
(MAD 1-2, and on ``ucf101_ApplyEyeMakeup`` AVI + MPEG-4 B-frames: MAD 7.9), and OpenCV's
``CAP_PROP_POS_FRAMES`` seek on ``mgt_dancer.avi`` (MAD 0.2-1.2). So: PyAV seeks by keyframe
and counts frames itself; decord decodes such files sequentially; torchcodec refuses them;
OpenCV never seeks.

The 'auto' order, ``DEFAULT_BACKENDS = ("pyav", "opencv", "decord", "torchcodec")``, was
chosen by ``benchmarks/decode.py`` (2 cores, best of 3, seconds; 16 uniformly spread frames
with a fresh reader each time vs decoding every frame to RGB)::

    video (frames)                   pyav          opencv        decord        torchcodec
                                     16 fr / all   16 fr / all   16 fr / all   16 fr / all
    mgt_pianist.avi (2925, GOP 250)  1.49 / 3.50   2.20 / 3.63   3.64 / 2.98   refused
    mgt_dancer.avi (1571, GOP 12)    0.035 / 0.74  0.30 / 0.79   0.15 / 1.20   0.077 / 1.02
    pedestrians.avi (795)            0.29 / 0.71   0.29 / 0.73   0.32 / 1.07   0.28 / 0.67
    arm_wrestling.mp4 (280)          0.12 / 0.15   0.14 / 0.15   0.17 / 0.15   0.18 / 0.19
    ntu 1080p .avi (103)             0.54 / 0.78   0.53 / 1.34   0.94 / 1.12   refused
    synthetic 1 min mp4 (1800)       1.16 / 1.69   1.21 / 1.78   0.97 / 1.59   1.15 / 1.49
    synthetic 10 min mp4 (18000)     1.52 / 16.5   12.2 / 17.0   2.06 / 19.9   1.63 / 17.9

PyAV is first: fastest (or within noise) on sparse reads everywhere but the 1-minute synthetic
clip, as fast as any on full decodes, exact on every file without a special case, and it reads
every shared clip and every damaged file of the tests. Sparse cost is bounded by the GOP, not
by the length: 16 frames of the 10-minute clip cost 1.5 s against 16.5 s for all of it (ratio
0.09); of the 1-minute clip 1.2 s against 1.7 s (0.69). OpenCV comes next as the most tolerant
fallback (it too reads every clip and cut file; exact because it never seeks, so a sparse read
costs a decode up to the last wanted frame). decord is third: it cannot open the GIF or a cut
MP4 and must decode AVI + B-frame files from the start. torchcodec is optional (it needs system
FFmpeg), refuses 3 of the 10 shared clips and fails at the cut of a truncated MP4.
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
