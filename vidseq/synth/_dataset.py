"""The synth dataset writer: a ``SynthConfig`` -> class folders of clips, ``labels.csv``, a marker.

Place in the data flow: a *source* of videos, upstream of everything else (``vidseq synth``
writes a folder that ``vidseq.datasets`` reads like a real dataset: a folder per class, plus
``labels.csv`` with splits). The clips come from ``shapes`` or, with ``synth.kind: camera``,
from ``camera`` (camera motion over real photos; ``labels.csv`` then has a ``group`` column, the
source photo), or with ``synth.kind: actors`` from ``actors`` (real people over real backgrounds,
given a person bank; also ``people.csv``: each person's class and box); all kinds are planned,
written and marked here.

All randomness comes from a ``numpy.random.Generator`` seeded from (seed, class name, index), so
a video does not depend on which other classes or counts were asked for. The files are encoded
by ``vidseq.io.write_video``, whose bytes are reproducible: one seed writes byte-identical files
on one machine (another machine's FFmpeg/x264 build may encode the same frames differently).
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseq import atomic
from vidseq.config import SYNTH_CLASSES, SynthConfig
from vidseq.errors import ConfigError, DatasetError
from vidseq.io import encoder_name, write_video
from vidseq.outputs import check_writable
from vidseq.synth import actors, camera, playback
from vidseq.synth.shapes import check_class, render_clip

MARKER = "synth.json"
LABELS = "labels.csv"
PEOPLE = "people.csv"  # synth.kind actors: a row per person per clip
PEOPLE_HEADER = ("path", "label", "time", "x1", "y1", "x2", "y2", "split", "group")
GENERATOR = "vidseq.synth"
VAL_FRACTION = TEST_FRACTION = 0.15  # the rest is train


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_dataset`` wrote: paths (under out_dir), labels, splits, counts per class,
    and (kind camera) the group of each video, its source photo."""

    out_dir: Path
    paths: list[Path]
    labels: list[str]
    splits: list[str]
    counts: dict[str, int]
    encoder: str = "libx264"
    groups: list[str] | None = None
    people: Path | None = None  # kind actors: people.csv


def video_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    """The generator of video ``index`` of ``class_name`` (index 2**32: the class's splits).
    Zigzag maps any int seed one-to-one onto the non-negative ints numpy takes."""
    zigzag = 2 * seed if seed >= 0 else -2 * seed - 1
    return np.random.default_rng([zigzag, zlib.crc32(class_name.encode()), index])


def split_names(count: int, seed: int, class_name: str) -> list[str]:
    """Deterministic train/val/test of ``count`` videos of a class: ~70/15/15, all three from 3."""
    n_val, n_test = int(VAL_FRACTION * count + 0.5), int(TEST_FRACTION * count + 0.5)
    if count >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    names = np.array(["val"] * n_val + ["test"] * n_test + ["train"] * (count - n_val - n_test))
    return [str(s) for s in video_rng(seed, class_name, 2**32).permutation(names)]


# ---------------------------------------------------------------- encoding and files


# ---------------------------------------------------------------- the dataset


def _check_config(config: SynthConfig) -> None:
    for name in config.classes:
        check_class(name)
    if not config.classes:
        raise ConfigError(f"synth.classes is empty; choose from: {', '.join(SYNTH_CLASSES)}")
    if len(set(config.classes)) != len(config.classes):
        raise ConfigError(f"synth.classes lists a class twice: {config.classes}")


def _read_marker(out_dir: Path) -> dict | None:
    try:
        marker = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def _prepare_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a foreign non-empty folder; in a synth folder remove what the last run wrote."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: exists and is not a folder")
    check_writable(out_dir, what="synth's output folder")  # made if new; before anything is removed
    marker = _read_marker(out_dir) if out_dir.is_dir() else None
    if out_dir.is_dir() and any(out_dir.iterdir()) and marker is None and not overwrite:
        raise DatasetError(
            f"{out_dir}: folder is not empty and was not written by vidseq synth; choose an "
            "empty or new folder, or pass overwrite=True (--overwrite) to write into it anyway"
        )
    if marker is not None:
        _remove_listed(out_dir, [*marker.get("files", []), LABELS, PEOPLE])
    out_dir.mkdir(parents=True, exist_ok=True)


def _remove_listed(out_dir: Path, files: list[str]) -> None:
    """Delete what a previous synth run listed (only inside out_dir), then emptied class folders."""
    root = out_dir.resolve()
    for rel in files:
        target = (out_dir / str(rel)).resolve()
        if target.is_relative_to(root) and target.suffix in (".mp4", ".csv"):
            target.unlink(missing_ok=True)
            folder = target.parent
            if folder != root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _marker_text(
    config: SynthConfig, encoder: str, files: list[str], complete: bool, people: list[str] | None = None
) -> str:
    from vidseq import __version__

    body = {"generator": GENERATOR, "version": __version__, "seed": config.seed,
            "config": config.model_dump(mode="json"), "encoder": encoder, "complete": complete,
            "files": files}  # fmt: skip
    if people is not None:  # kind actors: the people of the bank
        body["people"] = people
    return json.dumps(body, indent=2) + "\n"


def _labels_text(rows: list[tuple[str, ...]]) -> str:
    """path,label,split rows, with a 4th column ``group`` where the rows have one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([("path", "label", "split", "group")[: len(rows[0]) if rows else 3], *rows])
    return buffer.getvalue()


@dataclass(frozen=True)
class _Job:
    """One shapes video to write (``camera.CameraClip`` is the camera kind's job)."""

    class_name: str
    index: int
    split: str
    config: SynthConfig

    def render(self) -> np.ndarray:
        c = self.config
        return render_clip(
            self.class_name,
            video_rng(c.seed, self.class_name, self.index),
            num_frames=c.num_frames,
            size=c.size,
            noise=c.noise,
        )


def _plan(
    config: SynthConfig, bank: Sequence[actors.PersonCutout] | None
) -> list[_Job] | list[camera.CameraClip] | list[actors.ActorsClip] | list[playback.PlaybackClip]:
    """The videos to write, class by class (checks the classes, and the sources of kinds camera, actors,
    playback; playback: window by window)."""
    if config.kind == "playback":
        return playback.plan_clips(config, splits=lambda n, name: split_names(n, config.seed, name))
    if config.kind == "actors":
        if bank is None:
            raise ConfigError(
                "synth.kind=actors needs people cut out of videos: run vidseq synth --kind actors --people DIR "
                "(a folder of videos with people) with a detector (-o actors.weights=detector.pt)"
            )
        return actors.plan_clips(
            config,
            bank,
            splits=lambda n, name: split_names(n, config.seed, name),
            rng_of=lambda name, index: video_rng(config.seed, name, index),
        )
    if config.kind == "camera":
        return camera.plan_clips(
            config,
            splits=lambda n, name: split_names(n, config.seed, name),
            rng_of=lambda name, index: video_rng(config.seed, name, index),
        )
    _check_config(config)
    return [
        _Job(name, i, split, config)
        for name in config.classes
        for i, split in enumerate(split_names(config.videos_per_class, config.seed, name))
    ]


def generate_dataset(
    out_dir: str | Path,
    config: SynthConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    bank: Sequence[actors.PersonCutout] | None = None,
) -> SynthResult:
    """Write ``config.videos_per_class`` videos per class to ``out_dir/<class>/<class>_NNNN.mp4``.

    Also ``labels.csv`` (path relative to ``out_dir``, label, split; kind camera: and group) and
    ``synth.json`` (config, seed, encoder, file list). ``config.kind`` picks the generator: moving
    shapes, or camera motion over real photos (``vidseq.synth.camera``; its default classes are
    every camera class). A folder synth wrote is rewritten (identically for the same config);
    another non-empty folder is refused unless ``overwrite``, which writes into it and leaves the
    files synth did not write alone. ``progress(done, total)`` follows each video.

    ``synth.kind: actors`` pastes the people of ``bank`` (``vidseq.features.person_bank``) over
    real backgrounds and also writes ``people.csv`` (path, label, time, x1, y1, x2, y2, split,
    group: a row per person, their box in pixels at a time in seconds where they are fully seen);
    a clip's label in ``labels.csv`` is its largest person's.

    ``synth.kind: playback`` cuts windows of the real videos of ``synth.source`` and writes each
    window once per playback class (``vidseq.synth.playback``); ``group`` is the source video.
    """
    jobs = _plan(config, bank)
    out_dir = Path(out_dir)
    _prepare_dir(out_dir, overwrite)
    encoder = encoder_name()
    rows = [
        (f"{j.class_name}/{j.class_name}_{j.index:04d}.mp4", j.class_name, j.split)
        + ((j.group,) if config.kind != "shapes" else ())
        for j in jobs
    ]
    files = [row[0] for row in rows]
    names = sorted({p.name for p in bank}) if config.kind == "actors" and bank is not None else None
    atomic.write_text(out_dir / MARKER, _marker_text(config, encoder, files, complete=False, people=names))
    for done, (job, rel) in enumerate(zip(jobs, files), start=1):
        (out_dir / job.class_name).mkdir(exist_ok=True)
        write_video(out_dir / rel, job.render(), fps=config.fps, encoder=encoder)
        if progress is not None:
            progress(done, len(jobs))
    atomic.write_text(out_dir / LABELS, _labels_text(rows))
    people = None
    if config.kind == "actors":
        people = out_dir / PEOPLE
        atomic.write_text(people, _people_text(jobs, files, config.fps))  # type: ignore[arg-type]
    atomic.write_text(out_dir / MARKER, _marker_text(config, encoder, files, complete=True, people=names))
    counts = {name: sum(j.class_name == name for j in jobs) for name in dict.fromkeys(j.class_name for j in jobs)}
    groups = [row[3] for row in rows] if config.kind != "shapes" else None
    return SynthResult(
        out_dir, [out_dir / rel for rel in files], [r[1] for r in rows], [r[2] for r in rows], counts, encoder, groups,
        people,
    )  # fmt: skip


def _people_text(jobs: list[actors.ActorsClip], files: list[str], fps: float) -> str:
    """people.csv: a row per person of each clip (``PEOPLE_HEADER``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PEOPLE_HEADER)
    for job, rel in zip(jobs, files):
        writer.writerows(job.people_rows(rel, fps))
    return buffer.getvalue()
