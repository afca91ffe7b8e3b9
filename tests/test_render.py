"""vidseq.predict.render: annotated copies of real clips, frame for frame, the label box only."""

from __future__ import annotations

import hashlib
import shutil
from itertools import zip_longest
from pathlib import Path

import numpy as np
import pytest

import vidseq.predict.render as render_module
from vidseq.errors import VidseqError
from vidseq.io import iter_frames, probe, write_video
from vidseq.predict import PredictError
from vidseq.predict.render import RenderResult, draw_label, label_box, render_video
from vidseq.synth import render_clip, video_rng

GIF = "ucf101_CricketShot__v_CricketShot_g04_c01_rgb.gif"  # 224x224, 79 frames, 25 fps
PEDESTRIANS = "opencv_vtest_pedestrians_walking.avi"  # 768x576, 795 frames, 10 fps, msmpeg4v3
TIMELINE = [
    (0.5, 1.5, "cricket_shot", 0.87),
    (1.5, 2.5, "walking", 0.41),
    (2.5, 3.0, "cricket_shot", 0.66),
]


def _decode(path: Path) -> np.ndarray:
    return np.concatenate([frames for _, frames in iter_frames(path)])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _frames(path: Path):
    for _, chunk in iter_frames(path, chunk_size=16):
        yield from chunk


def check_render(source: Path, out: Path, timeline: list, *, first_labelled: int) -> None:
    """Render, then check playability, frame count, fps, where pixels changed and the input.
    Both videos are decoded in full, side by side (memory flat, like the renderer)."""
    digest = _sha256(source)
    result = render_video(source, out, timeline)
    assert isinstance(result, RenderResult) and result.out == out
    info_in, info_out = probe(source), probe(out)
    assert info_out.codec == "h264"
    assert info_out.fps == pytest.approx(info_in.fps, rel=1e-3) and result.fps == pytest.approx(info_in.fps)
    height, width = info_in.height, info_in.width
    assert (info_out.height, info_out.width) == (height + height % 2, width + width % 2)
    x0, y0, x1, y1 = label_box(height, width, timeline[0][2], timeline[0][3])
    below = slice(min(height, y1 + 8), None)
    diffs: dict[str, list[float]] = {"unlabelled": [], "box": [], "below": []}
    count = 0
    for count, (before, after) in enumerate(zip_longest(_frames(source), _frames(out)), start=1):
        assert before is not None and after is not None, f"frame counts differ at frame {count - 1}"
        after = after[:height, :width]  # padding of odd sides, if any
        if count <= first_labelled:
            diffs["unlabelled"].append(_mean_diff(before, after))
        else:
            diffs["box"].append(_mean_diff(before[y0:y1, x0:x1], after[y0:y1, x0:x1]))
            diffs["below"].append(_mean_diff(before[below], after[below]))
    assert count == result.frames == info_out.num_frames == info_in.num_frames
    assert _sha256(source) == digest
    assert np.mean(diffs["unlabelled"]) < 6  # before the first entry: only the encoding's loss
    assert np.min(diffs["box"]) > 30  # the box is drawn on every labelled frame
    assert np.mean(diffs["below"]) < 6  # and nothing else is


@pytest.mark.shared_data
def test_gif_is_annotated_frame_for_frame(action_clips, tmp_path):
    check_render(action_clips / GIF, tmp_path / "annotated.mp4", TIMELINE, first_labelled=13)  # 0.5 s * 25


@pytest.mark.slow
@pytest.mark.shared_data
def test_long_real_clip_is_annotated_frame_for_frame(action_clips, tmp_path):
    timeline = [
        (2.0, 6.0, "walking", 0.93),
        *[(float(t), t + 4.0, "standing", 0.55) for t in range(4, 78, 2)],
    ]
    check_render(action_clips / PEDESTRIANS, tmp_path / "pedestrians.mkv", timeline, first_labelled=20)


def test_odd_sized_video_is_padded_to_even(tmp_path):
    source = tmp_path / "odd.mp4"  # 47 x 63: x264 writes it in 4:4:4
    frames = render_clip("grow", video_rng(1, "grow", 0), num_frames=20, size=64)[:, :47, :63]
    write_video(source, np.ascontiguousarray(frames), fps=20.0)
    check_render(source, tmp_path / "odd-annotated.mp4", [(0.25, 1.0, "grow", 0.9)], first_labelled=5)


def test_timeline_objects_and_unsorted_entries(tmp_path):
    class Segment:
        def __init__(self, start, end, label, probability):
            self.start, self.end, self.label, self.probability = start, end, label, probability

    source = tmp_path / "clip.mp4"
    write_video(source, render_clip("grow", video_rng(2, "grow", 0), num_frames=10, size=96), fps=10.0)
    timeline = [
        Segment(0.5, 1.0, "b", None),
        Segment(0.0, 0.5, "a", 0.5),
    ]  # unsorted: sorted by start
    after = _decode(render_video(source, tmp_path / "out.mp4", timeline).out)
    before = _decode(source)
    x0, y0, x1, y1 = label_box(96, 96, "a", 0.5)
    for index, frame in enumerate(after):  # each frame looks like the label of its time, not the other
        box = frame[y0:y1, x0:x1]
        a, b = (draw_label(before[index], text, prob)[y0:y1, x0:x1] for text, prob in (("a", 0.5), ("b", None)))
        assert (_mean_diff(box, a) < _mean_diff(box, b)) == (index < 5), index


def test_the_input_is_never_overwritten(action_clips, tmp_path):
    source = tmp_path / GIF
    shutil.copyfile(action_clips / GIF, source)
    digest = _sha256(source)
    for out in (source, tmp_path / "sub" / ".." / GIF):
        with pytest.raises(PredictError, match="is the input video; write the annotated video to another path"):
            render_video(source, out, TIMELINE)
    linked = tmp_path / "linked.mp4"
    linked.hardlink_to(source)
    with pytest.raises(PredictError, match="is the input video"):
        render_video(source, linked, TIMELINE)
    assert _sha256(source) == digest


def test_same_path_is_refused_before_the_suffix(tmp_path):
    source = tmp_path / "clip.mp4"
    write_video(source, render_clip("grow", video_rng(3, "grow", 0), num_frames=4, size=32), fps=10.0)
    digest = _sha256(source)
    with pytest.raises(PredictError, match=f"{source}: this is the input video"):
        render_video(source, source, [(0.0, 1.0, "grow", 0.9)])
    assert _sha256(source) == digest


def test_a_bad_input_is_named_and_leaves_nothing(tmp_path):
    source = tmp_path / "broken.mp4"
    source.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VidseqError, match=str(source)):
        render_video(source, tmp_path / "out.mp4", TIMELINE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]
    with pytest.raises(VidseqError, match="missing.mp4"):
        render_video(tmp_path / "missing.mp4", tmp_path / "out.mp4", TIMELINE)


def test_a_failure_while_encoding_leaves_no_partial_file(tmp_path, monkeypatch):
    source = tmp_path / "clip.mp4"
    write_video(source, render_clip("grow", video_rng(4, "grow", 0), num_frames=8, size=32), fps=10.0)

    def failing_frames(path, **options):
        yield 0, _decode(source)[:4]
        raise VidseqError(f"{path}: decoding failed half-way")

    monkeypatch.setattr(render_module, "iter_frames", failing_frames)
    with pytest.raises(VidseqError, match="decoding failed half-way"):
        render_video(source, tmp_path / "out.mp4", TIMELINE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize(
    ("out", "timeline", "message"),
    [
        ("out.avi", TIMELINE, "unknown video suffix; name the output .mp4, .mov or .mkv"),
        (
            "out.mp4",
            [(0.0, 1.0, "grow")],
            r"timeline entry 0 .* is not \(start_s, end_s, label, probability\)",
        ),
        ("out.mp4", [(0.0, 1.0, "grow", 0.5), ("soon", 2.0, "grow", 0.5)], "timeline entry 1"),
        ("out.mp4", [(float("nan"), 1.0, "grow", 0.5)], "not a finite number"),
    ],
)
def test_bad_arguments_say_what_to_fix(tmp_path, out, timeline, message):
    source = tmp_path / "clip.mp4"
    write_video(source, render_clip("grow", video_rng(5, "grow", 0), num_frames=4, size=32), fps=10.0)
    with pytest.raises(PredictError, match=message):
        render_video(source, tmp_path / out, timeline)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 48), (240, 320), (1080, 1920), (576, 60)])
def test_the_label_box_fits_and_scales_with_the_frame(height, width):
    x0, y0, x1, y1 = label_box(height, width, "applying_eye_makeup", 0.5)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert y1 - y0 <= max(20, 0.12 * height)
    frame = np.full((height, width, 3), 200, np.uint8)
    drawn = draw_label(frame, "applying_eye_makeup", 0.5)
    changed = np.argwhere(np.any(drawn != frame, axis=-1))
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    assert np.array_equal(frame, np.full_like(frame, 200))  # the input frame is not drawn on


def test_without_libx264_the_mp4v_fallback_keeps_every_frame(tmp_path, monkeypatch):
    source = tmp_path / "odd.mp4"
    frames = render_clip("shrink", video_rng(6, "shrink", 0), num_frames=12, size=64)[:, :45, :61]
    write_video(source, np.ascontiguousarray(frames), fps=12.0)
    monkeypatch.setattr(render_module, "encoder_name", lambda: "mp4v")
    result = render_video(source, tmp_path / "out.mp4", [(0.0, 1.0, "shrink", 0.7)])
    info = probe(result.out)
    assert info.codec == "mpeg4" and (info.height, info.width) == (46, 62)
    assert len(_decode(result.out)) == 12 == result.frames
