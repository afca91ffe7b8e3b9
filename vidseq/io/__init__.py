"""Video decoding: files -> RGB frames ``uint8 (N, H, W, 3)``, exact, reading only what is asked.

Place in the data flow: **videos -> [io] -> frames** -> features -> sequences -> logits.
Imports nothing else of vidseq but ``errors``; decoding libraries are imported on first use.

Encoding (``_writer``): ``write_video`` and ``VideoWriter`` (H.264 with reproducible bytes,
OpenCV's mp4v where PyAV has no libx264), ``encoder_name``.

Public API: ``probe``, ``read_frames``, ``iter_frames``, ``open_video`` -> ``VideoReader``,
``VideoInfo``, ``available_backends``, ``DEFAULT_BACKENDS``. Backends: ``pyav``, ``opencv``,
``decord``, ``torchcodec`` (optional), one module each behind the ``Decoder`` interface.

What every backend shares (``_scan``): one demux pass over the packets (no decoding; 0.02 s for
the 98 s pianist clip) checks the file, counts the frames that are really there (headers lie:
``mgt_dancer.avi`` claims 1,572 and has 1,571; the MKV clip has no count; a truncated file keeps
its full-length header), finds the keyframes, and tells whether the pts are presentation times.
Indices past the real end are clamped to the last decodable frame, so no backend is ever asked
for a frame that is not there (decord loops forever on some, dmlc/decord#373).

Exactness (frame ``i`` = the ``i``-th frame of a full sequential decode), measured on the
shared clips: every backend, as used here and where it accepts the file, returns at 25
positions of the pianist, dancer and pedestrians clips the frames of its own sequential decode
(MAD 0.0) and of PyAV's (MAD <= 0.0005: decoders of other FFmpeg versions). Left to themselves,
decord's ``get_batch``/``seek``/``skip_frames`` return neighbouring frames on
``mgt_pianist.avi`` (AVI + H.264 B-frames, whose pts are decode-order counters: off by up to 5
frames, MAD 4-8), so does torchcodec (MAD 1-2; on ``ucf101_ApplyEyeMakeup``, AVI + MPEG-4
B-frames, MAD 7.9), and so does OpenCV's ``CAP_PROP_POS_FRAMES`` seek on ``mgt_dancer.avi``
(MAD 0.2-1.2). So PyAV seeks to keyframes and counts frames itself, decord decodes such files
sequentially, torchcodec refuses them and OpenCV never seeks.

Damaged files: a file cut short reads for the part that is there (``probe`` counts those
frames; indices past the cut are clamped like any index past the end); a file that cannot be
opened, or has no video stream or no frame, raises VideoDecodeError naming the file, the
reason and every backend tried.

The 'auto' order, ``DEFAULT_BACKENDS = ("pyav", "opencv", "decord", "torchcodec")``, was
chosen by ``benchmarks/decode.py`` (2 cores, best of 3, seconds; 16 uniformly spread frames
with a fresh reader each time vs decoding every frame to RGB)::

    video (frames)                   pyav          opencv        decord        torchcodec
                                     16 fr / all   16 fr / all   16 fr / all   16 fr / all
    mgt_pianist.avi (2925, GOP 250)  1.48 / 3.44   2.51 / 5.00   2.97 / 3.34   refused
    mgt_dancer.avi (1571, GOP 12)    0.038 / 0.81  0.23 / 0.87   0.16 / 1.42   0.096 / 0.95
    pedestrians.avi (795, GOP 250)   0.30 / 0.72   0.29 / 0.75   0.33 / 1.04   0.28 / 0.69
    arm_wrestling.mp4 (280)          0.13 / 0.17   0.14 / 0.19   0.12 / 0.15   0.17 / 0.15
    ntu 1080p .avi (103, 1 GOP)      0.54 / 0.75   0.55 / 1.14   0.90 / 1.43   refused
    synthetic 1 min mp4 (1800)       1.00 / 1.64   1.19 / 1.78   0.91 / 1.54   1.02 / 1.83
    synthetic 10 min mp4 (18000)     1.50 / 16.9   12.4 / 18.3   2.18 / 22.9   1.65 / 18.6

Timings on this 2-vCPU machine moved by 10-30 % between runs; an earlier full run gave the
same ranking. PyAV is first: fastest or tied on sparse reads everywhere (decord is 9 % faster
on the 1-minute synthetic clip and ties on the short mp4), as fast as any on full decodes,
exact on every file without a special case, and it reads every shared clip and every damaged
file of the tests. Its sparse cost is bounded by the GOP, not by the length: 16 frames of the
10-minute clip cost 1.5 s against 16.9 s for all of it (ratio 0.09), of the 1-minute clip
1.0 s against 1.6 s (0.61). OpenCV is next, as the most tolerant fallback: it too reads every
clip and cut file, and is exact because it never seeks (so a sparse read costs a decode up to
the last wanted frame: 12.4 s on the 10-minute clip). decord is third: it cannot open the GIF
or a cut MP4 and must decode AVI + B-frame files from the start. torchcodec is optional (it
needs system FFmpeg), refuses 3 of the 10 shared clips and fails at the cut of a truncated MP4.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vidseq.io._backends import DEFAULT_BACKENDS, available_backends
from vidseq.io._base import Size, VideoInfo, output_hw
from vidseq.io._base import resize as resize_frame
from vidseq.io._reader import VideoReader
from vidseq.io._writer import CONTAINERS, VideoWriter, encoder_name, write_video

__all__ = [
    "CONTAINERS",
    "DEFAULT_BACKENDS",
    "Size",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "available_backends",
    "encoder_name",
    "iter_frames",
    "open_video",
    "output_hw",
    "probe",
    "read_frames",
    "resize_frame",
    "write_video",
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
