"""OpenCV backend (``cv2.VideoCapture`` on its bundled FFmpeg): sequential decoding only.

Place in the data flow: videos -> **[io backend]** -> frames ``uint8 (N, H, W, 3)`` RGB.

OpenCV's ``CAP_PROP_POS_FRAMES`` seek turns a frame number into a timestamp; on
``mgt_dancer.avi`` (a gap in the pts after frame 0) it returns the neighbouring frame. So this
backend never seeks: it ``grab()``s (decodes without colour conversion) up to each wanted frame
and ``retrieve()``s only those. Exact, and a sparse read costs a decode up to the last wanted
frame. Frames are resized after decoding (INTER_AREA).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vidseq.errors import VideoDecodeError
from vidseq.io._base import chunked, resize, stack
from vidseq.io._pyav import info_from_index
from vidseq.io._scan import StreamIndex

NAME = "opencv"
PIP_HINT = "pip install opencv-python"


def load() -> None:
    """Import the library (raises ImportError where it is missing)."""
    import cv2  # noqa: F401, PLC0415


def open_decoder(index: StreamIndex) -> OpenCVDecoder:
    """A decoder for a scanned file; raises VideoDecodeError if OpenCV cannot open it."""
    return OpenCVDecoder(index)


class OpenCVDecoder:
    """Sequential ``grab``/``retrieve`` over one ``cv2.VideoCapture``."""

    def __init__(self, index: StreamIndex) -> None:
        self.index = index
        self.info = info_from_index(index, NAME)
        self._end = index.num_frames
        self._cap = None
        self._pos = 0  # index of the frame the next grab() decodes
        self._open()

    def read(self, indices: Sequence[int], out_hw: tuple[int, int] | None) -> np.ndarray:
        frames: list[np.ndarray] = []
        for target in indices:
            target = min(int(target), self._end - 1)
            if frames and self._pos == target + 1:  # clamped repeat of the last frame
                frames.append(frames[-1])
                continue
            frames.append(self._frame_at(target, out_hw))
        return stack(frames, out_hw, self.info)

    def iter_chunks(self, out_hw: tuple[int, int] | None, chunk_size: int) -> Iterator[np.ndarray]:
        cap = _capture(self.index.path)
        try:
            frames = _grab_frames(cap, self.index.path, out_hw, self._end)
            yield from chunked(frames, chunk_size, out_hw, self.info)
        finally:
            cap.release()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _open(self) -> None:
        self.close()
        self._cap = _capture(self.index.path)
        self._pos = 0

    def _frame_at(self, target: int, out_hw: tuple[int, int] | None) -> np.ndarray:
        if self._pos > target:
            self._open()
        while self._pos <= target:
            if not self._cap.grab():
                return self._ended_early(target, out_hw)
            self._pos += 1
        return _retrieve(self._cap, self.index.path, out_hw)

    def _ended_early(self, target: int, out_hw: tuple[int, int] | None) -> np.ndarray:
        """The file ends before ``target`` (damage): clamp to the last frame that decoded."""
        if self._pos == 0:
            raise VideoDecodeError(self.index.path, "OpenCV decoded no frame (corrupt data)")
        self._end = self._pos
        return self._frame_at(self._end - 1, out_hw)


def _capture(path: str):  # noqa: ANN202 - cv2.VideoCapture
    import cv2  # noqa: PLC0415

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoDecodeError(path, "OpenCV (FFmpeg) cannot open it")
    return cap


def _retrieve(cap, path: str, out_hw: tuple[int, int] | None) -> np.ndarray:  # noqa: ANN001
    import cv2  # noqa: PLC0415

    ok, bgr = cap.retrieve()
    if not ok:
        raise VideoDecodeError(path, "OpenCV could not decode a frame it had read")
    return resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), out_hw)


def _grab_frames(cap, path: str, out_hw: tuple[int, int] | None, end: int) -> Iterator[np.ndarray]:
    """Frames ``0 .. end-1`` in order, stopping early where the capture runs out."""
    for _ in range(end):
        if not cap.grab():
            return
        yield _retrieve(cap, path, out_hw)
