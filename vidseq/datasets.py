"""Dataset discovery: folders and annotation files -> labelled video paths and a label map.

Place in the data flow: **where the videos are** -> decode + sample -> features -> ...
Only the filesystem is looked at: no video is opened here (a corrupt file is found, named and
skipped by the decoding and extraction stages).

Formats (``discover`` picks one with ``format="auto"``):
- ``folder``: ``root/<class>/**/<video>``, or ``root/{train,val,test}/<class>/**/<video>``.
- ``csv``: a header ``path,label[,split]`` (``file`` is accepted for ``path``; extra columns
  are ignored); paths relative to the CSV's folder unless ``video_root`` is given.
- ``list``: MMAction2 lines ``path label_index`` (the label is the last token, so paths may
  hold spaces); class names from a ``label_names`` file, one per line in index order.
- ``ucf101``: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.
- ``hmdb51``: ``<action>_test_splitN.txt`` with lines ``video.avi 1|2|0`` (train|test|unused).

Rules: a file that an annotation lists but that does not exist is never dropped silently:
it goes to ``Dataset.missing`` with a ``DatasetWarning`` (``strict=True``: a DatasetError).
Files present but not videos go to ``Dataset.skipped`` with a warning. Hidden files and
folders (``.name``) are ignored. One video listed in two splits, or with two labels, is an
error: that is how train/test leakage starts.

Groups: videos of one source (a UCF101 group ``_gNN_``, one actor, one scene) share a group.
A CSV ``group`` column gives it; else ``group_pattern`` (a regex searched in the file name: its
first capture group, or the whole match); the ucf101 format defaults to ``_g(\\d+)_``. An
explicit split that puts one group on both sides is a DatasetError (``allow_split_leak=True``:
a warning); splits vidseq makes itself keep each group on one side (``vidseq.sequences``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from vidseq.errors import DatasetError

if TYPE_CHECKING:
    from vidseq.config import DataConfig

# Size: above STYLE's ~400 lines because the brief keeps all five formats in this module.
# If it grows, the place to cut is the annotation parsers (``_csv_columns`` and below) into
# a private ``vidseq/_annotations.py``; the public API here would not change.

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".gif", ".mpg", ".mpeg", ".flv", ".f4v",
     ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".ts", ".mts", ".m2ts", ".vob", ".mxf", ".y4m"}
)  # fmt: skip
SPLITS = ("train", "val", "test")
FORMATS = ("folder", "csv", "list", "ucf101", "hmdb51")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
_PATH_COLUMNS = ("path", "file")
_SHOW = 5  # how many paths a warning or summary names
PathLike = str | Path
_EXAMPLE_EXTS = ".mp4, .avi, .mkv, .mov, .webm, .gif, ..."
_LOOKED_FOR = "a folder per class, a .csv, a .txt/.list file, or a UCF101/HMDB51 split folder"
UCF101_GROUP_PATTERN = r"_g(\d+)_"  # v_ApplyEyeMakeup_g08_c01.avi -> group "08"


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
            raise DatasetError(f"{self.source}: labels not in the label map: {unknown[:_SHOW]}")

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
            lines.append(f"  missing: {_describe(self.missing)} listed but not found")
        if self.skipped:
            lines.append(f"  skipped: {_describe(self.skipped)} not videos or outside classes")
        return "\n".join(lines)


class _Listed(NamedTuple):
    """One entry of an annotation file, before the filesystem is asked."""

    where: str  # "file:line"
    path: Path
    label: str
    split: str | None
    group: str | None = None


def discover(
    source: PathLike,
    *,
    format: str = "auto",  # the config's name (data.format)
    video_root: PathLike | None = None,
    split: int = 1,
    label_names: PathLike | None = None,
    strict: bool = False,
    group_pattern: str | None = None,
    allow_split_leak: bool = False,
) -> Dataset:
    """Find the labelled videos of ``source`` in any supported format (see the module doc).

    ``strict=True`` turns listed-but-missing files into a DatasetError instead of a warning.
    ``group_pattern`` (ucf101 default: ``_g(\\d+)_``) and ``allow_split_leak``: see ``with_groups``.
    """
    found = _discover(source, format=format, video_root=video_root, split=split,
                      label_names=label_names, strict=strict)
    if group_pattern is None and found.format == "ucf101":
        group_pattern = UCF101_GROUP_PATTERN
    return with_groups(found, group_pattern=group_pattern, allow_split_leak=allow_split_leak)


def _discover(source: PathLike, *, format: str, video_root: PathLike | None, split: int,
              label_names: PathLike | None, strict: bool) -> Dataset:
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"dataset source {path} does not exist (expected {_LOOKED_FOR})")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; use auto or one of {FORMATS}")
    _check_options(path, fmt, video_root=video_root, label_names=label_names)
    if fmt == "folder":
        return from_folder(path)
    if fmt == "csv":
        return from_csv(path, video_root=video_root, strict=strict)
    if fmt == "list":
        return from_list_file(path, video_root=video_root, label_names=label_names, strict=strict)
    if video_root is None:
        raise DatasetError(
            f"{path}: the {fmt} format needs video_root (data.video_root), the folder that "
            "holds <class>/<video> files"
        )
    loader = from_ucf101 if fmt == "ucf101" else from_hmdb51
    return loader(path, video_root=video_root, split=split, strict=strict)


def with_groups(dataset: Dataset, *, group_pattern: str | None = None,
                allow_split_leak: bool = False) -> Dataset:
    """``dataset`` with each item's group set, checked for groups on two sides of its split.

    An item keeps the group it has (a CSV ``group`` column); else ``group_pattern``, searched in
    the file name, gives its first capture group (or the whole match); no match: no group. A
    group in two splits raises DatasetError naming it and the sides (``allow_split_leak``: warns).
    """
    if group_pattern is not None:
        try:
            regex = re.compile(group_pattern)
        except re.error as exc:
            raise DatasetError(f"group pattern {group_pattern!r} (data.group_pattern) is not a valid "
                               rf"regular expression ({exc}); e.g. _g(\d+)_ for UCF101 names") from None
        items = [item if item.group is not None else dataclasses.replace(item, group=_match(regex, item.path))
                 for item in dataset.items]
        dataset = dataclasses.replace(dataset, items=items)
    _check_leaks(dataset, group_pattern, allow_split_leak)
    return dataset


def _match(regex: re.Pattern, path: Path) -> str | None:
    found = regex.search(path.name)
    if found is None:
        return None
    return found.group(1) if regex.groups and found.group(1) is not None else found.group(0)


def _check_leaks(dataset: Dataset, pattern: str | None, allow: bool) -> None:
    sides: dict[str, dict[str, Path]] = {}  # group -> split -> its first video
    for item in dataset.items:
        if item.group is not None and item.split is not None:
            sides.setdefault(item.group, {}).setdefault(item.split, item.path)
    leaks = [(g, found) for g, found in sorted(sides.items()) if len(found) > 1]
    if leaks:
        shown = "; ".join(f"group {g!r} in " + " and ".join(f"{side} ({found[side].name})" for side in SPLITS
                                                           if side in found) for g, found in leaks[:_SHOW])
        shown += f"; {len(leaks) - _SHOW} more" if len(leaks) > _SHOW else ""
        problem = (f"{dataset.source}: the split puts one source on two sides "
                   f"({f'group pattern {pattern}' if pattern else 'group column'}): {shown}")
        if not allow:
            raise DatasetError(f"{problem}. That leaks scenes from training into evaluation: move each group "
                               "to one split, fix data.group_pattern, or set data.allow_split_leak=true")
        _warn(f"{problem} (accepted: allow_split_leak)")


def discover_videos(source: PathLike, **options: Any) -> Dataset:
    """What extraction and prediction take: any format ``discover`` reads, or unlabelled videos.

    Unlabelled inputs: one video file; a folder with videos at its top level (then searched
    recursively, sub-folders are not classes); a text file listing one video path per line (relative to its folder). Their
    items have ``label=None``. ``options`` go to ``discover`` for labelled formats;
    ``group_pattern`` also gives unlabelled videos their groups.
    """
    path = Path(source)
    found = _unlabelled(path, strict=options.get("strict", False))
    if found is None:
        return discover(path, **options)
    return with_groups(found, group_pattern=options.get("group_pattern"))


def _unlabelled(path: Path, *, strict: bool) -> Dataset | None:
    """One video file, a folder with videos at its top level, a plain list of paths; else None."""
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return Dataset([VideoItem(path, None)], [], [], [], str(path), "file")
    if path.is_dir() and any(_is_video(entry) for entry in _visible(path)):
        files = _walk_files(path)
        videos = [VideoItem(f, None) for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
        if not videos:
            raise DatasetError(f"{path}: no video files found (extensions: {_EXAMPLE_EXTS})")
        skipped = [f for f in files if f.suffix.lower() not in VIDEO_EXTENSIONS]
        return Dataset(videos, [], [], skipped, str(path), "videos")
    if path.is_file() and path.suffix.lower() in (".txt", ".list") and _is_plain_list(path):
        listed = [_Listed(where, _resolve(text, path.parent), "", None) for where, text in _lines(path)]
        found = _finish(listed, [""], source=path, fmt="paths", strict=strict)
        found.items, found.labels = [VideoItem(item.path, None) for item in found.items], []
        return found
    return None


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _is_plain_list(path: Path) -> bool:
    """True when no line ends in an integer label (so it is not an MMAction2-style list)."""
    lines = [text for _, text in _lines(path)]
    return bool(lines) and not any(text.rsplit(None, 1)[-1].lstrip("-").isdigit() for text in lines)


def _resolve(text: str, base: Path) -> Path:
    candidate = Path(text).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def dataset_from_config(config: DataConfig, *, strict: bool | None = None) -> Dataset:
    """``discover`` with the options of a ``DataConfig`` (the ``data`` section).

    ``strict`` overrides ``config.strict`` when given."""
    if config.source is None:
        raise DatasetError(f"data.source is not set: point it at {_LOOKED_FOR}")
    return discover(
        config.source,
        format=config.format,
        video_root=config.video_root,
        split=config.split,
        label_names=config.label_names,
        strict=config.strict if strict is None else strict,
        group_pattern=config.group_pattern,
        allow_split_leak=config.allow_split_leak,
    )


def detect_format(path: PathLike) -> str:
    """The format ``discover(format="auto")`` would use for ``path``."""
    path = Path(path)
    if path.is_dir():
        if (path / "classInd.txt").is_file():
            return "ucf101"
        if any(path.glob("*_test_split[0-9]*.txt")):
            return "hmdb51"
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".txt", ".list", ".lst"):
        return "list"
    raise DatasetError(
        f"cannot tell the dataset format of {path}: expected {_LOOKED_FOR}; "
        f"set format (data.format) to one of {', '.join(FORMATS)}"
    )


def from_folder(root: PathLike) -> Dataset:
    """A folder per class (nested folders count for their class), optionally under split
    folders ``train``/``val``/``test``. Labels are the class folder names, sorted.
    """
    root = _existing(root, "dataset folder", folder=True)
    parts = _split_folders(root) or [(None, root)]
    items: list[VideoItem] = []
    not_videos: list[Path] = []
    loose: list[Path] = []
    classes: set[str] = set()
    for split, base in parts:
        for entry in _visible(base):
            if not entry.is_dir():
                # Only loose *videos* are worth a warning: notes, labels.csv or synth.json
                # beside the class folders are not meant to be part of any class.
                if entry.suffix.lower() in VIDEO_EXTENSIONS:
                    loose.append(entry)
                continue
            classes.add(entry.name)
            for file in _walk_files(entry):
                if file.suffix.lower() in VIDEO_EXTENSIONS:
                    items.append(VideoItem(file, entry.name, split))
                else:
                    not_videos.append(file)
    if not_videos:
        _warn(f"{root}: skipped {_describe(not_videos)}: not videos")
    if loose:
        _warn(f"{root}: skipped {_describe(loose)}: videos outside any class folder")
    if not items:
        raise DatasetError(f"{root}: no videos found (looked for <class>/<video> files)")
    labels = sorted({item.label for item in items if item.label is not None})
    if classes - set(labels):
        _warn(f"{root}: class folders without videos left out: {sorted(classes - set(labels))}")
    return Dataset(items, labels, [], not_videos + loose, str(root), "folder")


def from_csv(
    path: PathLike, *, video_root: PathLike | None = None, strict: bool = False
) -> Dataset:
    """A CSV with header ``path,label[,split][,group]``; labels sorted by name."""
    path = _existing(path, "CSV file")
    base = _existing(video_root, "video_root", folder=True) if video_root else path.parent
    listed: list[_Listed] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        columns = _csv_columns(path, next(reader, None))
        for row in reader:
            if any(cell.strip() for cell in row):
                listed.append(_csv_row(f"{path}:{reader.line_num}", row, columns, base))
    labels = sorted({entry.label for entry in listed})
    return _finish(listed, labels, source=path, fmt="csv", strict=strict)


def from_list_file(
    path: PathLike,
    *,
    video_root: PathLike | None = None,
    label_names: PathLike | None = None,
    strict: bool = False,
) -> Dataset:
    """MMAction2-style ``path label_index`` lines; ``#`` comments and blank lines ignored.

    Class names come from ``label_names`` (one per line, line 1 is class 0), else "0", "1", ...
    """
    path = _existing(path, "list file")
    base = _existing(video_root, "video_root", folder=True) if video_root else path.parent
    names = _read_label_names(label_names) if label_names is not None else None
    listed: list[_Listed] = []
    for where, text in _lines(path):
        rel, index = _path_and_int(text, where, "path label_index")
        if names is not None and index >= len(names):
            raise DatasetError(
                f"{where}: label index {index}, but {label_names} names only {len(names)} "
                f"classes (indices 0-{len(names) - 1})"
            )
        label = names[index] if names is not None else str(index)
        listed.append(_Listed(where, base / rel, label, None))
    if names is None:
        top = max((int(entry.label) for entry in listed), default=-1)
        names = [str(i) for i in range(top + 1)]
    return _finish(listed, names, source=path, fmt="list", strict=strict)


def from_ucf101(
    split_dir: PathLike, *, video_root: PathLike, split: int = 1, strict: bool = False
) -> Dataset:
    """UCF101's official split files; the label map follows ``classInd.txt``.

    Train lines carry a 1-based class index; test lines have none, so the label is the
    video's folder (``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``).
    """
    split_dir = _existing(split_dir, "UCF101 split folder", folder=True)
    root = _existing(video_root, "UCF101 video_root", folder=True)
    labels = _read_class_ind(_existing(split_dir / "classInd.txt", "UCF101 classInd.txt"))
    listed: list[_Listed] = []
    for stem, split_name in (("trainlist", "train"), ("testlist", "test")):
        file = _existing(split_dir / f"{stem}{split:02d}.txt", f"UCF101 split {split} file")
        for where, text in _lines(file):
            rel, label = _ucf_entry(text, where, labels)
            listed.append(_Listed(where, root / rel, label, split_name))
    return _finish(listed, labels, source=split_dir, fmt="ucf101", strict=strict)


def from_hmdb51(
    split_dir: PathLike, *, video_root: PathLike, split: int = 1, strict: bool = False
) -> Dataset:
    """HMDB51's ``<action>_test_split<N>.txt`` files: code 1 train, 2 test, 0 unused (left
    out, not missing). Videos are ``video_root/<action>/<video>``; labels sorted by name.
    """
    split_dir = _existing(split_dir, "HMDB51 split folder", folder=True)
    root = _existing(video_root, "HMDB51 video_root", folder=True)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in split_dir.iterdir() if p.name.endswith(suffix) and p.is_file())
    if not files:
        raise DatasetError(f"{split_dir}: no HMDB51 split files <action>{suffix}")
    listed: list[_Listed] = []
    for file in files:
        action = file.name[: -len(suffix)]
        for where, text in _lines(file):
            video, code = _path_and_int(text, where, "video.avi 0|1|2")
            if code not in (0, 1, 2):
                raise DatasetError(
                    f"{where}: split code {code}; expected 1 train, 2 test, 0 unused"
                )
            if code:
                split_name = "train" if code == 1 else "test"
                listed.append(_Listed(where, root / action / video, action, split_name))
    labels = sorted(file.name[: -len(suffix)] for file in files)
    return _finish(listed, labels, source=split_dir, fmt="hmdb51", strict=strict)


# -- shared steps -------------------------------------------------------------------------


def _finish(
    listed: list[_Listed], labels: list[str], *, source: Path, fmt: str, strict: bool
) -> Dataset:
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
        message = f"{source}: {_describe(missing)} listed but not found"
        if strict:
            raise DatasetError(message)
        _warn(message + " (left out; see Dataset.missing)")
    if skipped:
        _warn(f"{source}: skipped {_describe(skipped)}: listed, but not video files")
    if not items:
        raise DatasetError(
            f"{source}: no videos found ({len(listed)} listed, {len(missing)} of them missing)"
        )
    return Dataset(items, labels, missing, skipped, str(source), fmt)


def _unique(listed: list[_Listed]) -> list[_Listed]:
    """Drop exact repeats (with a warning); a video listed with two labels or splits is an error."""
    first: dict[Path, _Listed] = {}
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
        _warn(f"{len(repeats)} repeated entries ignored ({', '.join(repeats[:_SHOW])})")
    return list(first.values())


def _csv_columns(path: Path, header: list[str] | None) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header or []]
    found = {"label": names.index("label")} if "label" in names else {}
    path_col = next((names.index(c) for c in _PATH_COLUMNS if c in names), None)
    if path_col is None or not found:
        raise DatasetError(
            f"{path}:1: the header must name the columns path,label[,split] "
            f"(found: {','.join(names) or 'an empty file'})"
        )
    found["path"] = path_col
    found["width"] = len(names)
    for optional in ("split", "group"):
        if optional in names:
            found[optional] = names.index(optional)
    return found


def _csv_row(where: str, row: list[str], columns: dict[str, int], base: Path) -> _Listed:
    if len(row) != columns["width"]:
        raise DatasetError(f"{where}: expected {columns['width']} columns, got {len(row)}")
    rel, label = row[columns["path"]].strip(), row[columns["label"]].strip()
    if not rel:
        raise DatasetError(f"{where}: empty path")
    if not label:
        raise DatasetError(f"{where}: empty label for {rel}")
    split = _split_name(row[columns["split"]], where) if "split" in columns else None
    group = (row[columns["group"]].strip() or None) if "group" in columns else None
    return _Listed(where, base / rel, label, split, group)


def _split_name(value: str, where: str) -> str | None:
    value = value.strip().lower()
    if not value:
        return None
    if value not in _SPLIT_NAMES:
        raise DatasetError(f"{where}: unknown split {value!r}; use train, val, test or leave empty")
    return _SPLIT_NAMES[value]


def _path_and_int(text: str, where: str, form: str) -> tuple[str, int]:
    """Split ``text`` into a path (may hold spaces) and a trailing integer >= 0."""
    parts = text.rsplit(None, 1)
    if len(parts) != 2 or not parts[1].isdigit():
        raise DatasetError(f"{where}: expected '{form}', got {text!r}")
    return parts[0], int(parts[1])


def _ucf_entry(text: str, where: str, labels: list[str]) -> tuple[str, str]:
    """A train/test list line -> (relative path, class). Folder names match case-insensitively."""
    parts = text.rsplit(None, 1)
    folder = text.replace("\\", "/").split("/")[0].lower() if "/" in text or "\\" in text else ""
    if len(parts) == 2 and parts[1].isdigit():
        index = int(parts[1])
        if not 1 <= index <= len(labels):
            raise DatasetError(f"{where}: class {index} is not in classInd.txt (1-{len(labels)})")
        if folder and folder != labels[index - 1].lower():
            raise DatasetError(f"{where}: class {index} is {labels[index - 1]!r}, not the folder's")
        return parts[0], labels[index - 1]
    label = next((name for name in labels if name.lower() == folder), None)
    if label is None:
        raise DatasetError(f"{where}: cannot tell the class of {text!r} (no class folder)")
    return text, label


def _read_class_ind(path: Path) -> list[str]:
    """``classInd.txt`` lines ``1 ApplyEyeMakeup`` -> names in index order."""
    by_index: dict[int, str] = {}
    for where, text in _lines(path):
        parts = text.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{where}: expected 'index ClassName', got {text!r}")
        if int(parts[0]) in by_index:
            raise DatasetError(f"{where}: class index {parts[0]} appears twice")
        by_index[int(parts[0])] = parts[1].strip()
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DatasetError(f"{path}: class indices must run 1..{len(by_index)} without gaps")
    return [by_index[i] for i in sorted(by_index)]


def _read_label_names(path: PathLike) -> list[str]:
    """One class name per line, line 1 = class 0. A blank line inside would shift every
    later index by one, so it is an error (trailing blank lines are fine)."""
    path = _existing(path, "label_names file")
    with _open_text(path) as handle:
        names = [line.strip() for line in handle.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, start=1):
        if not name:
            raise DatasetError(f"{path}:{number}: blank line inside the label names")
    if not names:
        raise DatasetError(f"{path}: no label names in the file")
    return names


def _lines(path: Path) -> Iterator[tuple[str, str]]:
    """("file:line", stripped text) of each line that is neither blank nor a # comment."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield f"{path}:{number}", text


def _open_text(path: Path) -> TextIO:
    """Annotation files are UTF-8 (a BOM from spreadsheet tools is fine)."""
    return path.open(newline="", encoding="utf-8-sig")


def _split_folders(root: Path) -> list[tuple[str, Path]] | None:
    """``[(split, folder)]`` when ``root`` holds train/val/test folders, else None."""
    folders = [entry for entry in _visible(root) if entry.is_dir()]
    splits = [(_SPLIT_NAMES[f.name.lower()], f) for f in folders if f.name.lower() in _SPLIT_NAMES]
    if not splits:
        return None
    others = [f.name for f in folders if f.name.lower() not in _SPLIT_NAMES]
    if others:
        raise DatasetError(
            f"{root}: mixes split folders ({', '.join(f.name for _, f in splits)}) with class "
            f"folders ({', '.join(others[:_SHOW])}); put every class under train/val/test or none"
        )
    return splits


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _walk_files(top: Path) -> list[Path]:
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


def _existing(path: PathLike, what: str, *, folder: bool = False) -> Path:
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise DatasetError(f"{what} not found{' (or not a folder)' if folder else ''}: {path}")
    return path


def _check_options(path: Path, fmt: str, *, video_root: object, label_names: object) -> None:
    """Reject options the chosen format would ignore: the source was likely misread."""
    if video_root is not None and fmt == "folder":
        raise DatasetError(f"{path} was read as a folder dataset, which takes no video_root")
    if label_names is not None and fmt != "list":
        raise DatasetError(f"{path} was read as {fmt}; label_names is only for list files")


def _describe(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_SHOW])
    more = f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else ""
    return f"{len(paths)} file{'s' if len(paths) != 1 else ''} ({shown}{more})"


def _warn(message: str) -> None:
    """Warn with the location of the first caller outside this module (the user's line)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)
