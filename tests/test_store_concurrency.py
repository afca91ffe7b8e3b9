"""The shared feature store with real processes: concurrent writers, kill -9, SIGTERM, path spellings.

Every test here runs the real CLI (``python -m vidseq.cli``-style subprocesses) on tiny synthetic
videos; the README's "What vidseq guarantees" section points at them.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import SynthConfig
from vidseq.features import FeatureStore
from vidseq.synth import generate_dataset
from vidseq.training.sequences import load_sequences

pytestmark = pytest.mark.slow

# real EfficientNet-Lite0 weights on 64 px inputs, 4 frames a video, decoding in the main process
FAST = [
    "-o",
    "backbone.input_size=64",
    "-o",
    "sampling.count=4",
    "-o",
    "extract.num_workers=0",
    "-o",
    "extract.batch_size=16",
    "-q",
]
CLI = "import sys; from vidseq.cli import main; sys.argv = ['vidseq', *sys.argv[1:]]; main()"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 tiny labelled videos (8 classes x 4) and their labels.csv (path,label,split)."""
    root = tmp_path_factory.mktemp("clips")
    generate_dataset(root, SynthConfig(videos_per_class=4, num_frames=8, size=32))
    return root


@pytest.fixture(scope="module")
def reference(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Features of every video from one uninterrupted single-process run, by content id."""
    out = tmp_path_factory.mktemp("reference")
    done = _vidseq("extract", str(clips / "labels.csv"), "--out", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    return _features_by_video(_store(out))


def _vidseq(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600, **kwargs
    )


def _start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _store(root: Path) -> FeatureStore:
    (folder,) = [p.parent for p in root.glob("*/store.json")]
    return FeatureStore.load_existing(folder)


def _features_by_video(store: FeatureStore) -> dict[str, np.ndarray]:
    return {
        row["video"]: store.read(store.directory / row["file"]).features
        for row in store.read_manifest()
        if row["status"] == "done"
    }


def _rows(clips: Path) -> list[dict[str, str]]:
    with (clips / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict[str, str]], clips: Path) -> Path:
    """A CSV of ``rows`` with absolute paths (so it can live anywhere)."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows({**row, "path": str(clips / row["path"])} for row in rows)
    return path


def _overlapping_csvs(clips: Path, folder: Path, writers: int) -> list[Path]:
    """``writers`` CSVs, each three quarters of the videos, in different orders, together all."""
    rows = _rows(clips)
    folder.mkdir(parents=True, exist_ok=True)
    csvs = []
    for w in range(writers):
        mine = [row for i, row in enumerate(rows) if i % writers != w or writers == 1]
        if writers == 2:
            mine = rows[:24] if w == 0 else rows[8:]
        random.Random(w).shuffle(mine)
        csvs.append(_write_csv(folder / f"w{w}.csv", mine, clips))
    return csvs


def _assert_complete(store: FeatureStore, reference: dict[str, np.ndarray]) -> None:
    """Every video once, done, bit-identical to the single run; no temporaries, no claims."""
    rows = store.read_manifest()
    videos = [row["video"] for row in rows]
    assert len(videos) == len(set(videos)) == len(reference) == 32
    assert all(row["status"] == "done" for row in rows), [r for r in rows if r["status"] != "done"]
    got = _features_by_video(store)
    assert set(got) == set(reference)
    for video, features in reference.items():
        np.testing.assert_array_equal(got[video], features)
    assert not list(store.directory.rglob(".tmp-*"))
    assert not list(store.claims.directory.glob("*.claim"))
    assert len(load_sequences(store)) == 32


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_lose_nothing_and_extract_each_video_once(writers, clips, reference, tmp_path):
    out = tmp_path / "features"
    procs = [
        _start("extract", str(csv_path), "--out", str(out), *FAST)
        for csv_path in _overlapping_csvs(clips, tmp_path / "csv", writers)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * writers, outputs
    store = _store(out)
    _assert_complete(store, reference)
    extracted = sum(int(stdout.split(" extracted")[0].split()[-1]) for stdout, _ in outputs)
    assert extracted == 32, f"each video extracted once, not {extracted} times: {outputs}"
    with store.manifest_path.open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 32  # the view people read agrees with the records


def test_kill_9_of_four_writers_at_random_moments_then_a_rerun_completes(clips, reference, tmp_path):
    out = tmp_path / "features"
    rng = random.Random(7)
    procs = [
        _start("extract", str(csv_path), "--out", str(out), *FAST)
        for csv_path in _overlapping_csvs(clips, tmp_path / "csv", 4)
    ]
    for proc in procs:
        time.sleep(rng.uniform(0.5, 4.0))
        proc.kill()
    for proc in procs:
        proc.communicate(timeout=60)
    rerun = _vidseq("extract", str(clips / "labels.csv"), "--out", str(out), *FAST)
    assert rerun.returncode == 0, rerun.stderr
    _assert_complete(_store(out), reference)


def test_sigterm_and_ctrl_c_stop_with_a_consistent_manifest_and_one_line(clips, reference, tmp_path):
    out = tmp_path / "features"
    stopped = 0

    def records() -> int:  # records written (not a writer's temporary .tmp-* file)
        return sum(1 for p in out.glob("*/records/*.json") if not p.name.startswith("."))

    def extracting(pid: int) -> bool:  # past start-up: the process holds claims of its own
        for claim in out.glob("*/claims/*.claim"):
            try:
                if f'"pid": {pid}' in claim.read_text():
                    return True
            except FileNotFoundError:  # released meanwhile
                continue
        return False

    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        before = records()
        proc = _start("extract", str(clips / "labels.csv"), "--out", str(out), *FAST)
        deadline = time.monotonic() + 300
        while not (extracting(proc.pid) and records() >= before + 2) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:
            continue  # it finished before the signal landed: nothing to check this time
        assert proc.returncode == code, stderr
        stopped += 1
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "stopped" in lines[0] and "Traceback" not in stderr, (stdout, stderr)
        store = _store(out)
        with store.manifest_path.open(newline="") as fh:
            view = list(csv.DictReader(fh))
        assert sorted(r["video"] for r in view) == sorted(r["video"] for r in store.read_manifest())
        assert not list(store.claims.directory.glob("*.claim"))
    assert stopped, "both runs finished before their signal: the test checked nothing"
    rerun = _vidseq("extract", str(clips / "labels.csv"), "--out", str(out), *FAST)
    assert rerun.returncode == 0, rerun.stderr
    _assert_complete(_store(out), reference)


def test_one_file_by_relative_absolute_symlinked_and_hard_linked_paths_is_one_video(clips, tmp_path):
    """Relative and absolute CSVs, a symlinked folder and a hard link: 32 videos, one split each."""
    rows = _rows(clips)
    (tmp_path / "linked").symlink_to(clips, target_is_directory=True)
    os.link(clips / rows[0]["path"], tmp_path / "hard.mp4")
    with (tmp_path / "rel.csv").open("w", newline="") as fh:  # paths relative to the CSV's folder
        writer = csv.DictWriter(fh, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows({"path": os.path.relpath(clips / r["path"], tmp_path), "label": r["label"]} for r in rows)
    extra = [
        {"path": str(tmp_path / "linked" / rows[1]["path"]), "label": rows[1]["label"], "split": ""},
        {"path": str(tmp_path / "hard.mp4"), "label": rows[0]["label"], "split": ""},
    ]
    with (tmp_path / "links.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(extra)
    out = tmp_path / "features"
    for args, cwd in (
        (["rel.csv"], tmp_path),
        ([str(tmp_path / "rel.csv")], clips),
        ([str(tmp_path / "linked" / "labels.csv")], None),
        (["links.csv"], tmp_path),
    ):
        done = _vidseq("extract", *args, "--out", str(out), *FAST, cwd=cwd)
        assert done.returncode == 0, done.stderr
    store = _store(out)
    rows_after = store.read_manifest()
    assert len(rows_after) == 32 and len({r["video"] for r in rows_after}) == 32
    data = load_sequences(store)
    assert len(data) == len(set(data.ids)) == 32  # so no video can be on two sides of a split


def test_store_files_follow_the_umask(clips, tmp_path):
    """A team's shared store: files are 0666 less the umask (0644 here), not mkstemp's 0600."""
    out = tmp_path / "features"
    done = _vidseq(
        "extract",
        str(_write_csv(tmp_path / "two.csv", _rows(clips)[:2], clips)),
        "--out",
        str(out),
        *FAST,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert done.returncode == 0, done.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".npz", ".csv"}
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes
