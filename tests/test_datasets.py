"""Tests of vidseq.datasets on small trees written into tmp_path (empty files: never opened)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vidseq.config import DataConfig
from vidseq.datasets import (
    VIDEO_EXTENSIONS,
    Dataset,
    DatasetWarning,
    VideoItem,
    dataset_from_config,
    detect_format,
    discover,
    from_csv,
    from_folder,
    from_hmdb51,
    from_list_file,
    from_ucf101,
)
from vidseq.errors import DatasetError


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        paths.append(path)
    return paths


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def labels_of(dataset: Dataset) -> dict[str, str | None]:
    return {item.path.name: item.label for item in dataset}


# -- extensions, items ----------------------------------------------------------------------


def test_video_extensions_cover_common_containers() -> None:
    for ext in ("mp4", "avi", "mkv", "mov", "webm", "gif", "m4v", "mpg", "mpeg", "flv", "wmv"):
        assert f".{ext}" in VIDEO_EXTENSIONS
    assert ".3gp" in VIDEO_EXTENSIONS and ".txt" not in VIDEO_EXTENSIONS


def test_video_item_is_frozen() -> None:
    item = VideoItem(Path("a.mp4"), "walk", None)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        item.label = "run"  # type: ignore[misc]


# -- folder -------------------------------------------------------------------------------


def test_folder_classes_and_nested_folders(tmp_path: Path) -> None:
    touch(tmp_path, "walk/a.mp4", "walk/outdoor/day/b.AVI", "run/c.mkv", "jump/d.gif")
    data = from_folder(tmp_path)
    assert data.labels == ["jump", "run", "walk"]
    assert labels_of(data) == {"d.gif": "jump", "c.mkv": "run", "a.mp4": "walk", "b.AVI": "walk"}
    assert all(item.split is None for item in data)
    assert len(data) == 4 and data.format == "folder" and data.missing == []
    assert data.label_index("walk") == 2


def test_folder_skips_non_videos_with_a_warning(tmp_path: Path) -> None:
    touch(tmp_path, "walk/a.mp4", "walk/notes.txt", "run/b.mp4", "run/thumb.jpg", "loose.mp4")
    touch(tmp_path, "README.md", "labels.csv")  # notes beside the class folders: ignored quietly
    with (
        pytest.warns(DatasetWarning, match=r"skipped 2 files \(.*notes\.txt.*\): not videos"),
        pytest.warns(DatasetWarning, match=r"loose\.mp4\): videos outside any class folder"),
    ):
        data = from_folder(tmp_path)
    assert sorted(p.name for p in data.skipped) == ["loose.mp4", "notes.txt", "thumb.jpg"]
    assert len(data) == 2
    assert "skipped: 3 files" in data.summary()


def test_folder_warns_about_files_outside_class_folders(tmp_path: Path) -> None:
    touch(tmp_path, "walk/a.mp4", "stray.mp4")
    with pytest.warns(DatasetWarning, match=r"stray\.mp4\): videos outside any class folder"):
        data = from_folder(tmp_path)
    assert data.skipped == [tmp_path / "stray.mp4"]


def test_folder_ignores_hidden_files_and_folders(tmp_path: Path) -> None:
    touch(tmp_path, "walk/a.mp4", "walk/.DS_Store", ".cache/x.mp4", "walk/.ipynb_checkpoints/b.mp4")
    data = from_folder(tmp_path)
    assert data.labels == ["walk"] and len(data) == 1 and data.skipped == []


def test_folder_leaves_out_empty_class_folders(tmp_path: Path) -> None:
    touch(tmp_path, "walk/a.mp4")
    (tmp_path / "run").mkdir()
    with pytest.warns(DatasetWarning, match=r"class folders without videos left out: \['run'\]"):
        data = from_folder(tmp_path)
    assert data.labels == ["walk"]


def test_folder_split_layout_sets_the_split(tmp_path: Path) -> None:
    touch(tmp_path, "train/walk/a.mp4", "train/run/b.mp4", "val/walk/c.mp4", "test/jump/d.mp4")
    data = from_folder(tmp_path)
    assert data.labels == ["jump", "run", "walk"]  # union over splits
    assert [i.path.name for i in data.split("train")] == ["b.mp4", "a.mp4"]
    assert [i.path.name for i in data.split("val")] == ["c.mp4"]
    assert [(i.path.name, i.label) for i in data.split("test")] == [("d.mp4", "jump")]
    assert data.split(None) == []
    assert "splits: train 2, val 1, test 1, none 0" in data.summary()


def test_folder_split_aliases(tmp_path: Path) -> None:
    touch(tmp_path, "Training/walk/a.mp4", "validation/walk/b.mp4")
    data = from_folder(tmp_path)
    assert {i.path.name: i.split for i in data} == {"a.mp4": "train", "b.mp4": "val"}


def test_folder_mixing_split_and_class_folders_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "train/walk/a.mp4", "run/b.mp4")
    with pytest.raises(DatasetError, match=r"mixes split folders \(train\) with class folders \(run\)"):
        from_folder(tmp_path)


def test_folder_without_videos_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "walk/notes.txt")
    with (
        pytest.warns(DatasetWarning, match="not videos"),
        pytest.raises(DatasetError, match=r"no videos found \(looked for <class>/<video>"),
    ):
        from_folder(tmp_path)


def test_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        from_folder(tmp_path / "nope")


# -- csv ----------------------------------------------------------------------------------


def test_csv_paths_relative_to_the_csv_folder(tmp_path: Path) -> None:
    touch(tmp_path, "clips/a.mp4", "clips/b.mp4")
    csv_path = write(tmp_path / "labels.csv", "path,label\nclips/a.mp4,walk\nclips/b.mp4, run \n")
    data = from_csv(csv_path)
    assert data.labels == ["run", "walk"]
    assert [(i.path, i.label, i.split) for i in data] == [
        (tmp_path / "clips/a.mp4", "walk", None),
        (tmp_path / "clips/b.mp4", "run", None),
    ]


def test_csv_with_video_root_split_column_and_extra_columns(tmp_path: Path) -> None:
    touch(tmp_path / "videos", "a.mp4", "b.mp4", "c.mp4")
    text = "Path,label,split,fps\na.mp4,walk,train,30\nb.mp4,walk,Test,25\nc.mp4,run,,25\n"
    data = from_csv(write(tmp_path / "meta/list.csv", text), video_root=tmp_path / "videos")
    assert {i.path.name: i.split for i in data} == {
        "a.mp4": "train",
        "b.mp4": "test",
        "c.mp4": None,
    }


def test_csv_accepts_a_file_column_a_bom_and_quoted_paths(tmp_path: Path) -> None:
    touch(tmp_path, "my clip, take 2.mp4")
    csv_path = tmp_path / "x.csv"
    csv_path.write_text('\ufefffile,label\n"my clip, take 2.mp4",walk\n', encoding="utf-8")
    assert [i.path.name for i in from_csv(csv_path)] == ["my clip, take 2.mp4"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("video,label\na.mp4,walk\n", r"x\.csv:1: the header must name the columns path,label"),
        ("path,class\na.mp4,walk\n", r"x\.csv:1: .*\(found: path,class\)"),
        ("", r"x\.csv:1: .*found: an empty file"),
        ("path,label\na.mp4,walk\nb.mp4,\n", r"x\.csv:3: empty label for b\.mp4"),
        ("path,label\na.mp4,walk\n\nb.mp4\n", r"x\.csv:4: expected 2 columns, got 1"),
        ("path,label\n,walk\n", r"x\.csv:2: empty path"),
        ("path,label,split\na.mp4,walk,dev\n", r"x\.csv:2: unknown split 'dev'"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    touch(tmp_path, "a.mp4", "b.mp4")
    with pytest.raises(DatasetError, match=match):
        from_csv(write(tmp_path / "x.csv", text))


def test_csv_same_video_in_two_splits_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    text = "path,label,split\na.mp4,walk,train\nb.mp4,run,train\na.mp4,walk,test\n"
    with pytest.raises(DatasetError, match=r"x\.csv:4: .*a\.mp4 is listed again .*x\.csv:2.*leak"):
        from_csv(write(tmp_path / "x.csv", text))


def test_csv_exact_repeats_are_dropped_with_a_warning(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    with pytest.warns(DatasetWarning, match=r"1 repeated entries ignored \(.*x\.csv:3\)"):
        data = from_csv(write(tmp_path / "x.csv", "path,label\na.mp4,walk\na.mp4,walk\n"))
    assert len(data) == 1


# -- missing files ------------------------------------------------------------------------


def test_missing_files_are_reported_never_dropped_silently(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    names = [f"gone{i}.mp4" for i in range(7)]
    text = "path,label\na.mp4,walk\n" + "".join(f"{n},run\n" for n in names)
    with pytest.warns(DatasetWarning, match=r"7 files \(.*gone0\.mp4.* and 2 more\) listed but not"):
        data = from_csv(write(tmp_path / "x.csv", text))
    assert [p.name for p in data.missing] == names
    assert data.labels == ["run", "walk"]  # the label map comes from the annotation
    assert len(data) == 1
    assert "missing: 7 files" in data.summary()


def test_strict_turns_missing_files_into_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    csv_path = write(tmp_path / "x.csv", "path,label\na.mp4,walk\ngone.mp4,run\n")
    with pytest.raises(DatasetError, match=r"1 file \(.*gone\.mp4\) listed but not found"):
        discover(csv_path, strict=True)


def test_listed_files_that_are_not_videos_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4", "b.txt")
    (tmp_path / "frames").mkdir()
    text = "path,label\na.mp4,walk\nb.txt,walk\nframes,run\n"
    with pytest.warns(DatasetWarning, match=r"skipped 2 files .*: listed, but not video files"):
        data = from_csv(write(tmp_path / "x.csv", text))
    assert [p.name for p in data.skipped] == ["b.txt", "frames"]


def test_all_listed_files_missing_is_an_error(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "x.csv", "path,label\ngone.mp4,run\n")
    with (
        pytest.warns(DatasetWarning, match="listed but not found"),
        pytest.raises(DatasetError, match=r"no videos found \(1 listed, 1 of them missing\)"),
    ):
        from_csv(csv_path)


# -- list files -----------------------------------------------------------------------------


def test_list_file_with_label_names(tmp_path: Path) -> None:
    touch(tmp_path, "v/a.mp4", "v/my clip.mp4")
    names = write(tmp_path / "names.txt", "walk\nrun\njump\n\n")
    lst = write(tmp_path / "train.txt", "# comment\nv/a.mp4 2\n\nv/my clip.mp4   0\n")
    data = from_list_file(lst, label_names=names)
    assert data.labels == ["walk", "run", "jump"]  # index order, not sorted
    assert labels_of(data) == {"a.mp4": "jump", "my clip.mp4": "walk"}
    assert data.label_index("jump") == 2


def test_list_file_without_label_names_uses_index_strings(tmp_path: Path) -> None:
    touch(tmp_path / "root", "a.mp4", "b.mp4")
    lst = write(tmp_path / "lists/l.txt", "a.mp4 0\nb.mp4 3\n")
    data = from_list_file(lst, video_root=tmp_path / "root")
    assert data.labels == ["0", "1", "2", "3"]
    assert labels_of(data) == {"a.mp4": "0", "b.mp4": "3"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a.mp4 0\nb.mp4\n", r"l\.txt:2: expected 'path label_index', got 'b\.mp4'"),
        ("a.mp4 walk\n", r"l\.txt:1: expected 'path label_index'"),
        ("a.mp4 -1\n", r"l\.txt:1: expected 'path label_index'"),
        ("a.mp4 0\n\nb.mp4 5\n", r"l\.txt:3: label index 5, but .*names\.txt names only 2 classes"),
    ],
)
def test_list_file_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    touch(tmp_path, "a.mp4", "b.mp4")
    names = write(tmp_path / "names.txt", "walk\nrun\n")
    with pytest.raises(DatasetError, match=match):
        from_list_file(write(tmp_path / "l.txt", text), label_names=names)


def test_label_names_with_a_blank_line_inside_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4")
    names = write(tmp_path / "names.txt", "walk\n\nrun\n")
    with pytest.raises(DatasetError, match=r"names\.txt:2: blank line inside the label names"):
        from_list_file(write(tmp_path / "l.txt", "a.mp4 0\n"), label_names=names)


# -- UCF101 ---------------------------------------------------------------------------------


def make_ucf(tmp_path: Path) -> tuple[Path, Path]:
    splits = tmp_path / "ucfTrainTestlist"
    write(splits / "classInd.txt", "1 YoYo\n2 ApplyEyeMakeup\n3 Archery\n")
    write(splits / "trainlist01.txt", "YoYo/v_YoYo_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 3\n")
    write(splits / "testlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    write(splits / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 2\n")
    write(splits / "testlist02.txt", "YoYo/v_YoYo_g08_c01.avi\r\n")
    videos = tmp_path / "UCF-101"
    touch(videos, "YoYo/v_YoYo_g08_c01.avi", "Archery/v_Archery_g08_c01.avi")
    touch(videos, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    return splits, videos


def test_ucf101_label_map_in_classind_order_and_test_labels_from_folders(tmp_path: Path) -> None:
    splits, videos = make_ucf(tmp_path)
    data = from_ucf101(splits, video_root=videos)
    assert data.labels == ["YoYo", "ApplyEyeMakeup", "Archery"]
    assert [(i.path.name, i.label) for i in data.split("train")] == [
        ("v_YoYo_g08_c01.avi", "YoYo"),
        ("v_Archery_g08_c01.avi", "Archery"),
    ]
    assert [(i.label, i.split) for i in data.split("test")] == [("ApplyEyeMakeup", "test")]
    assert data.split("test")[0].path == videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"


def test_ucf101_other_split(tmp_path: Path) -> None:
    splits, videos = make_ucf(tmp_path)
    data = from_ucf101(splits, video_root=videos, split=2)
    assert [(i.label, i.split) for i in data] == [("ApplyEyeMakeup", "train"), ("YoYo", "test")]
    with pytest.raises(DatasetError, match=r"UCF101 split 3 file not found: .*trainlist03\.txt"):
        from_ucf101(splits, video_root=videos, split=3)


def test_ucf101_class_folders_match_classind_case_insensitively(tmp_path: Path) -> None:
    splits, videos = make_ucf(tmp_path)
    touch(videos, "yoyo/v_YoYo_g01_c01.avi")
    write(splits / "testlist01.txt", "yoyo/v_YoYo_g01_c01.avi\n")
    data = from_ucf101(splits, video_root=videos)
    assert [(i.path.parent.name, i.label) for i in data.split("test")] == [("yoyo", "YoYo")]


@pytest.mark.parametrize(
    ("file", "text", "match"),
    [
        ("testlist01.txt", "Bowling/v_Bowling_g01_c01.avi\n", r"testlist01\.txt:1: cannot tell"),
        ("trainlist01.txt", "YoYo/v.avi 1\nYoYo/w.avi 9\n", r"trainlist01\.txt:2: class 9 is not"),
        (
            "trainlist01.txt",
            "YoYo/v.avi 3\n",
            r"trainlist01\.txt:1: class 3 is 'Archery', not the folder's",
        ),
        ("classInd.txt", "1 YoYo\nArchery\n", r"classInd\.txt:2: expected 'index ClassName'"),
        ("classInd.txt", "1 YoYo\n1 Archery\n", r"classInd\.txt:2: class index 1 appears twice"),
        ("classInd.txt", "1 YoYo\n3 Archery\n", r"classInd\.txt: class indices must run 1\.\.2"),
    ],
)
def test_ucf101_malformed_lines(tmp_path: Path, file: str, text: str, match: str) -> None:
    splits, videos = make_ucf(tmp_path)
    write(splits / file, text)
    with pytest.raises(DatasetError, match=match):
        from_ucf101(splits, video_root=videos)


# -- HMDB51 ---------------------------------------------------------------------------------


def make_hmdb(tmp_path: Path) -> tuple[Path, Path]:
    splits = tmp_path / "testTrainMulti_7030_splits"
    write(splits / "brush_hair_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    write(splits / "wave_test_split1.txt", "Hello_(World)_#1.avi 1\n")
    write(splits / "wave_test_split2.txt", "Hello_(World)_#1.avi 2\n")
    videos = tmp_path / "hmdb51"
    touch(videos, "brush_hair/a.avi", "brush_hair/b.avi", "wave/Hello_(World)_#1.avi")
    return splits, videos


def test_hmdb51_codes_set_splits_and_zero_is_left_out(tmp_path: Path) -> None:
    splits, videos = make_hmdb(tmp_path)
    data = from_hmdb51(splits, video_root=videos)
    assert data.labels == ["brush_hair", "wave"]
    assert [(i.path.name, i.label, i.split) for i in data] == [
        ("a.avi", "brush_hair", "train"),
        ("b.avi", "brush_hair", "test"),
        ("Hello_(World)_#1.avi", "wave", "train"),
    ]
    assert data.missing == []  # c.avi (code 0) is not used by split 1, and not missing
    assert [i.split for i in from_hmdb51(splits, video_root=videos, split=2)] == ["test"]


def test_hmdb51_errors(tmp_path: Path) -> None:
    splits, videos = make_hmdb(tmp_path)
    with pytest.raises(DatasetError, match=r"no HMDB51 split files <action>_test_split3\.txt"):
        from_hmdb51(splits, video_root=videos, split=3)
    write(splits / "wave_test_split1.txt", "x.avi 1\ny.avi 7\n")
    with pytest.raises(DatasetError, match=r"wave_test_split1\.txt:2: split code 7; expected 1"):
        from_hmdb51(splits, video_root=videos)


# -- discover -------------------------------------------------------------------------------


def test_discover_auto_detects_every_format(tmp_path: Path) -> None:
    ucf, ucf_videos = make_ucf(tmp_path / "ucf")
    hmdb, hmdb_videos = make_hmdb(tmp_path / "hmdb")
    touch(tmp_path / "folder", "walk/a.mp4")
    csv_path = write(tmp_path / "x.CSV", "path,label\nfolder/walk/a.mp4,walk\n")
    list_path = write(tmp_path / "x.list", "folder/walk/a.mp4 0\n")
    assert discover(ucf, video_root=ucf_videos).format == "ucf101"
    assert discover(hmdb, video_root=hmdb_videos).format == "hmdb51"
    assert discover(csv_path).format == "csv"
    assert discover(list_path).format == "list"
    assert discover(tmp_path / "folder").format == "folder"
    assert detect_format(write(tmp_path / "l.txt", "")) == "list"


def test_discover_folder_and_explicit_format(tmp_path: Path) -> None:
    touch(tmp_path / "data", "walk/a.mp4", "run/b.webm")
    data = discover(tmp_path / "data")
    assert data.format == "folder" and data.labels == ["run", "walk"]
    list_path = write(tmp_path / "data/l.dat", "walk/a.mp4 1\n")
    assert discover(list_path, format="list").labels == ["0", "1"]


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (lambda p: p / "nope", {}, r"nope does not exist \(expected a folder per class, a \.csv"),
        (lambda p: write(p / "x.json", "{}"), {}, r"cannot tell the dataset format of .*x\.json"),
        (lambda p: p, {"format": "kinetics"}, r"unknown dataset format 'kinetics'"),
        (lambda p: p, {"video_root": "v"}, r"read as a folder dataset, which takes no video_root"),
        (lambda p: write(p / "x.csv", ""), {"label_names": "n.txt"}, "label_names is only for"),
        (
            lambda p: write(p / "classInd.txt", "1 YoYo\n").parent,
            {},
            r"the ucf101 format needs video_root \(data\.video_root\)",
        ),
    ],
)
def test_discover_errors(tmp_path: Path, make, kwargs: dict, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        discover(make(tmp_path), **kwargs)


def test_dataset_from_config(tmp_path: Path) -> None:
    touch(tmp_path / "videos", "a.mp4", "b.mp4")
    names = write(tmp_path / "names.txt", "walk\nrun\n")
    lst = write(tmp_path / "l.txt", "a.mp4 1\nb.mp4 0\n")
    config = DataConfig(source=str(lst), video_root=str(tmp_path / "videos"), label_names=str(names))
    data = dataset_from_config(config)
    assert data.format == "list" and labels_of(data) == {"a.mp4": "run", "b.mp4": "walk"}
    with pytest.raises(DatasetError, match="data.source is not set"):
        dataset_from_config(DataConfig())


# -- Dataset ----------------------------------------------------------------------------------


def test_dataset_methods_and_errors(tmp_path: Path) -> None:
    items = [VideoItem(Path("a.mp4"), "walk", "train"), VideoItem(Path("b.mp4"), "run", "test")]
    data = Dataset(items, ["walk", "run"], source="s", format="csv")
    assert list(data) == items and len(data) == 2
    assert data.split("train") == items[:1]
    assert "csv dataset s: 2 videos, 2 labels" in data.summary()
    assert "walk (1), run (1)" in data.summary()
    with pytest.raises(DatasetError, match=r"label 'swim' is not in the label map \(walk, run\)"):
        data.label_index("swim")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.split("dev")
    with pytest.raises(DatasetError, match=r"labels not in the label map: \['run'\]"):
        Dataset(items, ["walk"])
    with pytest.raises(DatasetError, match=r"label names repeat in the label map: \['walk'\]"):
        Dataset(items, ["walk", "run", "walk"])


@pytest.mark.shared_data
def test_real_labels_csv_of_the_shared_clips(action_clips: Path) -> None:
    data = from_csv(action_clips / "labels.csv")
    assert data.missing == [] and data.skipped == []
    assert len(data) == len(data.labels) >= 10
    assert {i.path.parent for i in data} == {action_clips}


# -- unlabelled inputs (what extract and predict take) ---------------------------------------


def test_discover_videos_takes_a_file_a_flat_folder_and_a_plain_list(tmp_path: Path) -> None:
    from vidseq.datasets import discover_videos

    touch(tmp_path, "clips/a.mp4", "clips/sub/b.avi", "clips/notes.txt", "one.mkv")
    single = discover_videos(tmp_path / "one.mkv")
    assert [i.path.name for i in single] == ["one.mkv"] and single.items[0].label is None
    flat = discover_videos(tmp_path / "clips")
    assert sorted(i.path.name for i in flat) == ["a.mp4", "b.avi"] and flat.labels == []
    assert [p.name for p in flat.skipped] == ["notes.txt"]
    listing = tmp_path / "videos.txt"
    listing.write_text("clips/a.mp4\n# a comment\none.mkv\nclips/gone.mp4\n")
    with pytest.warns(DatasetWarning, match=r"gone\.mp4"):
        listed = discover_videos(listing)
    assert [i.path.name for i in listed] == ["a.mp4", "one.mkv"]
    assert [p.name for p in listed.missing] == ["gone.mp4"]
    assert all(i.label is None for i in listed)
