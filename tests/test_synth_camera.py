"""Tests of the camera generator (vidseq.synth_camera, written by vidseq.synth): real photos,
motion measured with OpenCV on the written videos, brightness of the fades, splits by source photo."""

from __future__ import annotations

import csv
import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseq.config import SYNTH_CLASSES, SynthConfig, load_config
from vidseq.errors import ConfigError, DatasetError
from vidseq.io import write_video
from vidseq.synth import SynthResult, generate_dataset, video_rng
from vidseq.synth import camera as synth_camera
from vidseq.synth.camera import CAMERA_CLASSES, CAMERA_DEFAULT_CLASSES, find_sources, render_camera_clip

T, S = 10, 64
SMALL = {"kind": "camera", "videos_per_class": 3, "num_frames": T, "size": S, "seed": 0}
# class -> (index of the motion statistic, its sign): tx, ty (px/frame), log scale, angle (rad)
MOTION = {
    "pan_right": (0, -1),
    "pan_left": (0, 1),
    "pan_down": (1, -1),
    "pan_up": (1, 1),
    "zoom_in": (2, 1),
    "zoom_out": (2, -1),
    "rotate_cw": (3, 1),
    "rotate_ccw": (3, -1),
}
PAIRS = [("pan_right", "pan_left"), ("pan_down", "pan_up"), ("zoom_in", "zoom_out"), ("rotate_cw", "rotate_ccw")]
FADES = ("fade_in", "fade_out")  # asked for by name: not in the default classes


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """Every camera class, three videos each, 10 frames of 64x64, over scikit-image's photos."""
    return generate_dataset(tmp_path_factory.mktemp("camera") / "data", SynthConfig(**SMALL))


def read_labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def decode(path: Path) -> np.ndarray:
    from vidseq.io import read_frames

    return np.asarray(read_frames(path, list(range(T))))


def motion(frames: np.ndarray) -> np.ndarray:
    """Mean over consecutive frames of a similarity fitted to Farneback's dense flow (centre
    origin, y down): x and y shift (px), log scale, angle (rad; positive is clockwise on screen)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]] - (frames.shape[1] - 1) / 2
    x, y = xs.ravel(), ys.ravel()
    one, zero = np.ones_like(x), np.zeros_like(x)
    design = np.vstack([np.c_[x, -y, one, zero], np.c_[y, x, zero, one]])  # u = a x - b y + tx ...
    fits = []
    for a, b in itertools.pairwise(grey):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        k, r, tx, ty = np.linalg.lstsq(design, np.r_[flow[..., 0].ravel(), flow[..., 1].ravel()], rcond=None)[0]
        fits.append((tx, ty, np.log1p(k), np.arctan2(r, 1 + k)))
    return np.mean(fits, axis=0)


# ---------------------------------------------------------------- the folder it writes


def test_every_camera_motion_by_default_with_a_group_column(camera: SynthResult) -> None:
    assert SynthConfig(kind="camera").classes == list(SYNTH_CLASSES)  # the shapes default ...
    assert list(camera.counts) == list(CAMERA_DEFAULT_CLASSES)  # ... means every camera motion
    assert list(CAMERA_DEFAULT_CLASSES) == [name for pair in PAIRS for name in pair]
    assert list(CAMERA_CLASSES) == [*CAMERA_DEFAULT_CLASSES, *FADES]
    rows = read_labels(camera.out_dir)
    assert list(rows[0]) == ["path", "label", "split", "group"]
    assert [r["group"] for r in rows] == camera.groups
    assert {r["group"] for r in rows} <= set(synth_camera.SKIMAGE_PHOTOS)
    for name in CAMERA_DEFAULT_CLASSES:
        assert sorted(r["split"] for r in rows if r["label"] == name) == ["test", "train", "val"]
        assert sorted(p.name for p in (camera.out_dir / name).glob("*.mp4")) == [
            f"{name}_{i:04d}.mp4" for i in range(3)
        ]


def test_no_source_photo_is_in_two_splits(camera: SynthResult) -> None:
    sides: dict[str, set[str]] = {}
    for row in read_labels(camera.out_dir):
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(found) == 1 for found in sides.values()), sides
    assert {s for found in sides.values() for s in found} == {"train", "val", "test"}


def test_datasets_reads_groups_and_finds_no_leak(camera: SynthResult) -> None:
    from vidseq.datasets import discover

    found = discover(camera.out_dir / "labels.csv")
    assert [item.group for item in found] == camera.groups
    assert f"groups: {len(set(camera.groups))}" in found.summary()


def test_videos_decode_with_vidseq_io(camera: SynthResult) -> None:
    from vidseq.io import probe

    info = probe(camera.paths[0])
    assert (info.num_frames, info.width, info.height) == (T, S, S)
    assert info.fps == pytest.approx(25.0)
    frames = decode(camera.paths[0])
    assert frames.shape == (T, S, S, 3) and frames.dtype == np.uint8


def test_clips_look_like_photos_not_flat_fields(camera: SynthResult) -> None:
    stds = []
    for path in camera.paths:
        frames = decode(path).astype(np.float64)
        per_frame = frames.std(axis=(1, 2, 3))
        assert per_frame.min() > 10, path  # a real picture in every frame
        edges = np.abs(np.diff(frames, axis=2)).mean()
        assert edges > 2, path  # detail, not a smooth gradient
        stds.append(per_frame.mean())
    assert np.mean(stds) > 30


# ---------------------------------------------------------------- motion and time reversal


@pytest.mark.parametrize(("forward", "backward"), PAIRS)
def test_pair_moves_in_opposite_directions(camera: SynthResult, forward: str, backward: str) -> None:
    measured = {
        name: [motion(decode(p)) for p, label in zip(camera.paths, camera.labels) if label == name]
        for name in (forward, backward)
    }
    for name in (forward, backward):
        index, sign = MOTION[name]
        for stats in measured[name]:
            assert sign * stats[index] > 0, (name, stats)
    index, _ = MOTION[forward]
    fwd, bwd = (np.median([m[index] for m in measured[n]]) for n in (forward, backward))
    assert fwd * bwd < 0 and 0.5 < abs(fwd / bwd) < 2, (fwd, bwd)  # opposite, alike in size


@pytest.mark.parametrize(("forward", "backward"), [*PAIRS, FADES])
def test_partner_is_the_exact_time_reversal(forward: str, backward: str) -> None:
    photo = find_sources(None)[0].frame(np.random.default_rng(0))
    for i in range(2):
        fwd = render_camera_clip(forward, photo, video_rng(3, "x", i), num_frames=T, size=S)
        bwd = render_camera_clip(backward, photo, video_rng(3, "x", i), num_frames=T, size=S)
        np.testing.assert_array_equal(bwd, fwd[::-1])
        assert fwd.shape == (T, S, S, 3) and fwd.dtype == np.uint8


def test_fades_ramp_the_brightness_of_a_still_picture(tmp_path: Path) -> None:
    config = SynthConfig(**{**SMALL, "classes": list(FADES), "videos_per_class": 2})
    result = generate_dataset(tmp_path / "fades", config)
    assert list(result.counts) == list(FADES)
    for path, label in zip(result.paths, result.labels):
        frames = decode(path).astype(np.float64)
        brightness = frames.mean(axis=(1, 2, 3))
        if label == "fade_out":
            frames, brightness = frames[::-1], brightness[::-1]  # now from dark to full, as fade_in
        assert brightness[0] < 0.2 * brightness[-1], (path, brightness)  # from dark ...
        assert np.all(np.diff(brightness) > -1), (path, brightness)  # ... up, never down (codec and noise: 1)
        # no camera motion where the picture is seen (pans here measure 2-5 px a frame, zooms 0.06-0.08 log scale)
        measured = motion(frames[brightness > 0.3 * brightness[-1]].astype(np.uint8))
        assert np.abs(measured[:2]).max() < 0.2 and np.abs(measured[2:]).max() < 0.01, (path, measured)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_files_other_seed_different(camera: SynthResult, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", SynthConfig(**SMALL))
    assert [md5(p) for p in again.paths] == [md5(p) for p in camera.paths]
    assert (again.out_dir / "labels.csv").read_text() == (camera.out_dir / "labels.csv").read_text()
    other = generate_dataset(tmp_path / "other", SynthConfig(**{**SMALL, "seed": 1, "classes": ["zoom_in"]}))
    assert md5(other.paths[0]) != md5(camera.out_dir / "zoom_in" / "zoom_in_0000.mp4")


# ---------------------------------------------------------------- user images as sources


def _photo_folder(root: Path, names: tuple[str, ...] = ("astronaut", "coffee", "chelsea")) -> Path:
    import skimage.data

    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(root / f"{name}.png"), getattr(skimage.data, name)()[..., ::-1])
    return root


def test_a_folder_of_user_images_and_videos_is_the_source(tmp_path: Path) -> None:
    folder = _photo_folder(tmp_path / "photos")
    (folder / "notes.txt").write_text("not an image")  # other files are not sources
    scene = render_camera_clip(
        "pan_right",
        cv2.imread(str(folder / "coffee.png"))[..., ::-1],
        np.random.default_rng(1),
        num_frames=6,
        size=96,
        noise=0,
    )
    (folder / "clips").mkdir()
    write_video(folder / "clips" / "walk.mp4", scene, fps=25)  # a video: its frames are filmed
    config = SynthConfig(
        kind="camera",
        images=str(folder),
        classes=["zoom_in", "zoom_out"],
        videos_per_class=8,
        num_frames=6,
        size=48,
        seed=2,
    )
    result = generate_dataset(tmp_path / "out", config)
    groups = {"astronaut.png", "chelsea.png", "clips/walk.mp4", "coffee.png"}
    assert set(result.groups) <= groups and len(set(result.groups)) >= 3
    assert [s.group for s in find_sources(folder)] == sorted(groups)
    for path in result.paths:
        assert decode(path)[:6].std() > 10
    sides = {(g, s) for g, s in zip(result.groups, result.splits)}
    assert len({g for g, _ in sides}) == len(sides)  # one side per source


def test_bad_sources_are_errors_that_say_the_fix(tmp_path: Path) -> None:
    few = _photo_folder(tmp_path / "few", ("astronaut", "coffee"))
    with pytest.raises(ConfigError, match="2 images or videos found .* at least 3"):
        generate_dataset(tmp_path / "a", SynthConfig(kind="camera", images=str(few)))
    with pytest.raises(ConfigError, match="not a folder"):
        generate_dataset(tmp_path / "a", SynthConfig(kind="camera", images=str(tmp_path / "nope")))
    assert not (tmp_path / "a").exists(), "nothing is written before the sources check out"
    (few / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png: OpenCV cannot read this image"):
        for name in CAMERA_CLASSES:  # some clip films the broken file
            generate_dataset(
                tmp_path / "b",
                SynthConfig(kind="camera", images=str(few), classes=[name], videos_per_class=6, num_frames=2, size=32),
            )


# ---------------------------------------------------------------- class names and kinds


def test_class_names_of_the_wrong_kind_list_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'grow' .*set synth.kind=shapes.*pan_right, pan_left"):
        generate_dataset(tmp_path / "d", SynthConfig(kind="camera", classes=["pan_left", "grow"]))
    with pytest.raises(ConfigError, match="'pan_left'; valid classes are: move_left.*set synth.kind=camera"):
        generate_dataset(tmp_path / "d", SynthConfig(classes=["pan_left"]))
    with pytest.raises(ConfigError, match="twice"):
        generate_dataset(tmp_path / "d", SynthConfig(kind="camera", classes=["zoom_in", "zoom_in"]))
    with pytest.raises(ConfigError, match="empty; choose from: pan_right"):
        generate_dataset(tmp_path / "d", SynthConfig(kind="camera", classes=[]))
    with pytest.raises(ConfigError, match="valid classes are: pan_right"):
        render_camera_clip("jump", np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match="synth.kind.*'shapes', 'camera', 'actors'"):
        load_config(overrides=["synth.kind=dolly"])
