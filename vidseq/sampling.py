"""Frame sampling: (frame count, fps, mode) -> which frame indices of a video are used.

Place in the data flow: videos -> **frame indices** -> decoded frames -> features. The
decoder (``vidseq.io``) reads exactly the indices returned here. Every function is pure
numpy: no decoder, no torch, and randomness only through an explicit ``np.random.Generator``.

Every function returns a sorted ``int64`` array with values in ``[0, num_frames)``.

Modes:
- ``uniform`` (TSN): ``count`` equal segments; eval -> each segment's centre, train -> a
  random frame inside each segment. Exactly ``count`` indices; repeats when the video has
  fewer than ``count`` frames.
- ``stride``: every ``stride``-th frame, or (``target_fps``) frames at that rate.
- ``dense``: one clip of ``count`` frames ``stride`` apart; eval centred, train random start.
- ``all``: every frame.

Decisions:
- A ``max_frames`` cap (``stride``/``all``) keeps evenly spaced candidates over the whole
  video, not the first ``max_frames``: an action can happen anywhere in a clip, and the
  first N frames of a long video would often miss it. The cap's picks are the centres of
  ``max_frames`` equal segments of the candidates (the same rule as ``uniform``; random in
  each segment when training), so they never repeat.
- ``dense`` on a video shorter than the clip pads by repeating the last sampled frame
  (MMAction2's ``repeat_last``). Looping would break the sorted order and show the model a
  jump back in time; the padded clip keeps its step and always has ``count`` indices.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only a type here: importing sampling pulls in numpy and nothing else
    from vidseq.config import SamplingConfig

MODES = ("uniform", "stride", "dense", "all")


def uniform_indices(
    num_frames: int, count: int, *, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN-style: one index per each of ``count`` equal segments of ``[0, num_frames)``.

    Eval: the centre of each segment (100 frames, 4 segments -> ``[12, 37, 62, 87]``).
    Train: a random frame inside each segment (``rng`` required). With fewer frames than
    segments, indices repeat, still sorted.
    """
    num_frames = _positive_int("num_frames", num_frames)
    count = _positive_int("count", count)
    rng = _check_rng(train, rng)
    seg = np.arange(count, dtype=np.int64)
    if not train:
        # Exact integer form of floor((i + 0.5) * num_frames / count).
        return ((2 * seg + 1) * num_frames) // (2 * count)
    starts = (seg * num_frames) // count
    ends = np.maximum(((seg + 1) * num_frames) // count, starts + 1)
    return rng.integers(starts, ends).astype(np.int64)


def stride_indices(
    num_frames: int,
    *,
    stride: int = 1,
    fps: float | None = None,
    target_fps: float | None = None,
    max_frames: int | None = None,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Every ``stride``-th frame, or frames at ``target_fps`` (needs the video's ``fps``).

    With ``target_fps`` the step is ``fps / target_fps`` frames, each position rounded to
    the nearest frame (never a duplicate); ``target_fps >= fps`` gives every frame. ``stride``
    and ``target_fps`` are alternatives: giving both is an error. Eval starts at frame 0;
    train starts at a random offset inside the first step. ``max_frames`` caps the result
    with evenly spaced picks (see the module docstring).
    """
    num_frames = _positive_int("num_frames", num_frames)
    stride = _positive_int("stride", stride)
    rng = _check_rng(train, rng)
    if target_fps is None:
        if fps is not None:
            _positive_float("fps", fps)
        start = int(rng.integers(0, min(stride, num_frames))) if train else 0
        candidates = np.arange(start, num_frames, stride, dtype=np.int64)
    else:
        if stride != 1:
            raise ValueError(f"give stride or target_fps, not both (got stride={stride}, target_fps={target_fps})")
        candidates = _rate_indices(num_frames, fps, target_fps, train=train, rng=rng)
    return _cap(candidates, max_frames, train=train, rng=rng)


def dense_indices(
    num_frames: int,
    count: int,
    *,
    stride: int = 1,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One clip of ``count`` frames, ``stride`` apart: centred (eval) or at a random start (train).

    A video shorter than the clip (``(count - 1) * stride + 1`` frames) starts at frame 0
    and pads with its last sampled frame, so the result always has ``count`` indices.
    """
    num_frames = _positive_int("num_frames", num_frames)
    count = _positive_int("count", count)
    stride = _positive_int("stride", stride)
    rng = _check_rng(train, rng)
    span = (count - 1) * stride + 1
    offsets = np.arange(count, dtype=np.int64) * stride
    if span > num_frames:
        last = ((num_frames - 1) // stride) * stride
        return np.minimum(offsets, last)
    slack = num_frames - span
    start = int(rng.integers(0, slack + 1)) if train else slack // 2
    return start + offsets


def all_indices(num_frames: int, *, max_frames: int | None = None) -> np.ndarray:
    """Every frame; with ``max_frames``, that many evenly spaced frames (deterministic)."""
    num_frames = _positive_int("num_frames", num_frames)
    return _cap(np.arange(num_frames, dtype=np.int64), max_frames, train=False, rng=None)


def sample_indices(
    num_frames: int,
    *,
    mode: str = "uniform",
    count: int = 16,
    stride: int = 1,
    fps: float | None = None,
    target_fps: float | None = None,
    max_frames: int | None = None,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Dispatch on ``mode`` (one of ``MODES``). Options a mode does not use are ignored:
    ``count`` is for uniform/dense, ``target_fps``/``fps`` for stride, ``max_frames`` for
    stride/all, ``stride`` for stride/dense.
    """
    if mode == "uniform":
        return uniform_indices(num_frames, count, train=train, rng=rng)
    if mode == "stride":
        return stride_indices(
            num_frames,
            stride=stride,
            fps=fps,
            target_fps=target_fps,
            max_frames=max_frames,
            train=train,
            rng=rng,
        )
    if mode == "dense":
        return dense_indices(num_frames, count, stride=stride, train=train, rng=rng)
    if mode == "all":
        return all_indices(num_frames, max_frames=max_frames)
    raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(MODES)}")


def indices_from_config(
    num_frames: int,
    fps: float | None,
    config: SamplingConfig,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``sample_indices`` with the options of a ``SamplingConfig`` (the ``sampling`` section)."""
    return sample_indices(
        num_frames,
        mode=config.mode,
        count=config.count,
        stride=config.stride,
        fps=fps,
        target_fps=config.target_fps,
        max_frames=config.max_frames,
        train=train,
        rng=rng,
    )


def _rate_indices(
    num_frames: int,
    fps: float | None,
    target_fps: float,
    *,
    train: bool,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Frames at ``target_fps`` from a video at ``fps``: positions ``k * fps / target_fps``."""
    if fps is None:
        raise ValueError(f"target_fps={target_fps} needs the video's fps; pass fps= (probe the video first)")
    fps = _positive_float("fps", fps)
    target_fps = _positive_float("target_fps", target_fps)
    step = fps / target_fps
    if step <= 1.0:
        return np.arange(num_frames, dtype=np.int64)
    # Train: a random phase inside the first step (below num_frames - 0.5, so frame 0 or a
    # later first frame always exists after rounding).
    phase = 0.0
    if train and rng is not None:
        phase = float(rng.uniform(0.0, min(step, num_frames - 0.5)))
    positions = phase + np.arange(int(np.ceil(num_frames / step)) + 1) * step
    # Round half up; step > 1 keeps neighbours at least one frame apart, unique() guards it.
    frames = np.unique(np.floor(positions + 0.5).astype(np.int64))
    return frames[frames < num_frames]


def _cap(
    candidates: np.ndarray,
    max_frames: int | None,
    *,
    train: bool,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """At most ``max_frames`` of ``candidates``, evenly spread over them (never repeated)."""
    if max_frames is None:
        return candidates
    max_frames = _positive_int("max_frames", max_frames)
    if candidates.size <= max_frames:
        return candidates
    return candidates[uniform_indices(candidates.size, max_frames, train=train, rng=rng)]


def _positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1 (numpy integers welcome; bools and floats are TypeErrors)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {number}")
    return number


def _positive_float(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _check_rng(train: bool, rng: np.random.Generator | None) -> np.random.Generator | None:
    """Training needs an explicit Generator; eval never uses one (and ignores it if given)."""
    if not train:
        return rng
    if rng is None:
        raise ValueError("train=True needs rng=np.random.default_rng(seed) (sampling is random)")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng
