"""Tests of vidseq.synth: the files it writes, determinism, and the time-reversal property."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import SYNTH_CLASSES, SynthConfig
from vidseq.errors import ConfigError, DatasetError, VidseqError
from vidseq.synth import SynthResult, generate_dataset, render_clip, split_names, video_rng
from vidseq.synth import shapes as synth  # the shapes renderer's private _render and _Clip

SMALL = {"videos_per_class": 3, "num_frames": 8, "size": 48, "noise": 0.03, "seed": 0}
PAIRS = [("move_right", "move_left"), ("grow", "shrink"), ("rotate_cw", "rotate_ccw"), ("appear", "disappear")]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """All eight classes, three videos each, 8 frames of 48x48."""
    return generate_dataset(tmp_path_factory.mktemp("synth") / "data", SynthConfig(**SMALL))


def decode_pyav(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_cv2(path: Path) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    return np.stack(frames)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def read_labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- the folder it writes


def test_folder_per_class_with_requested_counts(small: SynthResult) -> None:
    root = small.out_dir
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(SYNTH_CLASSES)
    for name in SYNTH_CLASSES:
        files = sorted((root / name).glob("*.mp4"))
        assert [f.name for f in files] == [f"{name}_{i:04d}.mp4" for i in range(3)]
    assert small.counts == {name: 3 for name in SYNTH_CLASSES}
    assert len(small.paths) == len(small.labels) == len(small.splits) == 24
    assert all(p.parent.name == label for p, label in zip(small.paths, small.labels))
    assert not list(root.rglob(".*")), "no temporary files are left behind"


def test_labels_csv_lists_every_file_with_relative_paths(small: SynthResult) -> None:
    rows = read_labels(small.out_dir)
    on_disk = {p.relative_to(small.out_dir).as_posix() for p in small.out_dir.rglob("*.mp4")}
    assert {r["path"] for r in rows} == on_disk and len(rows) == len(on_disk)
    for row in rows:
        assert not Path(row["path"]).is_absolute()
        assert row["path"].split("/")[0] == row["label"]
    for name in SYNTH_CLASSES:  # 3 videos per class: one of each split
        assert sorted(r["split"] for r in rows if r["label"] == name) == ["test", "train", "val"]


def test_marker_records_config_and_seed(small: SynthResult) -> None:
    marker = json.loads((small.out_dir / "synth.json").read_text())
    assert marker["generator"] == "vidseq.synth" and marker["complete"] is True
    assert marker["seed"] == 0
    assert SynthConfig(**marker["config"]) == SynthConfig(**SMALL)
    assert marker["encoder"] == small.encoder == "libx264"  # PyAV ships libx264 here


def test_every_file_decodes_with_pyav_and_opencv(small: SynthResult) -> None:
    for path in small.paths:
        for frames in (decode_pyav(path), decode_cv2(path)):
            assert frames.shape == (8, 48, 48, 3) and frames.dtype == np.uint8
    import av

    with av.open(str(small.paths[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames == 8
        assert float(stream.average_rate) == pytest.approx(25.0)


def test_decodes_with_vidseq_io(small: SynthResult) -> None:
    from vidseq import io as vio

    path = small.paths[0]
    frames = np.asarray(vio.read_frames(path, list(range(8))))
    assert frames.shape == (8, 48, 48, 3)
    assert np.abs(frames.astype(int) - decode_pyav(path)).mean() < 2  # backends' YUV->RGB differ
    info = vio.probe(path)  # a VideoInfo
    assert (info.num_frames, info.width, info.height) == (8, 48, 48)
    assert info.fps == pytest.approx(25.0)


def test_from_folder_and_from_csv_find_every_video(small: SynthResult) -> None:
    from vidseq import datasets

    expected = {(p.resolve(), label) for p, label in zip(small.paths, small.labels)}
    with warnings.catch_warnings():  # labels.csv and synth.json beside the classes: no warning
        warnings.simplefilter("error")
        ds = datasets.from_folder(small.out_dir)
    assert {(Path(it.path).resolve(), it.label) for it in ds.items} == expected
    assert sorted(ds.labels) == sorted(SYNTH_CLASSES)
    ds = datasets.from_csv(small.out_dir / "labels.csv")  # labels.csv carries the splits too
    got = {(Path(it.path).resolve(), it.label, it.split) for it in ds.items}
    assert got == {(p.resolve(), label, split) for p, label, split in zip(small.paths, small.labels, small.splits)}


def test_progress_reports_each_video(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    config = SynthConfig(classes=["grow", "appear"], videos_per_class=2, num_frames=4, size=32)
    generate_dataset(tmp_path / "d", config, progress=lambda *args: calls.append(args))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_odd_size_and_mp4v_fallback_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Odd sides (x264 yuv444p) and OpenCV's mp4v (used where PyAV has no libx264) both decode."""
    odd = generate_dataset(tmp_path / "odd", SynthConfig(classes=["grow"], videos_per_class=1, num_frames=5, size=33))
    assert decode_cv2(odd.paths[0]).shape == decode_pyav(odd.paths[0]).shape == (5, 33, 33, 3)
    monkeypatch.setattr("vidseq.synth._dataset.encoder_name", lambda: "mp4v")
    res = generate_dataset(tmp_path / "mp4v", SynthConfig(classes=["grow"], videos_per_class=1, num_frames=5, size=48))
    assert res.encoder == "mp4v"
    assert decode_cv2(res.paths[0]).shape == decode_pyav(res.paths[0]).shape == (5, 48, 48, 3)


def test_splits_are_deterministic_and_near_70_15_15() -> None:
    splits = split_names(20, 0, "grow")
    assert splits == split_names(20, 0, "grow")
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (14, 3, 3)
    assert split_names(1, 0, "grow") == ["train"]


# ---------------------------------------------------------------- determinism and reruns


def test_same_seed_same_frames_other_seed_different(small: SynthResult, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", SynthConfig(**SMALL))
    other = generate_dataset(tmp_path / "other", SynthConfig(**{**SMALL, "seed": 1}))
    for a, b, c in zip(small.paths, again.paths, other.paths):
        np.testing.assert_array_equal(decode_pyav(a), decode_pyav(b))
        assert md5(a) == md5(b), "vidseq.io.write_video: files are byte-identical"
        assert not np.array_equal(decode_pyav(a), decode_pyav(c))


def test_cli_synth_is_byte_identical_across_fresh_processes(tmp_path: Path) -> None:
    """The README's promise: one seed, byte-identical files. Held in fresh CLI processes that have
    imported torch (where x264's MB-tree once gave different bytes on every run), two at once so
    the cores are busy, and again after a third run."""
    import subprocess
    import sys

    args = [
        "--per-class",
        "4",
        "--frames",
        "16",
        "--seed",
        "3",
        "-o",
        "synth.classes=[move_left,grow,appear,disappear]",
    ]
    code = "import sys, torch; from vidseq.cli import main; sys.argv = ['vidseq', *sys.argv[1:]]; main()"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, "synth", str(tmp_path / name), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b", "c")
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read().decode()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.mp4"))
    assert len(files) == 16
    for rel in files:
        assert md5(tmp_path / "a" / rel) == md5(tmp_path / "b" / rel) == md5(tmp_path / "c" / rel), rel


def test_a_video_depends_only_on_seed_class_index(small: SynthResult, tmp_path: Path) -> None:
    config = SynthConfig(**{**SMALL, "classes": ["shrink"], "videos_per_class": 2})
    res = generate_dataset(tmp_path / "one", config)
    assert md5(res.paths[1]) == md5(small.out_dir / "shrink" / "shrink_0001.mp4")


def test_rerun_into_synth_folder_rewrites_and_drops_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "d"
    config = SynthConfig(classes=["grow", "appear"], videos_per_class=3, num_frames=4, size=32)
    first = generate_dataset(out, config)
    hashes = [md5(p) for p in first.paths]
    labels = (out / "labels.csv").read_text()
    second = generate_dataset(out, config)  # no overwrite needed: synth made this folder
    assert [md5(p) for p in second.paths] == hashes and (out / "labels.csv").read_text() == labels
    generate_dataset(out, config.model_copy(update={"classes": ["grow"], "videos_per_class": 1}))
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert left == ["grow/grow_0000.mp4"]
    assert not (out / "appear").exists()


# ---------------------------------------------------------------- refusals


def test_unknown_class_lists_valid_names(tmp_path: Path) -> None:
    config = SynthConfig(classes=["grow", "jump"])
    with pytest.raises(ConfigError, match="'jump'.*move_left, move_right, grow, shrink"):
        generate_dataset(tmp_path / "d", config)
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match="valid classes are: move_left"):
        render_clip("jump", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="twice"):
        generate_dataset(tmp_path / "d", SynthConfig(classes=["grow", "grow"]))


def test_foreign_non_empty_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    config = SynthConfig(classes=["appear"], videos_per_class=1, num_frames=4, size=32)
    with pytest.raises(DatasetError, match="not written by vidseq synth.*overwrite"):
        generate_dataset(out, config)
    assert isinstance(DatasetError("x"), VidseqError)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    res = generate_dataset(out, config, overwrite=True)
    assert res.paths[0].is_file() and (out / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        generate_dataset(tmp_path / "file", config)


# ---------------------------------------------------------------- the time-reversal property

T, S, N = 16, 64, 50  # frames, size, clips per class


@functools.cache
def _clips(name: str, count: int = N) -> list[synth._Clip]:
    """``count`` independent clips of ``name`` (cached: several tests measure the same ones)."""
    return [synth._render(name, video_rng(7, name, i), num_frames=T, size=S, noise=0.03) for i in range(count)]


def _masks(clip: synth._Clip) -> np.ndarray:
    """Foreground from pixels: a channel 40+ levels from the static background (the object is
    60+ away by construction; pixel noise of std 0.03 * 255 = 7.7 passes 40 about never)."""
    diff = np.abs(clip.frames.astype(np.int16) - clip.background.astype(np.int16))
    return diff.max(axis=-1) > 40


def _centroid_x(clip: synth._Clip) -> np.ndarray:
    m = _masks(clip)
    return (m * np.arange(S)).sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1)


def _area(clip: synth._Clip) -> np.ndarray:
    return _masks(clip).mean(axis=(1, 2))


def _contrast(clip: synth._Clip) -> np.ndarray:
    return np.abs(clip.frames.astype(np.float64) - clip.background).mean(axis=(1, 2, 3))


def _orientation(clip: synth._Clip) -> np.ndarray:
    """Principal-axis angle per frame (image coords, y down: growing = clockwise), unwrapped."""
    angles = []
    for m in _masks(clip):
        ys, xs = np.nonzero(m)
        xs, ys = xs - xs.mean(), ys - ys.mean()
        angles.append(0.5 * np.arctan2(2 * (xs * ys).mean(), (xs**2).mean() - (ys**2).mean()))
    return np.unwrap(np.array(angles), period=np.pi)


def _log_area(clip: synth._Clip) -> np.ndarray:
    return np.log(_area(clip))


# statistic of one frame, and how much it must change from the first frame to the last
ORDER_STAT = {
    "move_right": (_centroid_x, 0.3 * S),
    "grow": (_log_area, np.log(4)),
    "rotate_cw": (_orientation, np.deg2rad(60)),
    "appear": (_contrast, 0.5),
}


@pytest.mark.parametrize(("forward", "backward"), PAIRS)
def test_order_statistic_separates_every_clip(forward: str, backward: str) -> None:
    stat, min_change = ORDER_STAT[forward]
    for sign, name in ((1, forward), (-1, backward)):
        for clip in _clips(name):
            values = sign * stat(clip)
            assert values[-1] - values[0] > min_change, (name, values)
            slope = np.polyfit(np.arange(T), values, 1)[0]
            assert slope > 0, (name, values)


def _order_free(clip: synth._Clip) -> np.ndarray:
    """Statistics that ignore frame order: means over frames, and of the mean frame."""
    mean_frame = clip.frames.mean(axis=0)
    return np.array(
        [
            _centroid_x(clip).mean(),
            _area(clip).mean(),
            _contrast(clip).mean(),
            mean_frame.mean(),
            np.abs(mean_frame - clip.background).mean(),
        ]
    )


@pytest.mark.parametrize(("forward", "backward"), PAIRS)
def test_order_free_statistics_cannot_tell_a_pair_apart(forward: str, backward: str) -> None:
    a = np.stack([_order_free(c) for c in _clips(forward)])
    b = np.stack([_order_free(c) for c in _clips(backward)])
    se = np.sqrt(a.var(axis=0, ddof=1) / N + b.var(axis=0, ddof=1) / N)
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
    assert np.all(z < 4), z  # same distribution: differences are sampling noise
    stat, _ = ORDER_STAT[forward]  # while the order statistic separates them by far
    slopes = [np.array([np.polyfit(np.arange(T), stat(c), 1)[0] for c in _clips(n, 20)]) for n in (forward, backward)]
    assert slopes[0].min() > 0 > slopes[1].max()


@pytest.mark.parametrize(("forward", "backward"), PAIRS)
def test_partner_is_the_exact_time_reversal(forward: str, backward: str) -> None:
    for i in range(3):
        fwd = render_clip(forward, video_rng(3, "x", i), num_frames=T, size=S, noise=0.05)
        bwd = render_clip(backward, video_rng(3, "x", i), num_frames=T, size=S, noise=0.05)
        np.testing.assert_array_equal(bwd, fwd[::-1])
        assert fwd.shape == (T, S, S, 3) and fwd.dtype == np.uint8


def test_object_contrasts_with_the_background() -> None:
    for name in SYNTH_CLASSES:
        for clip in _clips(name, 10):
            if name in ("appear", "disappear"):
                continue  # a fade starts (or ends) invisible on purpose
            assert _area(clip).min() > 0.005, name  # the object is visible in every frame
