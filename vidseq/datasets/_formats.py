"""Dataset formats: a folder or an annotation file -> a ``Dataset`` of labelled video paths.

Place in the data flow: **where the videos are** -> decode + sample -> features -> ... One
reader per format (``discover`` picks one with ``format="auto"``, see ``detect_format``):
- ``folder``: ``root/<class>/**/<video>``, or ``root/{train,val,test}/<class>/**/<video>``.
- ``csv``: a header ``path,label[,split]`` (``file`` is accepted for ``path``; extra columns
  are ignored); paths relative to the CSV's folder unless ``video_root`` is given.
- ``list``: MMAction2 lines ``path label_index`` (the label is the last token, so paths may
  hold spaces); class names from a ``label_names`` file, one per line in index order.
- ``ucf101``: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.
- ``hmdb51``: ``<action>_test_splitN.txt`` with lines ``video.avi 1|2|0`` (train|test|unused).
Entries are checked against the filesystem by ``_items.finish`` (missing and non-video files).
"""

from __future__ import annotations

import csv
from pathlib import Path

from vidseq.datasets._items import (
    SHOW,
    VIDEO_EXTENSIONS,
    Dataset,
    Listed,
    PathLike,
    VideoItem,
    describe,
    finish,
    open_text,
    read_lines,
    visible,
    walk_files,
    warn,
)
from vidseq.errors import DatasetError

FORMATS = ("folder", "csv", "list", "ucf101", "hmdb51")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
_PATH_COLUMNS = ("path", "file")
LOOKED_FOR = "a folder per class, a .csv, a .txt/.list file, or a UCF101/HMDB51 split folder"


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
        f"cannot tell the dataset format of {path}: expected {LOOKED_FOR}; "
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
        for entry in visible(base):
            if not entry.is_dir():
                # Only loose *videos* are worth a warning: notes, labels.csv or synth.json
                # beside the class folders are not meant to be part of any class.
                if entry.suffix.lower() in VIDEO_EXTENSIONS:
                    loose.append(entry)
                continue
            classes.add(entry.name)
            for file in walk_files(entry):
                if file.suffix.lower() in VIDEO_EXTENSIONS:
                    items.append(VideoItem(file, entry.name, split))
                else:
                    not_videos.append(file)
    if not_videos:
        warn(f"{root}: skipped {describe(not_videos)}: not videos")
    if loose:
        warn(f"{root}: skipped {describe(loose)}: videos outside any class folder")
    if not items:
        raise DatasetError(f"{root}: no videos found (looked for <class>/<video> files)")
    labels = sorted({item.label for item in items if item.label is not None})
    if classes - set(labels):
        warn(f"{root}: class folders without videos left out: {sorted(classes - set(labels))}")
    return Dataset(items, labels, [], not_videos + loose, str(root), "folder")


def from_csv(path: PathLike, *, video_root: PathLike | None = None, strict: bool = False) -> Dataset:
    """A CSV with header ``path,label[,split][,group]``; labels sorted by name."""
    path = _existing(path, "CSV file")
    base = _existing(video_root, "video_root", folder=True) if video_root else path.parent
    listed: list[Listed] = []
    with open_text(path) as handle:
        reader = csv.reader(handle)
        columns = _csv_columns(path, next(reader, None))
        for row in reader:
            if any(cell.strip() for cell in row):
                listed.append(_csv_row(f"{path}:{reader.line_num}", row, columns, base))
    labels = sorted({entry.label for entry in listed})
    return finish(listed, labels, source=path, fmt="csv", strict=strict)


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
    listed: list[Listed] = []
    for where, text in read_lines(path):
        rel, index = _path_and_int(text, where, "path label_index")
        if names is not None and index >= len(names):
            raise DatasetError(
                f"{where}: label index {index}, but {label_names} names only {len(names)} "
                f"classes (indices 0-{len(names) - 1})"
            )
        label = names[index] if names is not None else str(index)
        listed.append(Listed(where, base / rel, label, None))
    if names is None:
        top = max((int(entry.label) for entry in listed), default=-1)
        names = [str(i) for i in range(top + 1)]
    return finish(listed, names, source=path, fmt="list", strict=strict)


def from_ucf101(split_dir: PathLike, *, video_root: PathLike, split: int = 1, strict: bool = False) -> Dataset:
    """UCF101's official split files; the label map follows ``classInd.txt``.

    Train lines carry a 1-based class index; test lines have none, so the label is the
    video's folder (``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``).
    """
    split_dir = _existing(split_dir, "UCF101 split folder", folder=True)
    root = _existing(video_root, "UCF101 video_root", folder=True)
    labels = _read_class_ind(_existing(split_dir / "classInd.txt", "UCF101 classInd.txt"))
    listed: list[Listed] = []
    for stem, split_name in (("trainlist", "train"), ("testlist", "test")):
        file = _existing(split_dir / f"{stem}{split:02d}.txt", f"UCF101 split {split} file")
        for where, text in read_lines(file):
            rel, label = _ucf_entry(text, where, labels)
            listed.append(Listed(where, root / rel, label, split_name))
    return finish(listed, labels, source=split_dir, fmt="ucf101", strict=strict)


def from_hmdb51(split_dir: PathLike, *, video_root: PathLike, split: int = 1, strict: bool = False) -> Dataset:
    """HMDB51's ``<action>_test_split<N>.txt`` files: code 1 train, 2 test, 0 unused (left
    out, not missing). Videos are ``video_root/<action>/<video>``; labels sorted by name.
    """
    split_dir = _existing(split_dir, "HMDB51 split folder", folder=True)
    root = _existing(video_root, "HMDB51 video_root", folder=True)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in split_dir.iterdir() if p.name.endswith(suffix) and p.is_file())
    if not files:
        raise DatasetError(f"{split_dir}: no HMDB51 split files <action>{suffix}")
    listed: list[Listed] = []
    for file in files:
        action = file.name[: -len(suffix)]
        for where, text in read_lines(file):
            video, code = _path_and_int(text, where, "video.avi 0|1|2")
            if code not in (0, 1, 2):
                raise DatasetError(f"{where}: split code {code}; expected 1 train, 2 test, 0 unused")
            if code:
                split_name = "train" if code == 1 else "test"
                listed.append(Listed(where, root / action / video, action, split_name))
    labels = sorted(file.name[: -len(suffix)] for file in files)
    return finish(listed, labels, source=split_dir, fmt="hmdb51", strict=strict)


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


def _csv_row(where: str, row: list[str], columns: dict[str, int], base: Path) -> Listed:
    if len(row) != columns["width"]:
        raise DatasetError(f"{where}: expected {columns['width']} columns, got {len(row)}")
    rel, label = row[columns["path"]].strip(), row[columns["label"]].strip()
    if not rel:
        raise DatasetError(f"{where}: empty path")
    if not label:
        raise DatasetError(f"{where}: empty label for {rel}")
    split = _split_name(row[columns["split"]], where) if "split" in columns else None
    group = (row[columns["group"]].strip() or None) if "group" in columns else None
    return Listed(where, base / rel, label, split, group)


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
    for where, text in read_lines(path):
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
    with open_text(path) as handle:
        names = [line.strip() for line in handle.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, start=1):
        if not name:
            raise DatasetError(f"{path}:{number}: blank line inside the label names")
    if not names:
        raise DatasetError(f"{path}: no label names in the file")
    return names


def _split_folders(root: Path) -> list[tuple[str, Path]] | None:
    """``[(split, folder)]`` when ``root`` holds train/val/test folders, else None."""
    folders = [entry for entry in visible(root) if entry.is_dir()]
    splits = [(_SPLIT_NAMES[f.name.lower()], f) for f in folders if f.name.lower() in _SPLIT_NAMES]
    if not splits:
        return None
    others = [f.name for f in folders if f.name.lower() not in _SPLIT_NAMES]
    if others:
        raise DatasetError(
            f"{root}: mixes split folders ({', '.join(f.name for _, f in splits)}) with class "
            f"folders ({', '.join(others[:SHOW])}); put every class under train/val/test or none"
        )
    return splits


def _existing(path: PathLike, what: str, *, folder: bool = False) -> Path:
    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise DatasetError(f"{what} not found{' (or not a folder)' if folder else ''}: {path}")
    return path
