"""Playback manipulations of real videos: a folder of clips -> windows played forward, reversed, faster, slower, frozen.

Place in the data flow: a *source* of videos, like ``vidseq.synth.camera`` (the dataset writer,
``vidseq.synth._dataset``, writes these clips: ``generate_dataset`` with ``synth.kind: playback``
plans them here and writes them with the other kinds' files, marker and ``labels.csv``). This
module cuts and resamples only; it reads the source frames with ``vidseq.io``.

Each video of ``synth.source`` gives ``synth.windows_per_source`` windows, evenly spaced over it;
every window is written once per class, so the scene says nothing about the class: only how the
frames follow each other does. A clip has ``synth.num_frames`` frames at ``synth.fps`` (any source
frame rate is resampled to it by taking the frame shown at each output time) and lasts
``num_frames / fps`` seconds whatever its class:

- ``forward``: the window as filmed; ``reversed``: the same frames in reverse order.
- ``faster``: twice the source time around the window's centre (2x); ``slower``: half of it (0.5x,
  source frames repeat); ``frozen``: the centre frame, held.

The source span a window needs is the longest class's (2x the clip's duration with ``faster``);
a video shorter than that is left out with a warning. Frames keep their aspect: ``synth.size``
is the shorter side (the longer is rounded to an even number for H.264). No noise is added.
Every clip's group is its source video (its path under ``synth.source``) and splits are made by
group (``plan_clips``): a video seen in training never appears in val or test.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidseq.config import SYNTH_CLASSES, SynthConfig
from vidseq.errors import ConfigError, VidseqError

# class -> source seconds per second of clip (0: one frame held)
PLAYBACK_SPEEDS: dict[str, float] = {"forward": 1.0, "reversed": 1.0, "faster": 2.0, "slower": 0.5, "frozen": 0.0}
PLAYBACK_CLASSES: tuple[str, ...] = tuple(PLAYBACK_SPEEDS)
DEFAULT_CLASSES: tuple[str, ...] = ("forward", "reversed")
MIN_SOURCES = 3  # one video each for train, val and test at least


@dataclass(frozen=True)
class SourceVideo:
    """One real video to cut windows from; ``group`` is its path under the source folder."""

    group: str
    path: Path
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


class _WindowFrames:
    """The decoded frames of the last window read: the clips of one window are planned one after
    another, so the window is decoded once for all its classes."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._frames: np.ndarray | None = None

    def read(self, path: Path, indices: tuple[int, ...], hw: tuple[int, int]) -> np.ndarray:
        key = (path, indices, hw)
        if key != self._key:
            from vidseq.io import read_frames

            self._frames, self._key = np.asarray(read_frames(path, list(indices), size=hw)), key
        assert self._frames is not None
        return self._frames


@dataclass(frozen=True)
class PlaybackClip:
    """One planned clip: what ``vidseq.synth`` writes to ``<class_name>/<class_name>_<index>.mp4``.

    ``indices`` are the source frames of the clip in playback order; ``window`` the sorted source
    frames of its window (every class's), decoded once through ``cache``.
    """

    class_name: str
    index: int
    split: str
    source: SourceVideo
    indices: tuple[int, ...]
    window: tuple[int, ...]
    hw: tuple[int, int]
    cache: _WindowFrames = field(repr=False, compare=False)

    @property
    def group(self) -> str:
        return self.source.group

    def render(self) -> np.ndarray:
        """The clip, ``(num_frames, height, width, 3)`` uint8 RGB."""
        frames = self.cache.read(self.source.path, self.window, self.hw)
        return np.ascontiguousarray(frames[np.searchsorted(self.window, self.indices)])


# ---------------------------------------------------------------- classes, sources and windows


def playback_classes(classes: list[str] | tuple[str, ...]) -> list[str]:
    """The classes to write: ``synth.classes``, or forward and reversed where it is the shapes default."""
    if list(classes) == list(SYNTH_CLASSES):
        return list(DEFAULT_CLASSES)
    for name in classes:
        if name not in PLAYBACK_SPEEDS:
            raise ConfigError(
                f"unknown playback class {name!r}; with synth.kind=playback the valid classes are: "
                f"{', '.join(PLAYBACK_CLASSES)}"
            )
    if not classes:
        raise ConfigError(f"synth.classes is empty; choose from: {', '.join(PLAYBACK_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"synth.classes lists a class twice: {list(classes)}")
    return list(classes)


def find_videos(source: str | Path | None) -> list[SourceVideo]:
    """The videos under ``source`` (recursively, hidden ones left out), probed, sorted by group.
    A video that cannot be read is left out with a warning."""
    if source is None:
        raise ConfigError("synth.kind=playback needs --source DIR (synth.source): a folder of real videos")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ConfigError(f"synth.source: {root} is not a folder; point it at a folder of videos")
    from vidseq.datasets import VIDEO_EXTENSIONS
    from vidseq.io import probe

    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in VIDEO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ConfigError(f"synth.source: no videos in {root} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    videos, unreadable = [], []
    for path in files:
        try:
            info = probe(path)
        except VidseqError as exc:
            unreadable.append(f"{path.name} ({getattr(exc, 'reason', exc)})")
            continue
        group = path.relative_to(root).as_posix()
        videos.append(SourceVideo(group, path, info.num_frames, info.fps, info.height, info.width))
    if unreadable:
        _warn(f"synth.source: left out {len(unreadable)} unreadable video(s): {'; '.join(unreadable)}")
    return videos


def _warn(message: str) -> None:
    """A DatasetWarning pointing at the first caller outside ``vidseq.synth`` (the user's line)."""
    from vidseq.datasets import DatasetWarning

    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("vidseq.synth"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)


def window_seconds(config: SynthConfig, classes: list[str]) -> float:
    """Source seconds one window needs: the clip's duration times the fastest class's speed (>= 1)."""
    return config.num_frames / config.fps * max(1.0, *(PLAYBACK_SPEEDS[c] for c in classes))


def usable_videos(videos: list[SourceVideo], span: float) -> list[SourceVideo]:
    """The videos at least ``span`` seconds long (the others are left out with a warning); a
    ConfigError where fewer than ``MIN_SOURCES`` are."""
    usable = [v for v in videos if v.seconds >= span]
    short = [f"{v.group} ({v.seconds:.2f} s)" for v in videos if v.seconds < span]
    if len(usable) < MIN_SOURCES:
        raise ConfigError(
            f"synth.source: {len(usable)} of {len(videos)} videos are long enough for one window of {span:.2f} s "
            f"(num_frames / fps, x2 with the class faster); playback needs {MIN_SOURCES} (one per split): "
            "lower synth.num_frames or raise synth.fps, or add longer videos"
        )
    if short:
        _warn(f"synth.source: left out {len(short)} video(s) shorter than a window of {span:.2f} s: {', '.join(short)}")
    return usable


def source_indices(
    speed: float, centre: float, *, num_frames: int, out_fps: float, src_fps: float, src_frames: int
) -> np.ndarray:
    """The source frame shown at each of ``num_frames`` output times, the clip centred on ``centre``
    (seconds) and played at ``speed`` (0: the centre frame held)."""
    offsets = (np.arange(num_frames) + 0.5 - num_frames / 2) * speed / out_fps
    return np.clip(np.floor((centre + offsets) * src_fps), 0, src_frames - 1).astype(np.int64)


def output_hw(video: SourceVideo, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side ``size`` and the aspect kept (longer side even)."""
    short, long = sorted((video.height, video.width))
    other = max(2, 2 * round(long * size / short / 2))
    return (size, other) if video.height <= video.width else (other, size)


# ---------------------------------------------------------------- the plan


def plan_clips(config: SynthConfig, *, splits: Callable[[int, str], list[str]]) -> list[PlaybackClip]:
    """Every clip of a playback dataset, window by window (each window's classes one after another).

    ``splits(count, name)`` gives the train/val/test of ``count`` things (``vidseq.synth`` passes
    its ``split_names``); the videos are split by ``splits(n, "<sources>")``, and every clip takes
    its video's split, so no video is on two sides. Windows do not depend on the seed.
    """
    classes = playback_classes(config.classes)
    span = window_seconds(config, classes)
    videos = usable_videos(find_videos(config.source), span)
    side = dict(zip((v.group for v in videos), splits(len(videos), "<sources>")))
    counters = dict.fromkeys(classes, 0)
    clips, cache = [], _WindowFrames()  # one cache: it holds the last window only
    for video in videos:
        hw = output_hw(video, config.size)
        for centre in _centres(video.seconds, span, config.windows_per_source):
            order = window_indices(classes, centre, video, config)
            window = tuple(sorted(set().union(*order.values())))  # decoded once for all its classes
            split = side[video.group]
            for name in classes:
                clips.append(PlaybackClip(name, counters[name], split, video, order[name], window, hw, cache))
                counters[name] += 1
    return clips


def window_indices(
    classes: list[str], centre: float, video: SourceVideo, config: SynthConfig
) -> dict[str, tuple[int, ...]]:
    """Each class's source frames, in playback order, for the window of ``video`` centred on ``centre``."""
    order = {}
    for name in classes:
        indices = source_indices(
            PLAYBACK_SPEEDS[name], centre, num_frames=config.num_frames, out_fps=config.fps, src_fps=video.fps,
            src_frames=video.num_frames,
        )  # fmt: skip
        order[name] = tuple(int(i) for i in (indices[::-1] if name == "reversed" else indices))
    return order


def _centres(seconds: float, span: float, count: int) -> list[float]:
    """``count`` window centres evenly spaced so that each window of ``span`` fits in the video."""
    if count == 1:
        return [seconds / 2]
    return [float(c) for c in np.linspace(span / 2, seconds - span / 2, count)]
