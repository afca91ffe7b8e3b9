"""Tests of the playback generator (vidseq.synth.playback, written by vidseq.synth): windows of the
shared real clips played forward, reversed, faster, slower and frozen, split by source clip."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import SynthConfig
from vidseq.datasets import discover
from vidseq.errors import ConfigError
from vidseq.io import read_frames
from vidseq.synth import PLAYBACK_CLASSES, SynthResult, generate_dataset
from vidseq.synth.playback import PLAYBACK_SPEEDS, output_hw, source_indices

CLIPS = Path("/work/shared/data/action-clips")
# four short real clips (two containers and codecs, a GIF, 25-30 fps): 3.2-10.3 s each
SOURCES = (
    "k400_arm_wrestling__mmaction2_demo.mp4",
    "k400_flipping_pancake__decord.mkv",
    "ucf101_ApplyEyeMakeup__mmaction2_test.avi",
    "ucf101_CricketShot__v_CricketShot_g04_c01_rgb.gif",
)
T, FPS, S, WINDOWS = 8, 8.0, 64, 2  # 1 s clips (faster: 2 s of source), 64 px short side
pytestmark = pytest.mark.skipif(not CLIPS.is_dir(), reason=f"the shared clips are not here: {CLIPS}")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to four of the shared clips (read in place, never copied)."""
    folder = tmp_path_factory.mktemp("sources")
    for name in SOURCES:
        (folder / name).symlink_to(CLIPS / name)
    return folder


@pytest.fixture(scope="module")
def playback(source: Path, tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    config = SynthConfig(
        kind="playback", source=str(source), classes=list(PLAYBACK_CLASSES), num_frames=T, fps=FPS, size=S,
        windows_per_source=WINDOWS,
    )  # fmt: skip
    return generate_dataset(tmp_path_factory.mktemp("playback") / "data", config)


def rows(result: SynthResult) -> list[dict[str, str]]:
    with open(result.out_dir / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def decode(path: Path) -> np.ndarray:
    return np.asarray(read_frames(path, list(range(T)))).astype(np.float32)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_every_window_is_written_once_per_class(playback: SynthResult) -> None:
    assert all(p.is_file() for p in playback.paths)
    assert playback.counts == dict.fromkeys(PLAYBACK_CLASSES, len(SOURCES) * WINDOWS)
    table = rows(playback)
    assert len(table) == len(playback.paths) == len(SOURCES) * WINDOWS * len(PLAYBACK_CLASSES)
    # the same windows under each class: every class sees every source equally often
    per_class = {name: Counter(r["group"] for r in table if r["label"] == name) for name in PLAYBACK_CLASSES}
    assert all(c == dict.fromkeys(SOURCES, WINDOWS) for c in per_class.values())
    frames = read_frames(playback.paths[0], [0])
    assert frames.shape[1:] == (S, 84, 3)  # arm wrestling is 340x256: shorter side 64, aspect kept, even width


def test_reversed_is_forward_in_reverse_and_forward_is_the_source(playback: SynthResult, source: Path) -> None:
    forward, reverse = (playback.out_dir / f"{c}/{c}_0000.mp4" for c in ("forward", "reversed"))
    a, b = decode(forward), decode(reverse)[::-1]
    # the same frames up to the codec (H.264 at 64 px: a mean abs difference of 3-4 per frame, measured),
    # each nearest to its own partner: consecutive source frames differ by 11-24 (arm wrestling moves)
    assert mad(a, b) < 5
    assert [int(np.argmin([mad(a[j], b[k]) for j in range(T)])) for k in range(T)] == list(range(T))
    # forward_0000 is the first window of the first source (sorted): the source's frames at those times
    from vidseq.io import probe

    info = probe(source / SOURCES[0])
    centre = 1.0  # with faster a window spans 2 x T / FPS = 2 s of source; the first is centred at 1 s
    idx = source_indices(1.0, centre, num_frames=T, out_fps=FPS, src_fps=info.fps, src_frames=info.num_frames)
    assert idx.tolist() == sorted(idx.tolist()) and idx[-1] - idx[0] > T  # ~28 fps source at 8 fps
    raw = read_frames(source / SOURCES[0], idx.tolist(), size=(S, 84))
    assert mad(a, raw) < 5


def test_speeds_change_how_much_happens(playback: SynthResult) -> None:
    """Mean change between consecutive frames: frozen ~0 < slower < forward < faster (over all windows)."""
    table = rows(playback)
    change = {}
    for name in PLAYBACK_CLASSES:
        clips = [decode(playback.out_dir / r["path"]) for r in table if r["label"] == name]
        change[name] = float(np.mean([np.abs(np.diff(c, axis=0)).mean() for c in clips]))
    assert change["frozen"] < 0.5
    assert change["frozen"] < change["slower"] < change["forward"] < change["faster"]
    assert change["reversed"] == pytest.approx(change["forward"], rel=0.05)
    assert PLAYBACK_SPEEDS["faster"] == 2 * PLAYBACK_SPEEDS["forward"] == 4 * PLAYBACK_SPEEDS["slower"]


def test_splits_are_by_source_and_discovery_reads_them(playback: SynthResult) -> None:
    table = rows(playback)
    sides = {g: {r["split"] for r in table if r["group"] == g} for g in SOURCES}
    assert all(len(s) == 1 for s in sides.values()), sides  # no source in two splits
    assert {next(iter(s)) for s in sides.values()} == {"train", "val", "test"}
    dataset = discover(playback.out_dir / "labels.csv")
    assert dataset.labels == sorted(PLAYBACK_CLASSES)
    assert len(dataset.items) == len(table)
    assert {item.group for item in dataset.items} == set(SOURCES)
    assert all(sides[item.group] == {item.split} for item in dataset.items)


def test_output_keeps_the_aspect_with_an_even_longer_side() -> None:
    from vidseq.synth.playback import SourceVideo

    assert output_hw(SourceVideo("a", Path("a"), 10, 25.0, 1080, 1920), 256) == (256, 456)
    assert output_hw(SourceVideo("b", Path("b"), 10, 25.0, 496, 518), 256) == (256, 268)
    assert output_hw(SourceVideo("c", Path("c"), 10, 25.0, 640, 480), 100) == (134, 100)


def test_errors_are_one_clear_line(source: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    base = {"kind": "playback", "num_frames": T, "fps": FPS, "size": S}
    with pytest.raises(ConfigError, match="no videos in"):
        generate_dataset(tmp_path / "a", SynthConfig(**base, source=str(empty)))
    with pytest.raises(ConfigError, match="needs --source DIR"):
        generate_dataset(tmp_path / "b", SynthConfig(**base))
    # 10 s windows: none of the four clips (3.2-10.3 s, faster doubles it) is long enough
    with pytest.raises(ConfigError, match=r"0 of 4 videos are long enough for one window of 20.00 s"):
        generate_dataset(tmp_path / "c", SynthConfig(**{**base, "num_frames": 80}, source=str(source),
                                                     classes=["forward", "faster"]))  # fmt: skip
    with pytest.raises(ConfigError, match="unknown playback class 'move_left'"):
        generate_dataset(tmp_path / "d", SynthConfig(**base, source=str(source), classes=["forward", "move_left"]))
