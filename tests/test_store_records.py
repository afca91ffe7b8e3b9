"""The store's records, claims, conversion of old stores, and checkpoints that find their stores."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import TrainConfig
from vidseq.errors import VidseqError
from vidseq.features import FeatureStore, VideoFeatures, key_digest
from vidseq.features.claims import STALE_SECONDS, Claims
from vidseq.training.evaluate import evaluate
from vidseq.training.sequences import load_sequences
from vidseq.training.train import train

SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def _hand_store(root: Path, videos: Path) -> FeatureStore:
    """Two order-only classes x 10 fake videos (their bytes are their content) with features."""
    store = FeatureStore.open(root, {"hand": 1}, name="hand")
    rng = np.random.default_rng(0)
    rows = []
    videos.mkdir(parents=True, exist_ok=True)
    for label, sign in (("up", 1.0), ("down", -1.0)):
        for i, split in enumerate(SPLITS):
            video = videos / f"{label}_{i}.mp4"
            video.write_bytes(f"{label} {i}".encode())
            steps = 8
            feats = rng.normal(0, 0.2, (steps, 4)).astype(np.float32)
            feats[:, 0] += sign * np.linspace(-1, 1, steps)
            entry = store.write(video, VideoFeatures(feats, np.arange(steps), np.arange(steps) / 10))
            rows.append(
                {
                    "path": str(video),
                    "label": label,
                    "split": split,
                    "status": "done",
                    "frames": steps,
                    "file": entry.relative_to(store.directory),
                }
            )
    store.add_labels(["up", "down"])
    store.write_manifest(rows)
    return store


def test_a_checkpoint_finds_its_store_from_any_directory_and_names_a_moved_one(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = _hand_store(Path("features"), Path("videos"))  # relative, as a user in this folder types it
    relative = Path("features") / store.directory.name
    run = train(
        config=TrainConfig(features=str(relative), epochs=2, seed=0, batch_size=8),
        out="run",
        progress=False,
        overwrite=True,
    )
    checkpoint = (work / run.best_checkpoint).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = evaluate(checkpoint, out=elsewhere / "eval")
    assert result.split == "test" and (elsewhere / "eval").is_dir()
    moved = tmp_path / "moved"
    shutil.move(str(work / "features"), moved)
    with pytest.raises(
        VidseqError,
        match=rf"feature store {work / relative} \(key {key_digest(store.key)}\) "
        r"is not there.*--features",
    ):
        evaluate(checkpoint)
    again = evaluate(checkpoint, features=moved / store.directory.name, out=elsewhere / "eval2")
    assert again.metrics["accuracy"] == result.metrics["accuracy"]


def test_splits_follow_the_video_not_its_path_spelling(tmp_path, monkeypatch):
    """A checkpoint records each video's split by content id: a new spelling keeps its split."""
    monkeypatch.chdir(tmp_path)
    store = _hand_store(tmp_path / "features", tmp_path / "videos")
    run = train(
        config=TrainConfig(features=str(store.directory), epochs=1, seed=0, batch_size=8),
        out="run",
        progress=False,
        overwrite=True,
    )
    (tmp_path / "linked").symlink_to(tmp_path / "videos")
    rows = store.read_manifest()
    for row in rows:  # another writer met the same videos through a symlinked folder
        row["path"] = str(tmp_path / "linked" / Path(row["path"]).name)
    store.write_manifest(rows)
    state = __import__("torch").load(run.best_checkpoint, weights_only=True)
    data = load_sequences(store)
    assert all(p.startswith(str(tmp_path / "linked")) for p in data.paths)
    assert [state["split_ids"][i] for i in data.ids] == [
        state["splits"][str(tmp_path / "videos" / Path(p).name)] for p in data.paths
    ]
    assert evaluate(run.best_checkpoint, out=tmp_path / "e").metrics["confusion"].sum() == 4


def test_a_store_of_the_first_layout_is_converted_on_open(tmp_path):
    """A store written before records (manifest.csv only, no ``format``) opens with every row."""
    store = _hand_store(tmp_path / "features", tmp_path / "videos")
    rows = store.read_manifest()
    shutil.rmtree(store.records_dir)
    record = json.loads((store.directory / "store.json").read_text())
    record.pop("format")
    (store.directory / "store.json").write_text(json.dumps(record))
    with store.manifest_path.open("w", newline="") as fh:  # the old columns only
        writer = csv.DictWriter(
            fh, fieldnames=["path", "label", "split", "status", "error", "frames", "file"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    opened = FeatureStore.load_existing(store.directory)
    assert len(list(opened.records_dir.glob("*.json"))) == 20
    assert json.loads((store.directory / "store.json").read_text())["format"] == 2
    assert [r["video"] for r in opened.read_manifest()] == [r["video"] for r in rows]
    assert len(load_sequences(opened)) == 20


def test_an_entry_without_its_record_is_recorded_on_the_next_run_without_decoding(tmp_path):
    """A writer killed between an entry and its record: the next plan records the entry as done."""
    from vidseq.backbones import BackboneSpec
    from vidseq.config import SamplingConfig
    from vidseq.datasets import VideoItem
    from vidseq.features.plan import plan_run

    spec = BackboneSpec(name="toy", weights=None, feature_dim=3, input_size=8, resize=8, mean=(0, 0, 0), std=(1, 1, 1))
    video = tmp_path / "a.mp4"
    video.write_bytes(os.urandom(64))
    run = plan_run([VideoItem(video, "x")], out=tmp_path / "out", spec=spec, sampling=SamplingConfig(), recipe={})
    run.appearance.store.write(video, VideoFeatures(np.ones((2, 3)), np.arange(2), np.arange(2.0)))
    run.discard()  # as if killed before the record: no record, no claim
    again = plan_run([VideoItem(video, "x")], out=tmp_path / "out", spec=spec, sampling=SamplingConfig(), recipe={})
    assert again.todo == [] and again.appearance.result.reused == 1
    assert again.appearance.store.read_manifest()[0]["status"] == "done"


def test_claims_are_exclusive_and_a_dead_or_silent_owners_claim_is_taken_over(tmp_path):
    mine, other = Claims(tmp_path), Claims(tmp_path)
    assert mine.acquire("v1")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / "v2.claim").write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid}))
        assert not other.acquire("v2") and not other.is_free("v2")  # a live process holds it
    finally:
        holder.communicate(b"")
    assert other.is_free("v2") and other.acquire("v2")  # its owner is gone: taken over
    (tmp_path / "v3.claim").write_text(json.dumps({"host": "another-host", "pid": 1}))
    assert not other.acquire("v3")  # another host's claim: only its age tells
    old = time.time() - STALE_SECONDS - 1
    os.utime(tmp_path / "v3.claim", (old, old))
    assert other.acquire("v3")
    mine.release_all()
    assert not (tmp_path / "v1.claim").exists() and (tmp_path / "v2.claim").exists()


def test_a_failed_video_is_a_record_and_a_rerun_retries_it(tmp_path):
    """A broken file is recorded as failed; once it is a real video, the rerun extracts it."""
    from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig
    from vidseq.datasets import VideoItem
    from vidseq.features import extract
    from vidseq.io import write_video
    from vidseq.synth import render_clip

    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    write_video(good, render_clip("grow", np.random.default_rng(0), num_frames=8, size=32), fps=10.0)
    bad.write_text("not a video")
    options = dict(
        out=tmp_path / "f",
        backbone=BackboneConfig(input_size=64),
        sampling=SamplingConfig(count=2),
        config=ExtractConfig(num_workers=0),
        progress=False,
    )
    first = extract([VideoItem(good, "grow"), VideoItem(bad, "grow")], **options)
    assert [row["path"] for row in first.failed] == [str(bad)]
    statuses = {Path(r["path"]).name: r["status"] for r in first.store.read_manifest()}
    assert statuses == {"good.mp4": "done", "bad.mp4": "failed"}
    write_video(bad, render_clip("shrink", np.random.default_rng(1), num_frames=8, size=32), fps=10.0)
    again = extract([VideoItem(good, "grow"), VideoItem(bad, "grow")], **options)
    assert (again.extracted, again.reused, again.failed) == (1, 1, [])
    rows = again.store.read_manifest()
    assert sorted(r["status"] for r in rows) == ["done", "done"] and len(rows) == 2
