"""Discovery: a path and options -> a ``Dataset`` in any supported format, with its groups.

Place in the data flow: **where the videos are** -> decode + sample -> features -> ... The
entry points the rest of vidseq calls: ``discover`` (labelled formats, ``_formats``),
``discover_videos`` (also unlabelled videos: a file, a folder, a list of paths) and
``dataset_from_config``; each result goes through ``with_groups`` (``_groups``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidseq.datasets._formats import (
    FORMATS,
    LOOKED_FOR,
    detect_format,
    from_csv,
    from_folder,
    from_hmdb51,
    from_list_file,
    from_ucf101,
)
from vidseq.datasets._groups import UCF101_GROUP_PATTERN, with_groups
from vidseq.datasets._items import (
    VIDEO_EXTENSIONS,
    Dataset,
    Listed,
    PathLike,
    VideoItem,
    finish,
    read_lines,
    visible,
    walk_files,
)
from vidseq.errors import DatasetError

if TYPE_CHECKING:
    from vidseq.config import DataConfig

_EXAMPLE_EXTS = ".mp4, .avi, .mkv, .mov, .webm, .gif, ..."


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
    """Find the labelled videos of ``source`` in any supported format (see ``_formats``).

    ``strict=True`` turns listed-but-missing files into a DatasetError instead of a warning.
    ``group_pattern`` (ucf101 default: ``_g(\\d+)_``) and ``allow_split_leak``: see ``with_groups``.
    """
    found = _discover(source, format=format, video_root=video_root, split=split, label_names=label_names, strict=strict)
    if group_pattern is None and found.format == "ucf101":
        group_pattern = UCF101_GROUP_PATTERN
    return with_groups(found, group_pattern=group_pattern, allow_split_leak=allow_split_leak)


def _discover(
    source: PathLike,
    *,
    format: str,
    video_root: PathLike | None,
    split: int,
    label_names: PathLike | None,
    strict: bool,
) -> Dataset:
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"dataset source {path} does not exist (expected {LOOKED_FOR})")
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
            f"{path}: the {fmt} format needs video_root (data.video_root), the folder that holds <class>/<video> files"
        )
    loader = from_ucf101 if fmt == "ucf101" else from_hmdb51
    return loader(path, video_root=video_root, split=split, strict=strict)


def discover_videos(source: PathLike, **options: Any) -> Dataset:
    """What extraction and prediction take: any format ``discover`` reads, or unlabelled videos.

    Unlabelled inputs: one video file; a folder with videos at its top level (then searched
    recursively, sub-folders are not classes); a text file listing one video path per line
    (relative to its folder). Their items have ``label=None``. ``options`` go to ``discover`` for labelled formats;
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
    if path.is_dir() and any(_is_video(entry) for entry in visible(path)):
        files = walk_files(path)
        videos = [VideoItem(f, None) for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
        if not videos:
            raise DatasetError(f"{path}: no video files found (extensions: {_EXAMPLE_EXTS})")
        skipped = [f for f in files if f.suffix.lower() not in VIDEO_EXTENSIONS]
        return Dataset(videos, [], [], skipped, str(path), "videos")
    if path.is_file() and path.suffix.lower() in (".txt", ".list") and _is_plain_list(path):
        listed = [Listed(where, _resolve(text, path.parent), "", None) for where, text in read_lines(path)]
        found = finish(listed, [""], source=path, fmt="paths", strict=strict)
        found.items, found.labels = [VideoItem(item.path, None) for item in found.items], []
        return found
    return None


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _is_plain_list(path: Path) -> bool:
    """True when no line ends in an integer label (so it is not an MMAction2-style list)."""
    lines = [text for _, text in read_lines(path)]
    return bool(lines) and not any(text.rsplit(None, 1)[-1].lstrip("-").isdigit() for text in lines)


def _resolve(text: str, base: Path) -> Path:
    candidate = Path(text).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def dataset_from_config(config: DataConfig, *, strict: bool | None = None) -> Dataset:
    """``discover`` with the options of a ``DataConfig`` (the ``data`` section).

    ``strict`` overrides ``config.strict`` when given."""
    if config.source is None:
        raise DatasetError(f"data.source is not set: point it at {LOOKED_FOR}")
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


def _check_options(path: Path, fmt: str, *, video_root: object, label_names: object) -> None:
    """Reject options the chosen format would ignore: the source was likely misread."""
    if video_root is not None and fmt == "folder":
        raise DatasetError(f"{path} was read as a folder dataset, which takes no video_root")
    if label_names is not None and fmt != "list":
        raise DatasetError(f"{path} was read as {fmt}; label_names is only for list files")
