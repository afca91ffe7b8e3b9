"""decord backend (bundles FFmpeg 4.1): fast batched reads, guarded against its known bugs.

Place in the data flow: videos -> **[io backend]** -> frames ``uint8 (N, H, W, 3)`` RGB.

Guards (see dmlc/decord#373, #91, #195, #365):
* indices are clamped to the packet scan's count, never decord's ``len``: no reading past the
  real end, where a lying header can make decord loop forever;
* decord maps frame index <-> pts; where the pts are decode-order counters of a codec that
  reorders frames (``mgt_pianist.avi``: AVI + H.264 B-frames) its ``get_batch``, ``seek`` and
  ``skip_frames`` return neighbouring frames (measured: off by up to 5 frames, MAD 4-8). There the
  wanted frames are taken from a sequential ``next()`` decode from frame 0: exact, but as slow
  as decoding up to the last wanted frame;
* sequential reads use ``next()``: ``get_batch`` on consecutive 64-frame chunks re-seeks each
  chunk (20 s instead of ~3 s for the pianist clip);
* the reader is created on first use, inside the process that uses it (#294: deadlocks when a
  reader crosses a fork).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vidseq.errors import VideoDecodeError
from vidseq.io._base import stack
from vidseq.io._pyav import info_from_index
from vidseq.io._scan import StreamIndex

NAME = "decord"
PIP_HINT = "pip install decord"


def load() -> None:
    """Import the library (raises ImportError where it is missing) and silence its C++ log."""
    import decord  # noqa: PLC0415

    decord.logging.set_level(decord.logging.QUIET)


def open_decoder(index: StreamIndex) -> DecordDecoder:
    """A decoder for a scanned file; raises VideoDecodeError if decord cannot open it."""
    return DecordDecoder(index)


class DecordDecoder:
    """decord reads; see the module docstring for where it decodes sequentially instead."""

    def __init__(self, index: StreamIndex) -> None:
        self.index = index
        self.info = info_from_index(index, NAME)
        self._readers: dict[tuple[int, int] | None, object] = {}
        self._end = min(index.num_frames, len(self._reader(None)))
        self.info = info_from_index(index, NAME, self._end)

    def read(self, indices: Sequence[int], out_hw: tuple[int, int] | None) -> np.ndarray:
        wanted = [min(int(i), self._end - 1) for i in indices]
        if not wanted:
            return stack([], out_hw, self.info)
        if self.index.timestamps_exact:
            batch = self._call(lambda: self._reader(out_hw).get_batch(wanted).asnumpy())
            return np.ascontiguousarray(batch)
        picked: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        for start, chunk in self._sequential(out_hw, 1, stop=max(wanted) + 1):
            if start in wanted_set:
                picked[start] = chunk[0]
        return stack([picked[i] for i in wanted], out_hw, self.info)

    def iter_chunks(self, out_hw: tuple[int, int] | None, chunk_size: int) -> Iterator[np.ndarray]:
        for _, chunk in self._sequential(out_hw, chunk_size, stop=self._end):
            yield chunk

    def close(self) -> None:
        self._readers.clear()

    def _sequential(
        self, out_hw: tuple[int, int] | None, chunk_size: int, *, stop: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, frames)`` from frame 0 to ``stop`` by ``next()``: exact on every file."""
        reader = self._reader(out_hw)
        self._call(lambda: reader.seek(0))
        frames: list[np.ndarray] = []
        for i in range(stop):
            frames.append(self._call(lambda: reader.next().asnumpy()))
            if len(frames) == chunk_size or i == stop - 1:
                yield i + 1 - len(frames), stack(frames, out_hw, self.info)
                frames = []

    def _reader(self, out_hw: tuple[int, int] | None):  # noqa: ANN202 - decord.VideoReader
        if out_hw not in self._readers:
            import decord  # noqa: PLC0415

            height, width = out_hw if out_hw is not None else (-1, -1)
            path = self.index.path
            self._readers[out_hw] = self._call(
                lambda: decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height)
            )
        return self._readers[out_hw]

    def _call(self, fn):  # noqa: ANN001, ANN202
        """Run a decord call; its errors (DECORDError, StopIteration) become VideoDecodeError."""
        import decord  # noqa: PLC0415

        try:
            return fn()
        except (decord.DECORDError, RuntimeError, StopIteration) as exc:
            reason = _short(exc, self.index.path)
        raise VideoDecodeError(self.index.path, f"decord failed: {reason}")  # outside: no cycle


def _short(exc: BaseException, path: str) -> str:
    """decord's message without its log prefix and the path (VideoDecodeError names the file)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and ".cc:" in text:  # "[13:31:45] /.../video_reader.cc:270: msg"
        text = text.split(".cc:", 1)[1].split(": ", 1)[-1]
    return text.replace(f"[{path}] ", "").strip()[:200]
