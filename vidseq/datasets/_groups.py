"""Groups of videos and the split-leak check: a ``Dataset`` -> the same items with their groups.

Place in the data flow: **where the videos are** (after a format's reader) -> decode + sample
-> ... Videos of one source (a UCF101 group ``_gNN_``, one actor, one scene) share a group. A
CSV ``group`` column gives it; else ``group_pattern`` (a regex searched in the file name: its
first capture group, or the whole match); the ucf101 format defaults to ``_g(\\d+)_``. An
explicit split that puts one group on both sides is a DatasetError (``allow_split_leak=True``:
a warning); splits vidseq makes itself keep each group on one side (``vidseq.training.sequences``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from vidseq.datasets._items import SHOW, SPLITS, Dataset, warn
from vidseq.errors import DatasetError

UCF101_GROUP_PATTERN = r"_g(\d+)_"  # v_ApplyEyeMakeup_g08_c01.avi -> group "08"


def with_groups(dataset: Dataset, *, group_pattern: str | None = None, allow_split_leak: bool = False) -> Dataset:
    """``dataset`` with each item's group set, checked for groups on two sides of its split.

    An item keeps the group it has (a CSV ``group`` column); else ``group_pattern``, searched in
    the file name, gives its first capture group (or the whole match); no match: no group. A
    group in two splits raises DatasetError naming it and the sides (``allow_split_leak``: warns).
    """
    if group_pattern is not None:
        try:
            regex = re.compile(group_pattern)
        except re.error as exc:
            raise DatasetError(
                f"group pattern {group_pattern!r} (data.group_pattern) is not a valid "
                rf"regular expression ({exc}); e.g. _g(\d+)_ for UCF101 names"
            ) from None
        items = [
            item if item.group is not None else dataclasses.replace(item, group=_match(regex, item.path))
            for item in dataset.items
        ]
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
        shown = "; ".join(
            f"group {g!r} in " + " and ".join(f"{side} ({found[side].name})" for side in SPLITS if side in found)
            for g, found in leaks[:SHOW]
        )
        shown += f"; {len(leaks) - SHOW} more" if len(leaks) > SHOW else ""
        problem = (
            f"{dataset.source}: the split puts one source on two sides "
            f"({f'group pattern {pattern}' if pattern else 'group column'}): {shown}"
        )
        if not allow:
            raise DatasetError(
                f"{problem}. That leaks scenes from training into evaluation: move each group "
                "to one split, fix data.group_pattern, or set data.allow_split_leak=true"
            )
        warn(f"{problem} (accepted: allow_split_leak)")
