"""Tests of vidseq.sampling: examples, argument errors, and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidseq.config import SamplingConfig
from vidseq.sampling import (
    MODES,
    all_indices,
    dense_indices,
    indices_from_config,
    sample_indices,
    stride_indices,
    uniform_indices,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- examples ----------------------------------------------------------------------------


def test_uniform_eval_takes_segment_centres() -> None:
    out = uniform_indices(100, 4)
    assert out.tolist() == [12, 37, 62, 87]
    assert out.dtype == np.int64


def test_uniform_eval_with_uneven_segments() -> None:
    assert uniform_indices(10, 3).tolist() == [1, 5, 8]
    assert uniform_indices(1, 1).tolist() == [0]


def test_uniform_short_video_repeats_frames_in_order() -> None:
    out = uniform_indices(3, 8)
    assert out.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for train, generator in ((False, None), (True, rng())):
        out = uniform_indices(3, 8, train=train, rng=generator)
        assert len(out) == 8 and set(out.tolist()) == {0, 1, 2}


def test_uniform_train_draws_one_frame_inside_each_segment() -> None:
    out = uniform_indices(100, 4, train=True, rng=rng(3))
    for i, index in enumerate(out):
        assert 25 * i <= index < 25 * (i + 1)
    draws = {tuple(uniform_indices(100, 4, train=True, rng=rng(s))) for s in range(20)}
    assert len(draws) > 1  # it is random


def test_uniform_eval_ignores_a_given_rng() -> None:
    assert uniform_indices(100, 4, rng=rng(9)).tolist() == [12, 37, 62, 87]


def test_stride_every_kth_frame() -> None:
    assert stride_indices(10, stride=3).tolist() == [0, 3, 6, 9]
    assert stride_indices(10).tolist() == list(range(10))
    assert stride_indices(2, stride=5).tolist() == [0]


def test_stride_train_shifts_start_inside_first_step() -> None:
    starts = {int(stride_indices(20, stride=4, train=True, rng=rng(s))[0]) for s in range(40)}
    assert starts == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("num_frames", "fps", "target_fps", "expected"),
    [
        (30, 30.0, 10.0, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]),
        (10, 25.0, 10.0, [0, 3, 5, 8]),  # step 2.5, rounded half up
        (5, 25.0, 25.0, [0, 1, 2, 3, 4]),
        (5, 25.0, 60.0, [0, 1, 2, 3, 4]),  # target above the video rate: every frame
    ],
)
def test_stride_target_fps(num_frames: int, fps: float, target_fps: float, expected: list) -> None:
    out = stride_indices(num_frames, fps=fps, target_fps=target_fps)
    assert out.tolist() == expected


def test_stride_target_fps_fractional_rate_has_no_duplicates() -> None:
    out = stride_indices(300, fps=29.97, target_fps=10.0)
    assert np.all(np.diff(out) == 3)
    assert len(out) == 100  # positions k * 2.997; the 101st (299.7) rounds to frame 300
    out = stride_indices(100, fps=30.0, target_fps=29.0)
    assert np.all(np.diff(out) >= 1) and len(out) == 97


def test_max_frames_cap_keeps_the_spread_of_the_video() -> None:
    assert stride_indices(100, max_frames=4).tolist() == [12, 37, 62, 87]
    out = stride_indices(1000, stride=2, max_frames=10)
    assert len(out) == 10 and out[0] < 100 and out[-1] > 900
    assert np.all(out % 2 == 0)  # picks are candidates of the stride
    assert stride_indices(10, stride=3, max_frames=10).tolist() == [0, 3, 6, 9]


def test_dense_eval_is_centred() -> None:
    assert dense_indices(100, 8, stride=2).tolist() == [42, 44, 46, 48, 50, 52, 54, 56]
    assert dense_indices(16, 16).tolist() == list(range(16))


def test_dense_short_video_repeats_the_last_sampled_frame() -> None:
    assert dense_indices(10, 5, stride=4).tolist() == [0, 4, 8, 8, 8]
    assert dense_indices(3, 6).tolist() == [0, 1, 2, 2, 2, 2]
    assert dense_indices(3, 6, train=True, rng=rng()).tolist() == [0, 1, 2, 2, 2, 2]


def test_dense_train_start_is_random_and_fits() -> None:
    starts = {int(dense_indices(20, 4, stride=2, train=True, rng=rng(s))[0]) for s in range(60)}
    assert starts == set(range(14))  # span 7 -> starts 0..13


def test_all_indices() -> None:
    assert all_indices(5).tolist() == [0, 1, 2, 3, 4]
    assert all_indices(5, max_frames=3).tolist() == [0, 2, 4]
    assert all_indices(5, max_frames=9).tolist() == [0, 1, 2, 3, 4]


def test_sample_indices_dispatches_on_mode() -> None:
    assert np.array_equal(sample_indices(100, mode="uniform", count=4), uniform_indices(100, 4))
    assert np.array_equal(sample_indices(100, mode="stride", stride=7), stride_indices(100, stride=7))
    assert np.array_equal(sample_indices(100, mode="dense", count=4, stride=3), dense_indices(100, 4, stride=3))
    assert np.array_equal(sample_indices(9, mode="all", max_frames=3), all_indices(9, max_frames=3))


def test_indices_from_config() -> None:
    config = SamplingConfig(mode="stride", target_fps=10.0, max_frames=3)
    assert indices_from_config(30, 30.0, config).tolist() == [3, 15, 24]
    assert indices_from_config(100, None, SamplingConfig(count=4)).tolist() == [12, 37, 62, 87]
    dense = SamplingConfig(mode="dense", count=4, stride=2)
    out = indices_from_config(50, 25.0, dense, train=True, rng=rng(1))
    assert np.array_equal(out, dense_indices(50, 4, stride=2, train=True, rng=rng(1)))


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: uniform_indices(0, 4), "num_frames must be an integer >= 1, got 0"),
        (lambda: uniform_indices(-3, 4), "num_frames must be an integer >= 1"),
        (lambda: uniform_indices(10, 0), "count must be an integer >= 1, got 0"),
        (lambda: dense_indices(10, 0), "count must be an integer >= 1"),
        (lambda: dense_indices(10, 4, stride=0), "stride must be an integer >= 1"),
        (lambda: stride_indices(10, stride=0), "stride must be an integer >= 1"),
        (lambda: stride_indices(10, max_frames=0), "max_frames must be an integer >= 1"),
        (lambda: all_indices(0), "num_frames must be an integer >= 1"),
        (lambda: stride_indices(10, target_fps=5.0), "target_fps=5.0 needs the video's fps"),
        (lambda: stride_indices(10, fps=0.0, target_fps=5.0), "fps must be a finite number > 0"),
        (lambda: stride_indices(10, fps=30.0), None),  # fps alone is fine
        (lambda: stride_indices(10, fps=-1.0), "fps must be a finite number > 0"),
        (lambda: stride_indices(10, fps=float("nan"), target_fps=5), "fps must be a finite"),
        (lambda: stride_indices(10, fps=30, target_fps=-2), "target_fps must be a finite"),
        (lambda: stride_indices(10, stride=2, fps=30, target_fps=5), "stride or target_fps"),
        (lambda: sample_indices(10, mode="random"), "unknown sampling mode 'random'"),
        (lambda: uniform_indices(10, 4, train=True), r"train=True needs rng="),
        (lambda: dense_indices(10, 4, train=True), r"train=True needs rng="),
        (lambda: stride_indices(10, train=True), r"train=True needs rng="),
    ],
)
def test_bad_arguments_raise_value_error(call, match) -> None:
    if match is None:
        call()
        return
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: uniform_indices(10.5, 4), "num_frames must be an integer >= 1, got 10.5"),
        (lambda: uniform_indices(True, 4), "num_frames must be an integer >= 1, got True"),
        (lambda: dense_indices(10, "4"), "count must be an integer >= 1, got '4'"),
        (
            lambda: uniform_indices(10, 4, train=True, rng=np.random.RandomState(0)),
            "rng must be a numpy.random.Generator, got RandomState",
        ),
    ],
)
def test_wrong_types_raise_type_error(call, match) -> None:
    with pytest.raises(TypeError, match=match):
        call()


def test_numpy_integers_are_accepted() -> None:
    assert uniform_indices(np.int64(100), np.int32(4)).tolist() == [12, 37, 62, 87]


# -- properties ----------------------------------------------------------------------------

frames = st.integers(min_value=1, max_value=5000)
counts = st.integers(min_value=1, max_value=64)
strides = st.integers(min_value=1, max_value=9)
caps = st.none() | st.integers(min_value=1, max_value=200)
rates = st.floats(min_value=0.5, max_value=120.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def check_indices(out: np.ndarray, num_frames: int) -> None:
    assert out.dtype == np.int64 and out.ndim == 1 and out.size >= 1
    assert np.all(np.diff(out) >= 0), "indices must be sorted"
    assert out[0] >= 0 and out[-1] < num_frames, "indices must lie in [0, num_frames)"


@given(
    num_frames=frames,
    mode=st.sampled_from(MODES),
    count=counts,
    stride=strides,
    fps=rates,
    target_fps=st.none() | rates,
    max_frames=caps,
    train=st.booleans(),
    seed=seeds,
)
@settings(max_examples=300, deadline=None)
def test_every_mode_gives_sorted_in_bounds_int64(
    num_frames, mode, count, stride, fps, target_fps, max_frames, train, seed
) -> None:
    if target_fps is not None and mode == "stride":
        stride = 1
    options = {"mode": mode, "count": count, "stride": stride, "fps": fps, "target_fps": target_fps}
    out = sample_indices(num_frames, **options, max_frames=max_frames, train=train, rng=rng(seed))
    check_indices(out, num_frames)
    again = sample_indices(num_frames, **options, max_frames=max_frames, train=train, rng=rng(seed))
    assert np.array_equal(out, again), "the same seed must give the same indices"
    if mode in ("uniform", "dense"):
        assert len(out) == count
    if mode in ("stride", "all"):
        assert np.all(np.diff(out) > 0), "stride/all never repeat a frame"
        if max_frames is not None:
            assert len(out) <= max_frames


@given(num_frames=frames, mode=st.sampled_from(MODES), count=counts, stride=strides, seed=seeds)
def test_eval_is_deterministic_without_rng(num_frames, mode, count, stride, seed) -> None:
    options = {"mode": mode, "count": count, "stride": stride}
    out = sample_indices(num_frames, **options)
    assert np.array_equal(out, sample_indices(num_frames, **options))
    assert np.array_equal(out, sample_indices(num_frames, **options, rng=rng(seed)))


@given(num_frames=frames, count=counts, seed=seeds)
def test_uniform_picks_one_frame_per_segment(num_frames, count, seed) -> None:
    segment = np.arange(count)
    centres = uniform_indices(num_frames, count)
    assert np.array_equal(centres, np.floor((segment + 0.5) * num_frames / count))
    picks = uniform_indices(num_frames, count, train=True, rng=rng(seed))
    lo = np.floor(segment * num_frames / count)
    hi = np.maximum(np.floor((segment + 1) * num_frames / count), lo + 1)
    assert np.all((lo <= picks) & (picks < hi))
    if num_frames >= count:
        assert len(np.unique(centres)) == count and len(np.unique(picks)) == count


@given(num_frames=frames, max_frames=st.integers(min_value=1, max_value=400))
def test_all_with_cap_has_exact_length_and_spread(num_frames, max_frames) -> None:
    out = all_indices(num_frames, max_frames=max_frames)
    assert len(out) == min(num_frames, max_frames)
    assert len(np.unique(out)) == len(out)
    if num_frames > max_frames:  # the cap covers the whole video, not only its start
        assert out[-1] >= num_frames - num_frames / max_frames - 1


@given(num_frames=frames, fps=rates, target_fps=rates, train=st.booleans(), seed=seeds)
def test_target_fps_rate(num_frames, fps, target_fps, train, seed) -> None:
    out = stride_indices(num_frames, fps=fps, target_fps=target_fps, train=train, rng=rng(seed))
    check_indices(out, num_frames)
    if target_fps >= fps:
        assert len(out) == num_frames
    else:
        expected = num_frames * target_fps / fps
        assert abs(len(out) - expected) <= 1.5
        assert np.all(np.diff(out) >= np.floor(fps / target_fps))


@given(num_frames=frames, count=counts, stride=strides, train=st.booleans(), seed=seeds)
def test_dense_keeps_its_step(num_frames, count, stride, train, seed) -> None:
    out = dense_indices(num_frames, count, stride=stride, train=train, rng=rng(seed))
    check_indices(out, num_frames)
    steps = np.diff(out)
    assert np.all((steps == stride) | (steps == 0))
    real = np.count_nonzero(steps) + 1
    if (count - 1) * stride + 1 <= num_frames:
        assert real == count
    else:  # padded: every frame of the stride grid is used, then the last one repeats
        assert out[0] == 0 and real == (num_frames - 1) // stride + 1
