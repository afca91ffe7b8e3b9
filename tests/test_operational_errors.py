"""Operational errors are one red line, never a traceback: an output that cannot be written (checked
before any work), a full disk mid-run (what was written stays), a dangling link in a dataset, and a
resume against another run's feature store.

Tests run as root here, where a chmod'ed folder stays writable: an unwritable output is a path
under a regular file (NotADirectoryError) or under /proc (which even root cannot create in).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vidseq.cli import app
from vidseq.config import BackboneConfig, ExtractConfig, ModelConfig, SamplingConfig, SynthConfig, TrainConfig
from vidseq.datasets import discover_videos
from vidseq.features import FeatureStore, VideoFeatures, extract
from vidseq.outputs import OutputError, check_writable
from vidseq.synth import generate_dataset
from vidseq.training.checkpoint import CheckpointError
from vidseq.training.train import train

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "pipelines" / "folder.yaml"
FAST = ["-o", "backbone.input_size=64", "-o", "sampling.count=2", "-o", "extract.num_workers=0"]
SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def vidseq(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("VIDSEQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """2 classes x 4 synthetic videos (8 frames, 32 px), their feature store and a 1-epoch run."""
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    generate_dataset(data, SynthConfig(classes=["grow", "shrink"], videos_per_class=4, num_frames=8, size=32))
    result = extract(
        discover_videos(data),
        out=root / "features",
        backbone=BackboneConfig(input_size=64),
        sampling=SamplingConfig(count=2),
        config=ExtractConfig(num_workers=0),
        progress=False,
    )
    run = train(
        model_config=ModelConfig(hidden_size=8),
        config=TrainConfig(epochs=1, batch_size=4),
        features=result.store.directory,
        out=root / "run",
        progress=False,
    )
    (root / "afile").write_text("a regular file, where a folder would have to be\n")
    return {"root": root, "data": data, "store": result.store.directory, "checkpoint": run.best_checkpoint}


def bad_out(world: dict[str, Path], kind: str) -> Path:
    return world["root"] / "afile" / "out" if kind == "file" else Path("/proc/vidseq-out")


def command(world: dict[str, Path], name: str, out: Path) -> list[str | Path]:
    data, store, checkpoint = world["data"], world["store"], world["checkpoint"]
    return {
        "synth": ["synth", out, "--per-class", "4", "--frames", "8", "--size", "32"],
        "extract": ["extract", data, "--out", out, *FAST, "-q"],
        "train": ["train", store, "--out", out, "--epochs", "1", "-q"],
        "evaluate": ["evaluate", checkpoint, "--out", out],
        "predict": ["predict", data, "-m", checkpoint, "--out", out / "labels.csv", "-q"],
        "run": ["run", FOLDER, "--workdir", out, "--no-tracking", "-q", "-o", f"data.source={data}", *FAST],
    }[name]


# probe only reads; every other command checks its output before its work
CASES = [
    (name, kind) for name in ("synth", "extract", "train", "evaluate", "predict", "run") for kind in ("file", "proc")
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_every_command_refuses_an_unwritable_output_in_one_line(world, name, kind):
    out = bad_out(world, kind)
    result = vidseq(*command(world, name, out))
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert line.startswith("error:") and str(out) in line


def test_check_writable_names_the_folder_what_it_is_for_and_the_fix(tmp_path):
    assert check_writable(tmp_path / "new" / "deep", what="x") == tmp_path / "new" / "deep"
    assert (tmp_path / "new" / "deep").is_dir() and not list((tmp_path / "new" / "deep").iterdir())
    (tmp_path / "afile").write_text("")
    with pytest.raises(
        OutputError,
        match=r"cannot write to .*afile/out \(train --out\): NotADirectoryError.*"
        r"choose another location",
    ):
        check_writable(tmp_path / "afile" / "out", what="train --out")
    with pytest.raises(OutputError, match=r"afile \(predict --out\): .*afile is a file, not a folder"):
        check_writable(tmp_path / "afile", what="predict --out")
    with pytest.raises(OutputError, match=r"cannot write to /proc/vidseq-out \(x\): FileNotFoundError"):
        check_writable("/proc/vidseq-out", what="x")


def test_a_full_disk_mid_extraction_is_one_line_and_keeps_the_entries_written(world, tmp_path, monkeypatch):
    import vidseq.atomic

    real_replace = os.replace
    entries: list[str] = []

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".npz"):
            if len(entries) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            entries.append(str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(vidseq.atomic.os, "replace", replace)
    out = tmp_path / "features"
    result = CliRunner().invoke(
        app, ["extract", str(world["data"]), "--out", str(out), *FAST, "-q"], env={"COLUMNS": "200"}
    )
    monkeypatch.undo()
    assert result.exit_code == 2, (result.output, result.exception)
    line = one_error_line(result.stderr)
    assert line.startswith("error: ") and ".npz: no space left on device" in line
    assert "kept" in line and "run the same command again" in line
    store = FeatureStore.load_existing(next(out.iterdir()))
    done = [row for row in store.read_manifest() if row["status"] == "done"]
    assert len(done) == 3 and {str(store.directory / row["file"]) for row in done} == set(entries)
    assert all(len(store.read(store.directory / row["file"]).features) == 2 for row in done)
    assert not list(store.directory.rglob(".tmp-*"))
    again = CliRunner().invoke(app, ["extract", str(world["data"]), "--out", str(out), *FAST, "-q"])
    assert again.exit_code == 0 and "5 extracted, 3 already done" in again.stdout


def test_a_dangling_link_in_a_class_folder_is_a_failed_row_not_a_crash(world, tmp_path):
    data = tmp_path / "clips"
    shutil.copytree(world["data"], data)
    (data / "labels.csv").unlink()  # a plain folder per class, as a user has it
    (data / "synth.json").unlink()
    link = data / "grow" / "gone.mp4"
    link.symlink_to(tmp_path / "deleted.mp4")
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(FOLDER),
            "--workdir",
            str(tmp_path / "w"),
            "--no-tracking",
            "-q",
            "-o",
            f"data.source={data}",
            "-o",
            "train.epochs=1",
            "-o",
            "model.hidden_size=8",
            *FAST,
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "8 extracted, 0 already done, 1 failed" in result.stdout
    manifest = next((tmp_path / "w" / "extract").rglob("manifest.csv")).read_text()
    row = next(line for line in manifest.splitlines() if "gone.mp4" in line)
    assert ",failed,file not found," in row


def _hand_store(root: Path, videos: Path, dim: int) -> FeatureStore:
    """Two order-only classes x 10 fake videos (their bytes are their content) with ``dim`` features."""
    store = FeatureStore.open(root, {"hand": dim}, name=f"hand{dim}")
    rng = np.random.default_rng(0)
    rows = []
    videos.mkdir(parents=True, exist_ok=True)
    for label, sign in (("up", 1.0), ("down", -1.0)):
        for i, split in enumerate(SPLITS):
            video = videos / f"{label}_{i}.mp4"
            video.write_bytes(f"{label} {i}".encode())
            feats = rng.normal(0, 0.2, (8, dim)).astype(np.float32)
            feats[:, 0] += sign * np.linspace(-1, 1, 8)
            entry = store.write(video, VideoFeatures(feats, np.arange(8), np.arange(8) / 10))
            rows.append(
                {
                    "path": str(video),
                    "label": label,
                    "split": split,
                    "status": "done",
                    "frames": 8,
                    "file": entry.relative_to(store.directory),
                }
            )
    store.add_labels(["up", "down"])
    store.write_manifest(rows)
    return store


def test_resume_on_a_store_of_another_feature_size_names_both_stores(tmp_path):
    four = _hand_store(tmp_path / "features", tmp_path / "videos", 4)
    six = _hand_store(tmp_path / "features", tmp_path / "videos", 6)
    run = tmp_path / "run"
    train(config=TrainConfig(features=str(four.directory), epochs=1, batch_size=8), out=run, progress=False)
    with pytest.raises(
        CheckpointError,
        match=rf"cannot resume {run / 'last.pt'}: .*{four.directory}.*4 features.*"
        rf"{six.directory}.*6 features; pass --overwrite",
    ):
        train(
            config=TrainConfig(features=str(six.directory), epochs=2, batch_size=8),
            out=run,
            resume=True,
            progress=False,
        )
    result = CliRunner().invoke(
        app, ["train", str(six.directory), "--out", str(run), "--resume", "--epochs", "2", "-q"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, (result.output, result.exception)
    line = one_error_line(result.stderr)
    assert str(four.directory) in line and str(six.directory) in line
    assert "--overwrite" in line and "the run's own store" in line
    again = train(
        config=TrainConfig(features=str(four.directory), epochs=2, batch_size=8), out=run, resume=True, progress=False
    )  # the run's own store resumes as before
    assert len(again.history) == 2
