"""PyAV backend (FFmpeg 8 bundled in the ``av`` wheel): exact frame access by counting frames.

Place in the data flow: videos -> **[io backend]** -> frames ``uint8 (N, H, W, 3)`` RGB.

Frame ``i`` is the ``i``-th frame a sequential decode outputs. Timestamps are not trusted to say
which frame is which (AVI with B-frames stores decode-order counters as pts, which is what makes
decord and torchcodec return neighbouring frames on ``mgt_pianist.avi``). Instead:

* to reach frame ``t``, seek to the last keyframe packet ``k <= t`` from the scan (only when that
  keyframe lies beyond the frame the decoder is at: close frames are decoded forward), check which
  packet the demuxer landed on and that the keyframe is the first frame out, then count frames;
* if a seek lands somewhere unexpected or a leading frame comes out first (open GOP), this file
  is decoded sequentially from the start from then on: slower, never wrong;
* only wanted frames are converted to RGB (and resized by libswscale, ``AREA``, in the same step).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from vidseq.errors import VideoDecodeError
from vidseq.io._base import VideoInfo, chunked, stack
from vidseq.io._scan import StreamIndex, open_container, video_stream

NAME = "pyav"
PIP_HINT = "pip install av"
_MAX_BAD_PACKETS = 32  # consecutive undecodable packets before the rest of the file is given up


def load() -> None:
    """Import the library (raises ImportError where it is missing)."""
    import av  # noqa: F401, PLC0415


def open_decoder(index: StreamIndex) -> PyAVDecoder:
    """A decoder for a scanned file (the scan already rejected files PyAV cannot read)."""
    return PyAVDecoder(index)


class _SeekMiss(Exception):
    """A seek landed on a packet or produced a first frame other than the keyframe asked for."""


class PyAVDecoder:
    """Exact random and sequential access to one file (see the module docstring)."""

    def __init__(self, index: StreamIndex) -> None:
        self.index = index
        self.info = info_from_index(index, NAME)
        self._end = index.num_frames  # lowered if decoding finds the file ends early
        self._seek_ok = len(index.keyframes) > 1
        self._container = None
        self._stream = None
        self._frames: Iterator[tuple[int, object]] | None = None
        self._next = 0  # index of the frame self._frames yields next

    def read(self, indices: Sequence[int], out_hw: tuple[int, int] | None) -> np.ndarray:
        out: list[np.ndarray] = []
        last: tuple[int, np.ndarray] | None = None
        to_rgb = _RGB(out_hw)
        for target in indices:
            target = min(int(target), self._end - 1)
            if last is None or last[0] != target:
                index, frame = self._frame_at(target)
                last = (index, to_rgb(frame))
            out.append(last[1])
        return stack(out, out_hw, self.info)

    def iter_chunks(self, out_hw: tuple[int, int] | None, chunk_size: int) -> Iterator[np.ndarray]:
        container = open_container(self.index.path)
        try:
            stream = _prepare(container, self.index.path)
            to_rgb = _RGB(out_hw)
            frames = (
                to_rgb(frame)
                for index, frame in itertools.takewhile(
                    lambda pair: pair[0] < self._end, _decode(container, stream, None, None)
                )
            )
            yield from chunked(frames, chunk_size, out_hw, self.info)
        finally:
            container.close()

    def close(self) -> None:
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def _frame_at(self, target: int) -> tuple[int, object]:
        """Decode up to frame ``target`` (clamped to what the file really holds)."""
        while True:
            target = min(target, self._end - 1)
            if self._must_restart(target):
                self._restart(target)
            found = self._advance(target)
            if found is not None:
                return found

    def _must_restart(self, target: int) -> bool:
        if self._frames is None or self._next > target:
            return True
        return self._seek_ok and self._keyframe_before(target) > self._next

    def _keyframe_before(self, target: int) -> int:
        if not self._seek_ok:
            return 0
        keys = self.index.keyframes
        return keys[max(0, bisect.bisect_right(keys, target) - 1)]

    def _restart(self, target: int) -> None:
        """Position the decoder at the keyframe before ``target`` (a fresh open for frame 0)."""
        self._frames = None
        start = self._keyframe_before(target)
        if start == 0 or self._container is None:
            self.close()
            self._container = open_container(self.index.path)
            self._stream = _prepare(self._container, self.index.path)
        landing = None
        if start > 0:
            stamp = self.index.seek_stamps[self.index.keyframes.index(start)]
            self._container.seek(stamp, stream=self._stream, backward=True)
            landing = start
        self._frames = _decode(self._container, self._stream, landing, self.index)
        self._next = start

    def _advance(self, target: int) -> tuple[int, object] | None:
        """Pull frames up to ``target``; None after a failed seek or an early end (retry)."""
        try:
            for index, frame in self._frames:
                self._next = index + 1
                if index >= target:
                    return index, frame
        except _SeekMiss:
            self._seek_ok = False
            self._frames = None
            return None
        self._end = self._next  # the file ends before target: at most what was decoded
        self._frames = None
        if self._end <= 0:
            raise VideoDecodeError(self.index.path, "no frame could be decoded (corrupt data)")
        return None


def info_from_index(index: StreamIndex, backend: str, num_frames: int | None = None) -> VideoInfo:
    """The public ``VideoInfo`` of a scanned stream, as reported by ``backend`` (which may
    reach fewer frames than the scan counted)."""
    num_frames = index.num_frames if num_frames is None else min(num_frames, index.num_frames)
    return VideoInfo(
        path=index.path,
        num_frames=num_frames,
        fps=index.fps,
        duration=num_frames / index.fps if index.fps > 0 else 0.0,
        width=index.width,
        height=index.height,
        codec=index.codec,
        backend=backend,
    )


class _RGB:
    """Frames -> ``uint8 (H, W, 3)`` RGB through ONE libswscale context, resized if asked.

    ``frame.to_ndarray(format="rgb24")`` builds a new scaler for every frame: 1,800 frames of a
    640x360 clip took 3.4 s to convert that way and 0.25 s through a reused VideoReformatter
    (same pixels).
    """

    def __init__(self, out_hw: tuple[int, int] | None) -> None:
        from av.video.reformatter import VideoReformatter  # noqa: PLC0415

        self._reformatter = VideoReformatter()
        self._kwargs: dict = {"format": "rgb24"}
        if out_hw is not None:
            self._kwargs.update(height=out_hw[0], width=out_hw[1], interpolation="AREA")

    def __call__(self, frame) -> np.ndarray:  # noqa: ANN001 - av.VideoFrame
        return self._reformatter.reformat(frame, **self._kwargs).to_ndarray()


def _prepare(container, path: str):  # noqa: ANN001, ANN202
    # PyAV's default (slice threads). Frame threads gained nothing on 2 cores (full decode to
    # RGB: pianist 3.56 vs 3.58 s, a high-bitrate 1-min 360p clip 4.61 vs 4.52 s) and they drop
    # the frames in flight when a packet fails to decode (a cut mp4 gave 104 frames, not 106).
    return video_stream(container, path)


def _decode(  # noqa: ANN202 - a generator of (int, av.VideoFrame)
    container,
    stream,
    landing: int | None,
    index: StreamIndex | None,  # noqa: ANN001
):
    """Yield ``(frame_index, av.VideoFrame)`` in output order.

    ``landing`` is None when decoding from the start of the file. After a seek it is the
    keyframe aimed at: the first packet must be a keyframe at or before it (its index starts the
    count) and the first frame out must be that packet's frame, else ``_SeekMiss``.
    """
    import av  # noqa: PLC0415

    count, bad, check_pts = 0, 0, None
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if landing is not None:
            count, check_pts, landing = _check_landing(packet, landing, index), packet.pts, None
        try:
            frames = packet.decode()
            bad = 0
        except av.error.FFmpegError:
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                break
            continue
        for frame in frames:
            if check_pts is not None:
                if frame.pts != check_pts:
                    raise _SeekMiss
                check_pts = None
            yield count, frame
            count += 1
    yield from _flush(stream, count)


def _check_landing(packet, wanted: int, index: StreamIndex) -> int:  # noqa: ANN001
    """The frame index a seek landed on; _SeekMiss unless a keyframe at or before ``wanted``."""
    landed = index.packet_ids.get((packet.pos, packet.pts, packet.dts))
    if landed is None or not packet.is_keyframe or landed > wanted:
        raise _SeekMiss
    return landed


def _flush(stream, count: int):  # noqa: ANN001, ANN202
    import av  # noqa: PLC0415

    try:
        frames = stream.codec_context.decode(None)
    except av.error.FFmpegError:
        return
    for frame in frames:
        yield count, frame
        count += 1
