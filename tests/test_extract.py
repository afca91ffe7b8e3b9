"""Feature extraction end to end: real clips, real weights, resume after a kill, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig, SynthConfig
from vidseq.datasets import discover_videos, from_folder
from vidseq.features import FeatureStore, extract
from vidseq.features import _engine as engine_module
from vidseq.features import extraction as extract_module
from vidseq.synth import generate_dataset

FAST = ExtractConfig(num_workers=0, batch_size=16)
SMALL = BackboneConfig(input_size=96)  # real weights, smaller input: fast on 2 cores


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(
        out, SynthConfig(classes=["grow", "shrink", "move_left"], videos_per_class=3, num_frames=12, size=64)
    )
    return out


def _entries(store: FeatureStore) -> list[Path]:
    return sorted(store.features_dir.glob("*.npz"))


@pytest.mark.slow
def test_real_clips_one_file_each_right_shape_distinct_and_repeatable(tmp_path, action_clips):
    dataset = discover_videos(action_clips)
    sampling = SamplingConfig(count=8)
    result = extract(dataset, out=tmp_path, sampling=sampling, config=ExtractConfig(num_workers=2), progress=False)
    assert result.ok, result.failed
    assert result.extracted == len(dataset.items) == 10
    store = result.store
    assert len(_entries(store)) == 10
    means = []
    for item in dataset.items:
        stored = store.load(item.path)
        assert stored.features.shape == (8, 1280)
        assert np.isfinite(stored.features).all()
        assert np.all(np.diff(stored.frame_indices) >= 0)
        np.testing.assert_allclose(stored.timestamps, stored.frame_indices / stored.meta["fps"])
        means.append(stored.features.mean(0))
    means = np.stack(means)
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    cosine = unit @ unit.T
    off_diagonal = cosine[~np.eye(len(means), dtype=bool)]
    assert off_diagonal.max() < 0.95, "different clips should give clearly different features"
    manifest = {row["path"]: row for row in store.read_manifest()}
    assert all(manifest[str(item.path)]["status"] == "done" for item in dataset.items)
    assert all(manifest[str(item.path)]["frames"] == "8" for item in dataset.items)
    skipped = {Path(r["path"]).name for r in manifest.values() if r["status"] == "skipped"}
    assert "SOURCES.md" in skipped and "labels.csv" in skipped

    again = extract(dataset.items[:2], out=tmp_path / "again", sampling=sampling, config=FAST, progress=False)
    for item in dataset.items[:2]:
        np.testing.assert_array_equal(again.store.load(item.path).features, store.load(item.path).features)


def test_rerun_reuses_and_force_redoes(tmp_path, synth_dir):
    items = from_folder(synth_dir).items
    first = extract(items, out=tmp_path, backbone=SMALL, config=FAST, progress=False)
    assert (first.extracted, first.reused) == (9, 0)
    second = extract(items, out=tmp_path, backbone=SMALL, config=FAST, progress=False)
    assert (second.extracted, second.reused) == (0, 9)
    forced = extract(items[:2], out=tmp_path, backbone=SMALL, config=FAST, force=True, progress=False)
    assert (forced.extracted, forced.reused) == (2, 0)


def test_store_is_keyed_by_config(tmp_path, synth_dir):
    items = from_folder(synth_dir).items[:2]
    a = extract(items, out=tmp_path, backbone=SMALL, config=FAST, progress=False)
    b = extract(items, out=tmp_path, backbone=SMALL, sampling=SamplingConfig(count=4), config=FAST, progress=False)
    c = extract(
        items, out=tmp_path, backbone=BackboneConfig(input_size=96, pooling="grid2"), config=FAST, progress=False
    )
    assert len({a.store.directory, b.store.directory, c.store.directory}) == 3
    assert b.store.load(items[0].path).features.shape == (4, 1280)
    assert c.store.load(items[0].path).features.shape == (16, 1280 * 4)


def test_same_stem_in_two_folders_never_collides(tmp_path, synth_dir):
    one, two = tmp_path / "a", tmp_path / "b"
    one.mkdir(), two.mkdir()
    videos = sorted(synth_dir.rglob("*.mp4"))
    (one / "clip.mp4").write_bytes(videos[0].read_bytes())
    (two / "clip.mp4").write_bytes(videos[-1].read_bytes())
    result = extract(
        discover_videos(one).items + discover_videos(two).items,
        out=tmp_path / "f",
        backbone=SMALL,
        config=FAST,
        progress=False,
    )
    assert result.extracted == 2 and len(_entries(result.store)) == 2


def test_bad_files_mixed_in_are_recorded_and_the_run_goes_on(tmp_path, synth_dir):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = sorted(synth_dir.rglob("*.mp4"))[:2]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "noise.avi").write_bytes(os.urandom(4096))
    (folder / "cut.mp4").write_bytes(good[0].read_bytes()[:300])
    (folder / "notes.txt").write_text("not a video")
    result = extract(discover_videos(folder), out=tmp_path / "f", backbone=SMALL, config=FAST, progress=False)
    assert result.extracted == 2 and not result.ok
    rows = {Path(r["path"]).name: r for r in result.store.read_manifest()}
    assert {n for n, r in rows.items() if r["status"] == "failed"} == {"empty.mp4", "noise.avi", "cut.mp4"}
    assert all(rows[n]["error"] for n in ("empty.mp4", "noise.avi", "cut.mp4"))
    assert rows["empty.mp4"]["error"].startswith("empty file")
    assert rows["notes.txt"]["status"] == "skipped"
    assert len(_entries(result.store)) == 2


def test_failure_injected_mid_run_leaves_only_whole_entries_and_rerun_finishes(tmp_path, synth_dir):
    items = from_folder(synth_dir).items

    def boom(row, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(row)
        if len(seen) == 4:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        extract(items, out=tmp_path, backbone=SMALL, config=FAST, progress=False, on_video_done=boom)
    store = extract(items[:0], out=tmp_path, backbone=SMALL, config=FAST, progress=False).store
    assert len(_entries(store)) == 4
    for entry in _entries(store):
        FeatureStore.read(entry)  # every entry on disk loads
    rerun = extract(items, out=tmp_path, backbone=SMALL, config=FAST, progress=False)
    assert (rerun.reused, rerun.extracted) == (4, 5)


@pytest.mark.slow
def test_killed_process_resumes_where_it_stopped(tmp_path, synth_dir):
    """SIGKILL (no cleanup at all) after 3 videos; the rerun does only the rest."""
    script = textwrap.dedent(f"""
        import os, signal
        from vidseq.config import BackboneConfig, ExtractConfig
        from vidseq.datasets import from_folder
        from vidseq.features import extract
        done = []
        def kill(row):
            done.append(row)
            if len(done) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        extract(from_folder({str(synth_dir)!r}).items, out={str(tmp_path)!r},
                backbone=BackboneConfig(input_size=96), config=ExtractConfig(num_workers=1, batch_size=4),
                progress=False, on_video_done=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    store_dir = next(tmp_path.glob("efficientnet_lite0-*"))
    store = FeatureStore.load_existing(store_dir)
    assert len(_entries(store)) == 3
    rerun = extract(from_folder(synth_dir).items, out=tmp_path, backbone=SMALL, config=FAST, progress=False)
    assert (rerun.reused, rerun.extracted) == (3, 6)
    assert not list(store.features_dir.glob(".tmp-*")), "temporaries of the killed run are cleaned"


def test_long_video_is_chunked_and_spilled_to_disk_with_identical_features(tmp_path, synth_dir, monkeypatch):
    video = sorted(synth_dir.rglob("*.mp4"))[0]
    every = SamplingConfig(mode="all")
    whole = extract(
        [*discover_videos(video).items], out=tmp_path / "a", backbone=SMALL, sampling=every, config=FAST, progress=False
    )
    batches = []
    original = extract_module._Runner._forward
    monkeypatch.setattr(extract_module._Runner, "_forward", lambda self, f: batches.append(len(f)) or original(self, f))
    monkeypatch.setattr(engine_module, "_IN_MEMORY_LIMIT", 1024)  # force the memmap path
    chunked = extract(
        discover_videos(video).items,
        out=tmp_path / "b",
        backbone=SMALL,
        sampling=every,
        config=ExtractConfig(num_workers=0, batch_size=4, chunk_frames=3),
        progress=False,
    )
    assert max(batches) <= 4 + 3 - 1 and sum(batches) == 12
    np.testing.assert_allclose(chunked.store.load(video).features, whole.store.load(video).features, atol=1e-4)
    assert not list(chunked.store.features_dir.glob(".tmp-*"))


@pytest.mark.slow
def test_yolo_backbone_from_yaml_extracts(tmp_path, synth_dir):
    items = from_folder(synth_dir).items[:2]
    cfg = BackboneConfig(name="yolo", weights="yolov8n.yaml", input_size=160)
    result = extract(items, out=tmp_path, backbone=cfg, sampling=SamplingConfig(count=4), config=FAST, progress=False)
    assert result.ok
    features = result.store.load(items[0].path).features
    assert features.shape == (4, 256) and np.isfinite(features).all()
    key = json.loads((result.store.directory / "store.json").read_text())["key"]
    assert key["backbone"]["fit"] == "letterbox"
