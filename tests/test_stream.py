"""vidseq.predict.stream: files read as live streams give one label per hop once a window is full.

The mechanics (counts, pacing, errors, release) run against a stand-in predictor (mean colour
per frame, no network); the label checks run the small trained model (its training is the
slow part: about 12 s once per session).
"""

from __future__ import annotations

import functools
import http.server
import itertools
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _trained import small_model

from vidseq.io import probe, write_video
from vidseq.predict import PredictError, Predictor
from vidseq.predict import stream as stream_module
from vidseq.predict.stream import StreamLabel, open_stream, stream_labels
from vidseq.synth import render_clip, video_rng

PEDESTRIANS = "opencv_vtest_pedestrians_walking.avi"


class MeanColour:
    """A stand-in for ``Predictor``: 8 frames a window, mean colour features, 'dark'/'light'."""

    labels = ("dark", "light")
    pair_step = None  # reads no motion stream

    def __init__(self, seconds_per_frame: float = 0.0) -> None:
        self.embedded, self.seconds_per_frame = 0, seconds_per_frame

    def frame_rate(self, window: float) -> float:
        return 8 / window

    def embed(self, frames: np.ndarray) -> np.ndarray:
        self.embedded += len(frames)
        time.sleep(self.seconds_per_frame * len(frames))
        return frames.reshape(len(frames), -1, 3).mean(axis=1).astype(np.float32) / 255

    def vectors(self, frames: np.ndarray, partners: np.ndarray | None = None) -> np.ndarray:
        return self.embed(frames)

    def classify(self, sequences: list[np.ndarray]) -> np.ndarray:
        light = np.array([float(np.clip(seq.mean(), 0, 1)) for seq in sequences])
        return np.stack([1 - light, light], axis=1)


class PairedStandIn(MeanColour):
    """A stand-in for a model that reads the motion stream: records each frame and its partner."""

    pair_step = 2

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[float, float]] = []

    def vectors(self, frames: np.ndarray, partners: np.ndarray | None = None) -> np.ndarray:
        assert partners is not None and len(partners) == len(frames)
        first, second = self.embed(frames), self.embed(partners)
        self.pairs += [(float(a.mean()), float(b.mean())) for a, b in zip(first, second)]
        return first


def test_a_motion_model_gets_each_kept_frame_with_the_frame_pair_step_later(tmp_path):
    """Frame k of the clip is grey level 4k: every pair must be (4k, 4(k + 2)) / 255."""
    frames = np.stack([np.full((32, 32, 3), 4 * k, dtype=np.uint8) for k in range(50)])
    path = tmp_path / "ramp.mp4"
    write_video(path, frames, fps=25.0)
    model = PairedStandIn()
    labels = list(stream_labels(model, str(path), window=0.64, hop=0.32))
    assert labels and len(model.pairs) >= 8
    steps = [round((b - a) * 255 / 4) for a, b in model.pairs]
    assert steps == [2] * len(steps), steps
    kept = [round(a * 255 / 4) for a, _ in model.pairs]
    assert kept == sorted(kept) and kept[0] == 0  # every kept frame in order, the first one first


@pytest.fixture
def stand_in() -> MeanColour:
    return MeanColour()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.from_checkpoint(small_model(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def synth_clip(tmp_path_factory) -> Path:
    """2 s of a 'grow' clip at 25 fps, 64 px (longer than the training clips)."""
    path = tmp_path_factory.mktemp("stream") / "grow_long.mp4"
    write_video(path, render_clip("grow", video_rng(5, "grow", 0), num_frames=50, size=64), fps=25.0)
    return path


def expected_count(num_frames: int, fps: float, *, rate: float, size: int, hop: float) -> int:
    """Labels a file gives: the first window ends at its ``size``-th sample, ``(size - 1) / rate``
    seconds in; then one label per ``hop`` until the last frame, ``(num_frames - 1) / fps``."""
    first_end, last = (size - 1) / rate, (num_frames - 1) / fps
    return 0 if last < first_end else math.floor((last - first_end) / hop + 1e-9) + 1


def check_labels(
    labels: list[StreamLabel],
    predictor: Predictor,
    *,
    rate: float,
    size: int,
    hop: float,
    expected: int,
) -> None:
    assert abs(len(labels) - expected) <= 1, (len(labels), expected)
    assert [lab.index for lab in labels] == list(range(len(labels)))
    for lab in labels:
        assert lab.label in predictor.labels
        assert 1 / len(predictor.labels) - 1e-6 <= lab.probability <= 1.0
        assert lab.latency > 0
        assert lab.end - lab.start == pytest.approx((size - 1) / rate, abs=0.5 / rate + 0.05)
    # windows advance by hop (quantised to the sampling grid and the frame times)
    steps = np.diff([lab.start for lab in labels])
    assert np.all(np.abs(steps - hop) <= 1 / rate + 0.05), steps
    assert all(b.frames_read > a.frames_read for a, b in itertools.pairwise(labels))


@pytest.mark.slow
def test_synth_clip_read_as_a_stream(predictor, synth_clip):
    window, hop = 0.64, 0.24
    rate = predictor.frame_rate(window)
    size = round(window * rate)
    labels = list(stream_labels(predictor, str(synth_clip), window=window, hop=hop))
    expected = expected_count(50, 25.0, rate=rate, size=size, hop=hop)
    assert expected >= 4
    check_labels(labels, predictor, rate=rate, size=size, hop=hop, expected=expected)
    assert labels[0].start == 0.0
    assert labels[-1].frames_read <= 50


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_clip_read_as_a_stream_until_max_seconds(predictor, action_clips):
    path = action_clips / PEDESTRIANS  # 10 fps, 79.5 s: only the first 8 s are read
    fps = probe(path).fps
    window, hop, max_seconds = 2.0, 1.0, 8.0
    rate = predictor.frame_rate(window)
    size = round(window * rate)
    labels = list(stream_labels(predictor, path, window=window, hop=hop, max_seconds=max_seconds))
    frames = math.floor(max_seconds * fps) + 1  # the frames at 0 .. max_seconds
    check_labels(
        labels,
        predictor,
        rate=rate,
        size=size,
        hop=hop,
        expected=expected_count(frames, fps, rate=rate, size=size, hop=hop),
    )
    assert labels[-1].end <= max_seconds
    assert labels[-1].frames_read <= frames


@pytest.mark.parametrize(
    ("window", "hop", "rate", "kept"),
    [
        (0.4, 0.2, 20.0, 40),  # 20 frames/s: one of every 1.25 frames of the 25 fps clip
        (0.64, 0.16, 12.5, 25),  # every other frame
        (1.0, 0.3, 8.0, 16),  # hop not a multiple of the sampling period
        (0.2, 0.1, 25.0, 50),  # 40 frames/s asked of a 25 fps file: every frame, 5 per window
    ],
)
def test_counts_and_sampling_follow_window_and_hop(stand_in, synth_clip, window, hop, rate, kept):
    size = round(window * rate)
    labels = list(stream_labels(stand_in, synth_clip, window=window, hop=hop))
    check_labels(
        labels,
        stand_in,
        rate=rate,
        size=size,
        hop=hop,
        expected=expected_count(50, 25.0, rate=rate, size=size, hop=hop),
    )
    assert stand_in.embedded == kept  # one kept frame per sampling period, each embedded once
    assert labels[-1].frames_read <= 50
    assert labels[-1].end > 49 / 25 - hop - 1 / rate  # no label missing at the end


def test_realtime_paces_a_file_at_its_frame_rate(stand_in, synth_clip):
    start = time.perf_counter()
    labels = list(stream_labels(stand_in, synth_clip, window=0.64, hop=1.0, realtime=True, max_seconds=1.0))
    assert time.perf_counter() - start >= 1.0 - 0.05  # 26 frames delivered at 25 fps
    assert len(labels) == 1


def test_closing_the_generator_early_releases_the_capture(stand_in, synth_clip, monkeypatch):
    opened = []

    def recording_open(source):
        opened.append(open_stream(source))
        return opened[-1]

    monkeypatch.setattr(stream_module, "open_stream", recording_open)
    labels = stream_labels(stand_in, synth_clip, window=0.64, hop=0.24)
    assert opened == []  # nothing is opened before the first next()
    first = next(labels)
    assert opened[0].isOpened() and first.frames_read < 50
    labels.close()
    assert not opened[0].isOpened()


@pytest.fixture
def served(synth_clip):
    """``http://127.0.0.1:PORT/`` serving the synth clip's folder (a URL: wall-clock time)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(synth_clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_url_runs_on_wall_clock_time(synth_clip, served):
    slow = MeanColour(seconds_per_frame=0.06)  # slower than the file's 25 fps: wall time shows
    start = time.perf_counter()
    labels = list(stream_labels(slow, served + synth_clip.name, window=0.3, hop=0.1, max_seconds=0.9))
    elapsed = time.perf_counter() - start
    assert len(labels) >= 2
    for lab in labels:  # 8 frames kept 0.06+ s apart (index / fps would give 7 * 0.04 = 0.28 s)
        assert lab.end - lab.start >= 7 * 0.06 - 0.01
    assert labels[-1].end <= min(elapsed, 0.9 + 1e-6)
    assert labels[-1].frames_read < 50


@pytest.mark.parametrize("source", ["no/such/video.mp4", "rtsp://127.0.0.1:9/none", 97])
def test_unopenable_source_is_named(stand_in, source):
    with pytest.raises(PredictError, match=str(source)):
        next(stream_labels(stand_in, source, window=1.0, hop=0.5))


def test_a_file_that_is_not_a_video_is_named(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(PredictError, match=f"{path}: cannot be opened as a video"):
        open_stream(str(path))


@pytest.mark.parametrize(
    ("window", "hop", "bad"),
    [
        (0.0, 0.5, "window"),
        (-1.0, 0.5, "window"),
        (float("nan"), 0.5, "window"),
        (1.0, 0.0, "hop"),
        (1.0, -0.5, "hop"),
        (1.0, float("inf"), "hop"),
        (1.0, "half", "hop"),
    ],
)
def test_window_and_hop_must_be_positive(stand_in, synth_clip, window, hop, bad):
    with pytest.raises(PredictError, match=f"{bad} must be a positive number of seconds"):
        stream_labels(stand_in, synth_clip, window=window, hop=hop)


def test_max_seconds_must_be_positive(stand_in, synth_clip):
    with pytest.raises(PredictError, match="max_seconds must be a positive number of seconds"):
        stream_labels(stand_in, synth_clip, window=1.0, hop=0.5, max_seconds=0)
