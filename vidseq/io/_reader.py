"""``VideoReader``: one video file behind whichever backend can decode it.

Place in the data flow: what ``vidseq.io``'s functions and later stages (the extraction loop,
datasets) hold per video.

Fork safety (dmlc/decord#294: readers deadlock across a fork). The decoder is created on first
use, in the process that uses it: a reader used in a DataLoader's parent reopens the file in a
forked worker, and pickling drops the decoder. Freeing a decoder that was inherited through
fork hangs (FFmpeg/decord clean up threads that only exist in the parent; measured with PyAV and
decord), so inherited decoders are never freed: the reader parks its own, and once this module
has opened a video it registers ``gc.freeze`` to run in every forked child, so the child's
garbage collector never finalises objects inherited from the parent (a DataLoader worker hung
collecting a decord reader that an earlier caught exception had left in a reference cycle).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vidseq.errors import VideoDecodeError
from vidseq.io._backends import backend_module, candidates, failure_error, open_first
from vidseq.io._base import Decoder, Size, VideoInfo, check_indices, output_hw

_INHERITED: list[Decoder] = []  # decoders inherited through fork; never used, never freed
_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed  # noqa: PLW0603 - once per process
    if not _fork_guard_installed:
        os.register_at_fork(after_in_child=gc.freeze)
        _fork_guard_installed = True


class VideoReader:
    """Decode frames of one video. Use as a context manager, or call ``close()``.

    With ``backend="auto"`` a backend that cannot open the file, or decodes no frame from it,
    is replaced by the next one in ``DEFAULT_BACKENDS``.
    """

    def __init__(self, path: str | Path, *, backend: str = "auto") -> None:
        self.path = str(path)
        self.backend = backend
        if backend != "auto":
            backend_module(backend)  # an unknown or missing backend fails here, not mid-run
        self._names: list[str] | None = None
        self._failures: list[tuple[str, str]] = []
        self._decoder: Decoder | None = None
        self._pid = 0

    @property
    def info(self) -> VideoInfo:
        """Size, rate, codec and the decodable frame count (opens the file on first use)."""
        return self._get().info

    def read(self, frame_indices: Sequence[int] | np.ndarray, size: Size = None) -> np.ndarray:
        """Frames at ``frame_indices`` (any order, repeats allowed) as ``uint8 (N, H, W, 3)`` RGB.

        Indices past the last decodable frame give that frame; negative ones raise ValueError.
        """
        indices = check_indices(frame_indices)
        output_hw(size, 1, 1)  # reject a bad size before any decoding
        return self._with_fallback(lambda decoder: _read(decoder, indices, size))

    def iter_chunks(self, size: Size = None, chunk_size: int = 64) -> Iterator[tuple[int, np.ndarray]]:
        """Every frame in order as ``(start_index, frames)``, at most ``chunk_size`` per chunk."""
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        output_hw(size, 1, 1)
        chunks, first = self._with_fallback(lambda decoder: _first_chunk(decoder, size, chunk_size))
        start = 0
        while first is not None:
            yield start, first
            start += len(first)
            first = next(chunks, None)

    def close(self) -> None:
        """Release the decoder; the reader reopens the file if used again."""
        if self._decoder is not None and self._pid == os.getpid():
            self._decoder.close()
        self._decoder = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "backend": self.backend}  # never the open decoder

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], backend=state["backend"])

    def __repr__(self) -> str:
        used = self._decoder.info.backend if self._decoder is not None else None
        return f"VideoReader({self.path!r}, backend={self.backend!r}, open_with={used!r})"

    def _get(self) -> Decoder:
        if self._decoder is not None and self._pid != os.getpid():
            # Inherited through fork: the parent's. Freeing it here would run FFmpeg's cleanup
            # on threads that do not exist in this process and hang (measured with PyAV), so
            # keep it alive, untouched, and open our own.
            _INHERITED.append(self._decoder)
            self._decoder = None
        if self._decoder is None:
            if self._names is None:
                self._names = candidates(self.backend)
            _install_fork_guard()
            self._decoder = open_first(self.path, self._untried(), self._failures)
            self._pid = os.getpid()
        return self._decoder

    def _with_fallback(self, fn):  # noqa: ANN001, ANN202
        """Run ``fn(decoder)``; on VideoDecodeError move to the next backend, if any is left."""
        while True:
            decoder = self._get()
            try:
                return fn(decoder)
            except VideoDecodeError as exc:
                self._failures.append((decoder.info.backend, exc.reason))
            # Raised outside the except block: an exception raised inside it keeps the caught
            # one (and the decoder in its frames) alive in a reference cycle.
            self.close()
            if not self._untried():
                raise failure_error(self.path, self._failures)

    def _untried(self) -> list[str]:
        failed = {name for name, _ in self._failures}
        return [name for name in self._names or [] if name not in failed]


def _read(decoder: Decoder, indices: np.ndarray, size: Size) -> np.ndarray:
    info = decoder.info
    out_hw = output_hw(size, info.height, info.width)
    clamped = np.minimum(indices, info.num_frames - 1)
    unique, inverse = np.unique(clamped, return_inverse=True)
    frames = decoder.read(unique.tolist(), out_hw)
    return frames if len(unique) == len(indices) and np.all(unique == indices) else frames[inverse]


def _first_chunk(decoder: Decoder, size: Size, chunk_size: int):  # noqa: ANN202
    info = decoder.info
    chunks = decoder.iter_chunks(output_hw(size, info.height, info.width), chunk_size)
    first = next(chunks, None)
    if first is None or len(first) == 0:
        raise VideoDecodeError(info.path, "decoded no frames")
    return chunks, first
