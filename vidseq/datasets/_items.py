"""Dataset items and the steps every format shares: annotation entries -> checked ``VideoItem``s.

Place in the data flow: **where the videos are** -> decode + sample -> features -> ... The
bottom of ``vidseq.datasets``: the parsers (``_formats``), the group checks (``_groups``) and
discovery (``_discovery``) build their ``Dataset`` with what is here. Only the filesystem is
looked at: no video is opened (a corrupt file is found, named and skipped by the decoding and
extraction stages).

Rules: a file that an annotation lists but that does not exist is never dropped silently:
it goes to ``Dataset.missing`` with a ``DatasetWarning`` (``strict=True``: a DatasetError).
Files present but not videos go to ``Dataset.skipped`` with a warning. Hidden files and
folders (``.name``) are ignored. One video listed in two splits, or with two labels, is an
error: that is how train/test leakage starts.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO

from vidseq.errors import DatasetError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".gif", ".mpg", ".mpeg", ".flv", ".f4v",
     ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ts", ".mts", ".m2ts", ".vob", ".mxf", ".y4m"}
)  # fmt: skip
SPLITS = ("train", "val", "test")
SHOW = 5  # how many paths a warning or summary names
PathLike = str | Path
_PACKAGE = __name__.rpartition(".")[0]  # vidseq.datasets


class DatasetWarning(UserWarning):
    """Something in a dataset was left out (missing or non-video files); the data still loads."""


@dataclass(frozen=True)
class VideoItem:
    """One video: where it is, its class name (None if unlabelled), split and group (or None)."""

    path: Path
    label: str | None
    split: str | None = None
    group: str | None = None


@dataclass
class Dataset:
    """Labelled videos plus what was left out. ``labels[i]`` is the name of class ``i``."""

    items: list[VideoItem]
    labels: list[str]
    missing: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    source: str = ""
    format: str = ""

    def __post_init__(self) -> None:
        dupes = sorted(name for name, n in Counter(self.labels).items() if n > 1)
        if dupes:
            raise DatasetError(f"{self.source}: label names repeat in the label map: {dupes}")
        known = set(self.labels)
        unknown = sorted({i.label for i in self.items if i.label is not None} - known)
        if unknown:
            raise DatasetError(f"{self.source}: labels not in the label map: {unknown[:SHOW]}")

    def label_index(self, name: str) -> int:
        """The class index of ``name`` (its position in ``labels``)."""
        try:
            return self.labels.index(name)
        except ValueError:
            shown = ", ".join(self.labels[:10]) + (", ..." if len(self.labels) > 10 else "")
            raise DatasetError(f"label {name!r} is not in the label map ({shown})") from None

    def split(self, name: str | None) -> list[VideoItem]:
        """The items of split ``name`` ("train", "val", "test"; None: items without a split)."""
        if name is not None and name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)} or None")
        return [item for item in self.items if item.split == name]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[VideoItem]:
        return iter(self.items)

    def summary(self) -> str:
        """A few lines for humans: counts per label and split, and what was left out."""
        per_label = Counter(item.label for item in self.items)
        shown = ", ".join(f"{name} ({per_label[name]})" for name in self.labels[:20])
        lines = [
            f"{self.format} dataset {self.source}: {len(self)} videos, {len(self.labels)} labels",
            f"  labels: {shown}{', ...' if len(self.labels) > 20 else ''}",
        ]
        per_split = Counter(item.split for item in self.items)
        if set(per_split) != {None}:
            counts = [f"{s} {per_split[s]}" for s in SPLITS]
            lines.append("  splits: " + ", ".join(counts + [f"none {per_split[None]}"]))
        groups = {item.group for item in self.items if item.group is not None}
        if groups:
            alone = sum(item.group is None for item in self.items)
            lines.append(f"  groups: {len(groups)}" + (f" ({alone} videos without one)" if alone else ""))
        if self.missing:
            lines.append(f"  missing: {describe(self.missing)} listed but not found")
        if self.skipped:
            lines.append(f"  skipped: {describe(self.skipped)} not videos or outside classes")
        return "\n".join(lines)


class Listed(NamedTuple):
    """One entry of an annotation file, before the filesystem is asked."""

    where: str  # "file:line"
    path: Path
    label: str
    split: str | None
    group: str | None = None


# -- shared steps -------------------------------------------------------------------------


def finish(listed: list[Listed], labels: list[str], *, source: Path, fmt: str, strict: bool) -> Dataset:
    """Check annotation entries against the filesystem and build the Dataset."""
    items, missing, skipped = [], [], []
    for entry in _unique(listed):
        if entry.path.is_file() and entry.path.suffix.lower() in VIDEO_EXTENSIONS:
            items.append(VideoItem(entry.path, entry.label, entry.split, entry.group))
        elif entry.path.exists():
            skipped.append(entry.path)
        else:
            missing.append(entry.path)
    if missing:
        message = f"{source}: {describe(missing)} listed but not found"
        if strict:
            raise DatasetError(message)
        warn(message + " (left out; see Dataset.missing)")
    if skipped:
        warn(f"{source}: skipped {describe(skipped)}: listed, but not video files")
    if not items:
        raise DatasetError(f"{source}: no videos found ({len(listed)} listed, {len(missing)} of them missing)")
    return Dataset(items, labels, missing, skipped, str(source), fmt)


def _unique(listed: list[Listed]) -> list[Listed]:
    """Drop exact repeats (with a warning); a video listed with two labels or splits is an error."""
    first: dict[Path, Listed] = {}
    repeats: list[str] = []
    for entry in listed:
        seen = first.setdefault(entry.path, entry)
        if seen is entry:
            continue
        if (seen.label, seen.split) != (entry.label, entry.split):
            raise DatasetError(
                f"{entry.where}: {entry.path} is listed again with label {entry.label!r}, "
                f"split {entry.split!r} (first at {seen.where}: {seen.label!r}, {seen.split!r}); "
                "one video must have one label and one split (else train/test leak)"
            )
        repeats.append(entry.where)
    if repeats:
        warn(f"{len(repeats)} repeated entries ignored ({', '.join(repeats[:SHOW])})")
    return list(first.values())


def read_lines(path: Path) -> Iterator[tuple[str, str]]:
    """("file:line", stripped text) of each line that is neither blank nor a # comment."""
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield f"{path}:{number}", text


def open_text(path: Path) -> TextIO:
    """Annotation files are UTF-8 (a BOM from spreadsheet tools is fine)."""
    return path.open(newline="", encoding="utf-8-sig")


def visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def walk_files(top: Path) -> list[Path]:
    """Every non-hidden file under ``top``, sorted; follows links, visits each folder once."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        subfolders[:] = [] if real in seen else sorted(d for d in subfolders if d[0] != ".")
        if real not in seen:
            seen.add(real)
            found += [Path(folder, name) for name in sorted(files) if name[0] != "."]
    return sorted(found)


def describe(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOW])
    more = f" and {len(paths) - SHOW} more" if len(paths) > SHOW else ""
    return f"{len(paths)} file{'s' if len(paths) != 1 else ''} ({shown}{more})"


def warn(message: str) -> None:
    """Warn with the location of the first caller outside this package (the user's line)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and _in_package(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)


def _in_package(module: str) -> bool:
    """True for ``vidseq.datasets`` and its modules (a warning's frame is never one of them)."""
    return module == _PACKAGE or module.startswith(_PACKAGE + ".")
