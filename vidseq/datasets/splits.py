"""Split sizes per class, and warnings where the splits would make the scores mislead.

Place in the data flow: labelled videos (``vidseq dataset``) or sequences with their splits
(``vidseq train``, after ``assign_splits``) -> **counts per class and split, warnings** -> shown
to the user and kept in the run folder. Pure functions over plain lists (one label, split and
group per clip): no I/O, nothing decoded or loaded here.

What is warned about: fewer than two classes (accuracy is 1.0 by construction); a class without
training clips (its accuracy is 0, silently); a class with fewer than ``MIN_TRAIN`` training
clips, or none in a val/test split that exists; no groups while vidseq makes (some of) the splits
(clips of one source may land on both sides: val measures memory); groups shared between splits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")
NONE = "none"  # the column of clips without a split (vidseq makes theirs at training)
MIN_TRAIN = 3  # fewer training clips per class than this: the class is barely learnt
UCF101_GROUP_PATTERN = r"_g(\d+)_"  # the pattern vidseq.datasets applies to ucf101 by default
NO_GROUPS = "no groups given: clips of one source may land on both sides; give a CSV group column or data.group_pattern"
_SHOW = 5  # classes or groups a warning names


@dataclass
class SplitsReport:
    """Clips per class and split, where the groups came from, and the warnings (one line each)."""

    classes: list[str]
    counts: dict[str, dict[str, int]]  # class -> split (train, val, test, none) -> clips
    groups: str  # one line: how many groups and where they came from
    made: int  # clips whose split vidseq made (or will make)
    warnings: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        """The splits that hold clips, in order (``none`` last, only where a clip has no split)."""
        used = {split for row in self.counts.values() for split, n in row.items() if n}
        return [s for s in (*SPLITS, NONE) if s in used] or ["train"]

    def table(self) -> str:
        """A text table: a row per class, a column per split, a total row."""
        columns = self.columns()
        head = [c if c != NONE else "no split" for c in columns]
        rows = [[name, *(str(self.counts[name][c]) for c in columns)] for name in self.classes]
        rows.append(["total", *(str(sum(self.counts[n][c] for n in self.classes)) for c in columns)])
        width = max(len(r[0]) for r in [["class"], *rows])
        sizes = [max(len(h), *(len(r[i + 1]) for r in rows)) for i, h in enumerate(head)]
        lines = ["  " + "class".ljust(width) + "".join(f"  {h:>{s}}" for h, s in zip(head, sizes))]
        lines += ["  " + r[0].ljust(width) + "".join(f"  {v:>{s}}" for v, s in zip(r[1:], sizes)) for r in rows]
        return "\n".join(lines)

    def text(self) -> str:
        """The table with a heading, and the groups line (warnings are separate lines)."""
        total = sum(sum(row.values()) for row in self.counts.values())
        made = f"; vidseq makes the splits of {self.made}" if self.made else ""
        return f"clips per class and split ({total} clips{made}):\n{self.table()}\n{self.groups}"

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for a JSON file in the run folder."""
        return {"warnings": list(self.warnings), "counts": self.counts, "groups": self.groups, "splits_made": self.made}


def split_report(
    labels: Sequence[str | None],
    splits: Sequence[str | None],
    groups: Sequence[str | None] | None = None,
    *,
    classes: Sequence[str] | None = None,
    made: Sequence[bool] | None = None,
    groups_from: str | None = None,
) -> SplitsReport:
    """Count clips per class and split and list what would make the scores mislead.

    ``labels``, ``splits`` (train/val/test, or None/"" not yet assigned) and ``groups`` (None/""
    none): one per clip. ``classes``: the label map (a class in it without clips is warned about);
    default: the labels seen. ``made``: per clip, whether vidseq made its split (default: the clips
    without one, which vidseq will split). ``groups_from``: where the groups came from (see
    ``groups_source``; default: "given").
    """
    if not len(labels) == len(splits) == len(groups if groups is not None else splits):
        raise ValueError("labels, splits and groups need one entry per clip")
    groups = [g or None for g in groups] if groups is not None else [None] * len(labels)
    made = list(made) if made is not None else [not s for s in splits]
    classes = list(classes) if classes is not None else sorted({x for x in labels if x is not None})
    classes += sorted({x for x in labels if x is not None} - set(classes))
    counts = {name: dict.fromkeys((*SPLITS, NONE), 0) for name in classes}
    for label, split in zip(labels, splits):
        if label is not None:
            counts[label][split or NONE] += 1
    warnings = _class_warnings(counts) + _group_warnings(splits, groups, any(made))
    line = groups_line(groups, groups_from)
    return SplitsReport(classes, counts, line, sum(made), warnings)


def groups_line(groups: Sequence[str | None], source: str | None = None) -> str:
    """``groups: N (from SOURCE)``, with the clips that have none; or that none were given."""
    named = [g for g in groups if g]
    if not named:
        return "groups: none given (each clip counts as its own source)"
    alone = len(groups) - len(named)
    without = f"; {alone} clips without one (each its own source)" if alone else ""
    return f"groups: {len(set(named))} from {source or 'the data'}{without}"


def groups_source(
    names: Sequence[str], groups: Sequence[str | None], *, format: str = "", group_pattern: str | None = None
) -> str:
    """Where the groups of a ``vidseq.datasets.discover`` result came from, in words.

    ``names``: the clips' file names; ``format``: the dataset's format; ``group_pattern``: the one
    given to ``discover`` (None: the ucf101 format's default applies). A CSV group cell wins over
    the pattern: a clip whose group is not the pattern's match got it from the column.
    """
    if not any(groups):
        return "none"
    pattern = group_pattern or (UCF101_GROUP_PATTERN if format == "ucf101" else None)
    if pattern is None:
        return "the CSV group column" if format == "csv" else "the data"
    regex = re.compile(pattern)
    by_pattern = sum(bool(g) and g == _match(regex, name) for name, g in zip(names, groups))
    named = f"UCF101 names ({pattern})" if group_pattern is None else f"data.group_pattern {pattern!r}"
    by_column = sum(bool(g) for g in groups) - by_pattern
    if not by_column:
        return named
    if not by_pattern:
        return "the CSV group column"
    return f"the CSV group column ({by_column} clips) and {named} ({by_pattern} clips)"


def _match(regex: re.Pattern, name: str) -> str | None:
    found = regex.search(name)
    if found is None:
        return None
    return found.group(1) if regex.groups and found.group(1) is not None else found.group(0)


def _class_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """Too few classes; classes without (enough) training clips; classes missing from val/test."""
    present = [name for name, row in counts.items() if sum(row.values())]
    found = []
    if len(present) < 2:
        shown = f" ({present[0]})" if present else ""
        found.append(
            f"only {len(present)} class{shown} has clips: accuracy is 1.000 by construction; "
            "a classifier needs at least two classes"
        )
    unsplit = {name for name, row in counts.items() if row[NONE]}  # their splits are made later
    no_train = [n for n, row in counts.items() if not row["train"] and n not in unsplit]
    if no_train:
        it = "it" if len(no_train) == 1 else "them"
        found.append(f"{_names(no_train)} no training clips: the model never predicts {it} (accuracy 0.000 on {it})")
    usable = {n: row["train"] + row[NONE] for n, row in counts.items()}  # no split yet: may all train
    few = [n for n, k in usable.items() if 0 < k < MIN_TRAIN and n not in no_train]
    if few:
        shown = ", ".join(f"{n}: {usable[n]}" for n in few[:_SHOW])
        found.append(
            f"{_names(few)} fewer than {MIN_TRAIN} training clips ({shown}): "
            "too few to learn, and their scores are noise"
        )
    for split in ("val", "test"):
        if any(row[split] for row in counts.values()):
            missing = [n for n, row in counts.items() if not row[split] and n not in unsplit and row["train"]]
            if missing:
                found.append(
                    f"{_names(missing)} no {split} clips: the {split} scores say nothing about "
                    f"{'it' if len(missing) == 1 else 'them'}"
                )
    return found


_LEAKS = (
    ("val", "train", "val scores are too high, and best.pt is picked on them"),
    ("val", "test", "the model is picked on the sources that test measures"),
    ("test", "train", "test scores are too high (memory of the source, not recognition)"),
)


def _group_warnings(splits: Sequence[str | None], groups: list[str | None], vidseq_splits: bool) -> list[str]:
    """No groups where vidseq splits; groups found on two sides."""
    found = [NO_GROUPS] if vidseq_splits and not any(groups) else []
    sides: dict[str, set[str]] = {s: set() for s in SPLITS}
    for split, group in zip(splits, groups):
        if split and group:
            sides[split].add(group)
    for a, b, effect in _LEAKS:
        shared = sorted(sides[a] & sides[b])
        if shared:
            shown = ", ".join(shared[:_SHOW]) + (", ..." if len(shared) > _SHOW else "")
            found.append(f"{a} shares {len(shared)} of its {len(sides[a])} groups with {b} ({shown}): {effect}")
    return found


def _names(names: list[str]) -> str:
    """``class 'x' has`` / ``2 classes ('x', 'y') have``."""
    shown = ", ".join(repr(n) for n in names[:_SHOW]) + (", ..." if len(names) > _SHOW else "")
    return f"class {shown} has" if len(names) == 1 else f"{len(names)} classes ({shown}) have"
