"""Per-person labels: which person of a clip does what, for training on per-person sequences.

Place in the data flow: a CSV beside the clips -> **read_person_labels** -> extraction with actors
(``vidseq.features.actor_extraction``) gives each matching track its own label.

The CSV has a header and one row per labelled person:

- ``path,label,track``: the track id vidseq gave the person (``t<id>`` in a per-person store,
  the ``track`` column of ``vidseq predict --actors``), or
- ``path,label,time,x1,y1,x2,y2``: the person's box (pixels of the video) at ``time`` seconds:
  the track whose box at the nearest tracked frame overlaps it most (IoU at least 0.3) gets the
  label. Boxes survive a change of tracker settings; track ids do not.

Optional columns ``split`` (train/val/test) and ``group`` set that person's split and group (a
person's source, so splits can keep people apart). ``path`` is relative to the CSV's folder (or
absolute). Tracks that no row names are stored without a label and left out of training.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from vidseq.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")
MIN_IOU = 0.3


@dataclass(frozen=True)
class PersonLabel:
    """One labelled person of one clip: by track id, or by a box at a time."""

    label: str
    track: int | None = None
    time: float | None = None
    box: tuple[float, float, float, float] | None = None
    split: str | None = None
    group: str | None = None
    where: str = ""  # file:line, for messages


def read_person_labels(path: str | Path) -> dict[str, list[PersonLabel]]:
    """``{resolved video path: [PersonLabel, ...]}`` from a per-person CSV (format above)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: per-person labels file not found")
    base = path.parent
    out: dict[str, list[PersonLabel]] = {}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [cell.strip().lower() for cell in next(reader, [])]
        columns = {name: i for i, name in enumerate(header)}
        by_box = {"time", "x1", "y1", "x2", "y2"} <= set(columns)
        if not {"path", "label"} <= set(columns) or not ("track" in columns or by_box):
            raise DatasetError(
                f"{path}:1: a per-person labels file needs the columns path,label and either track or "
                f"time,x1,y1,x2,y2 (optional: split, group); got {','.join(header) or 'nothing'}"
            )
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise DatasetError(f"{where}: expected {len(header)} columns, got {len(row)}")
            cell = {name: row[i].strip() for name, i in columns.items()}
            video = Path(cell["path"])
            video = video if video.is_absolute() else base / video
            out.setdefault(os.path.realpath(video), []).append(_person(cell, where, by_box))
    return out


def _person(cell: dict[str, str], where: str, by_box: bool) -> PersonLabel:
    if not cell["label"]:
        raise DatasetError(f"{where}: empty label")
    split = cell.get("split") or None
    if split is not None and split not in SPLIT_NAMES:
        raise DatasetError(f"{where}: split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    common = {"label": cell["label"], "split": split, "group": cell.get("group") or None, "where": where}
    if cell.get("track"):
        text = cell["track"].removeprefix("t")
        if not text.isdigit():
            raise DatasetError(f"{where}: track must be a track id such as 3 or t3, got {cell['track']!r}")
        return PersonLabel(track=int(text), **common)
    if not by_box:
        raise DatasetError(f"{where}: no track id and no box")
    try:
        time = float(cell["time"])
        box = tuple(float(cell[k]) for k in ("x1", "y1", "x2", "y2"))
    except ValueError:
        raise DatasetError(f"{where}: time and x1,y1,x2,y2 must be numbers") from None
    if box[2] <= box[0] or box[3] <= box[1] or time < 0:
        raise DatasetError(f"{where}: the box must have x2 > x1 and y2 > y1, and time >= 0; got {box} at {time}")
    return PersonLabel(time=time, box=box, **common)  # type: ignore[arg-type]
