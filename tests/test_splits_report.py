"""Split sizes per class and the warnings where results would mislead (vidseq.datasets.splits),
on small lists and through `vidseq dataset` / `vidseq train` on tiny real videos and features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig, SynthConfig
from vidseq.datasets import discover
from vidseq.datasets.splits import MIN_TRAIN, NO_GROUPS, groups_source, split_report
from vidseq.features import extract
from vidseq.synth import generate_dataset

GOOD = (["a"] * 5 + ["b"] * 5, ["train", "train", "train", "val", "test"] * 2)


def warned(report, text: str) -> list[str]:
    return [line for line in report.warnings if text in line]


# ---------------------------------------------------------------- the module, on lists


def test_a_good_split_counts_per_class_and_warns_of_nothing():
    labels, splits = GOOD
    report = split_report(labels, splits, [f"s{i}" for i in range(10)], groups_from="the CSV group column")
    assert report.warnings == []
    assert report.counts["a"] == {"train": 3, "val": 1, "test": 1, "none": 0}
    lines = report.table().splitlines()
    assert lines[0].split() == ["class", "train", "val", "test"]
    assert lines[1].split() == ["a", "3", "1", "1"] and lines[-1].split() == ["total", "6", "2", "2"]
    assert "groups: 10 from the CSV group column" in report.text()
    assert json.loads(json.dumps(report.to_dict()))["warnings"] == []


def test_fewer_than_two_classes_is_warned():
    report = split_report(["a"] * 4, ["train", "train", "train", "val"])
    assert warned(report, "only 1 class (a) has clips: accuracy is 1.000 by construction")
    # a label map of two classes, one without any clip, is no better
    report = split_report(["a"] * 4, ["train", "train", "train", "val"], classes=["a", "b"])
    assert warned(report, "only 1 class (a)") and warned(report, "class 'b' has no training clips")


def test_a_class_without_training_clips_is_named():
    labels, splits = GOOD
    splits = ["test" if (label, split) == ("b", "train") else split for label, split in zip(labels, splits)]
    report = split_report(labels, splits)
    assert warned(report, "class 'b' has no training clips: the model never predicts it")
    assert report.counts["b"]["train"] == 0


def test_one_clip_per_class_is_warned():
    labels = ["a", "b", "c"]
    report = split_report(labels, ["train", "val", "test"], made=[True] * 3)
    assert warned(report, "2 classes ('b', 'c') have no training clips")
    assert warned(report, f"class 'a' has fewer than {MIN_TRAIN} training clips (a: 1)")
    assert warned(report, NO_GROUPS)


def test_a_class_missing_from_an_existing_val_or_test_split_is_warned():
    labels = ["a"] * 4 + ["b"] * 4
    splits = ["train", "train", "train", "val", "train", "train", "train", "test"]
    report = split_report(labels, splits)
    assert warned(report, "class 'b' has no val clips") and warned(report, "class 'a' has no test clips")
    no_test = split_report(labels, ["train", "train", "train", "val"] * 2)  # no test split at all: fine
    assert no_test.warnings == []


def test_no_groups_is_warned_only_where_vidseq_makes_splits():
    labels, splits = GOOD
    assert warned(split_report(labels, splits, made=[True] * 10), NO_GROUPS)
    assert warned(split_report(labels, splits, made=[False] * 9 + [True]), NO_GROUPS)  # some of them
    assert not warned(split_report(labels, splits), NO_GROUPS)  # the data gave every split
    grouped = split_report(labels, splits, [f"g{i // 2}" for i in range(10)], made=[True] * 10)
    assert not warned(grouped, "no groups")
    assert NO_GROUPS == (
        "no groups given: clips of one source may land on both sides; give a CSV group column or data.group_pattern"
    )


def test_groups_shared_between_splits_are_counted():
    labels = ["a"] * 6 + ["b"] * 6
    splits = ["train", "train", "train", "val", "val", "test"] * 2
    groups = ["g1", "g2", "g3", "g1", "g2", "g9", "h1", "h2", "h3", "h4", "h5", "h5"]
    report = split_report(labels, splits, groups)
    assert warned(report, "val shares 2 of its 4 groups with train (g1, g2): val scores are too high")
    assert warned(report, "val shares 1 of its 4 groups with test (h5)")
    assert not warned(report, "test shares")


def test_clips_without_a_split_yet_count_as_possible_training_clips():
    """`vidseq dataset` on a CSV without splits: vidseq makes them at training."""
    report = split_report(["a"] * 4 + ["b"], [None] * 5)
    assert report.columns() == ["none"] and "no split" in report.table()
    assert report.made == 5 and "vidseq makes the splits of 5" in report.text()
    assert not warned(report, "no training clips")
    assert warned(report, "class 'b' has fewer than 3 training clips (b: 1)")
    assert warned(report, NO_GROUPS)
    assert report.groups == "groups: none given (each clip counts as its own source)"


def test_one_entry_per_clip():
    with pytest.raises(ValueError, match="one entry per clip"):
        split_report(["a", "b"], ["train"])


def test_where_the_groups_came_from():
    names = ["v_A_g01_c01.avi", "v_A_g02_c01.avi", "x.mp4"]
    assert groups_source(names, [None, None, None], format="csv") == "none"
    assert groups_source(names, ["s1", "s2", "s3"], format="csv") == "the CSV group column"
    assert groups_source(names, ["01", "02", None], format="ucf101") == r"UCF101 names (_g(\d+)_)"
    pattern = r"_g(\d+)_"
    assert groups_source(names, ["01", "02", None], format="folder", group_pattern=pattern) == (
        r"data.group_pattern '_g(\\d+)_'"
    )
    mixed = groups_source(names, ["alice", "02", None], format="csv", group_pattern=pattern)
    assert mixed == r"the CSV group column (1 clips) and data.group_pattern '_g(\\d+)_' (1 clips)"
    line = split_report(["a", "a", "b"], [None] * 3, ["01", "02", None], groups_from="UCF101 names").groups
    assert line == "groups: 2 from UCF101 names; 1 clips without one (each its own source)"


# ---------------------------------------------------------------- the commands, on tiny real data


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """2 classes x 6 tiny synthetic videos; labels.csv gives every split (and no groups)."""
    out = tmp_path_factory.mktemp("splits") / "data"
    generate_dataset(out, SynthConfig(classes=["move_left", "move_right"], videos_per_class=6, num_frames=8, size=32))
    return out


def _csv(clips: Path, name: str, header: str, keep=lambda row: True, cells=lambda row: row[:2]) -> Path:
    """A CSV beside the clips from the rows of labels.csv (path, label, split)."""
    with (clips / "labels.csv").open() as handle:
        rows = [row for row in list(csv.reader(handle))[1:] if keep(row)]
    path = clips / name
    path.write_text(header + "\n" + "".join(",".join(cells(row)) + "\n" for row in rows))
    return path


def _store(source: Path, out: Path) -> Path:
    result = extract(
        discover(source),
        out=out,
        backbone=BackboneConfig(input_size=64),
        sampling=SamplingConfig(count=4),
        config=ExtractConfig(num_workers=0, batch_size=32),
        progress=False,
    )
    assert result.ok
    return result.store.directory


def _vidseq(*args: str):
    from vidseq.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def _train(store: Path, out: Path):
    result = _vidseq("train", str(store), "--out", str(out), "--epochs", "1", "-q")
    recorded = json.loads((out / "data_warnings.json").read_text())
    warnings = [line.removeprefix("warning: ") for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == recorded["warnings"]  # printed one line each, and kept in the run folder
    return result, warnings


def test_train_warns_of_a_one_class_dataset(clips, tmp_path):
    one = _csv(clips, "one.csv", "path,label,split", keep=lambda row: row[1] == "move_left", cells=lambda row: row[:3])
    result, warnings = _train(_store(one, tmp_path / "features"), tmp_path / "run")
    assert any(w.startswith("only 1 class (move_left) has clips: accuracy is 1.000") for w in warnings)
    assert "clips per class and split" not in result.output  # -q: no table, the warnings still


def test_train_warns_of_a_csv_without_groups_and_shows_the_split_sizes(clips, tmp_path):
    no_groups = _csv(clips, "no_groups.csv", "path,label")
    store = _store(no_groups, tmp_path / "features")
    result = _vidseq("train", str(store), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert f"warning: {NO_GROUPS}" in result.output.splitlines()
    assert "clips per class and split (12 clips; vidseq makes the splits of 12)" in result.output
    table = result.output.split("clips per class and split", 1)[1].splitlines()
    assert table[1].split() == ["class", "train", "val", "test"] and table[4].split()[0] == "total"
    assert "groups: none given" in result.output
    assert json.loads((tmp_path / "run" / "data_warnings.json").read_text())["warnings"] == [NO_GROUPS]


def test_train_on_a_good_dataset_warns_of_nothing(clips, tmp_path):
    grouped = _csv(clips, "grouped.csv", "path,label,group", cells=lambda row: [*row[:2], row[0][-8:-4]])
    result, warnings = _train(_store(grouped, tmp_path / "features"), tmp_path / "run")
    assert warnings == [] and "warning:" not in result.output
    given = _store(clips / "labels.csv", tmp_path / "given")  # synth's own split, given for every clip
    result, warnings = _train(given, tmp_path / "run_given")
    assert warnings == [] and "warning:" not in result.output


def test_dataset_shows_split_sizes_groups_and_warnings(clips):
    out = _vidseq("dataset", str(clips / "labels.csv")).output
    lines = out.split("clips per class and split (12 clips):", 1)[1].splitlines()
    assert [line.split() for line in lines[1:5]] == [
        ["class", "train", "val", "test"],
        ["move_left", "4", "1", "1"],
        ["move_right", "4", "1", "1"],
        ["total", "8", "2", "2"],
    ]
    assert "groups: none given" in out and "warning:" not in out
    no_groups = _vidseq("dataset", str(_csv(clips, "no_groups.csv", "path,label"))).output
    assert f"warning: {NO_GROUPS}" in no_groups.splitlines() and "no split" in no_groups
    grouped = _csv(clips, "grouped.csv", "path,label,group", cells=lambda row: [*row[:2], row[0][-8:-4]])
    out = _vidseq("dataset", str(grouped)).output
    assert "groups: 6 from the CSV group column" in out and "warning:" not in out
    one = _csv(clips, "one.csv", "path,label,split", keep=lambda row: row[1] == "move_left", cells=lambda row: row[:3])
    assert "warning: only 1 class (move_left) has clips" in _vidseq("dataset", str(one)).output
