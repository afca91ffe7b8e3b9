"""`vidseq train` logged to MLflow on its own and under DDP: one run, from rank 0 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")


def vidseq(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    env.pop("VIDSEQ_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vidseq", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A real feature store: 2 synthetic classes x 10 videos through the default backbone."""
    root = tmp_path_factory.mktemp("train-tracking")
    made = vidseq(
        "synth",
        str(root / "data"),
        "-o",
        "synth.classes=[grow,shrink]",
        "--per-class",
        "10",
        "--frames",
        "12",
        "--size",
        "64",
    )
    assert made.returncode == 0, made.stderr
    done = vidseq(
        "extract", str(root / "data" / "labels.csv"), "--out", str(root / "features"), "-q", "-o", "sampling.count=8"
    )
    assert done.returncode == 0, done.stderr
    return root / "features"


def runs(uri: str, experiment: str = "vidseq-train"):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


@pytest.mark.slow
def test_train_logs_one_run_with_curves_reports_and_model(store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = vidseq("train", str(store), "--out", str(tmp_path / "run"), "-q", "--epochs", "3", "--tracking-uri", uri)
    assert out.returncode == 0, out.stderr
    assert "MLflow run" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout
    (run,) = runs(uri)
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "3"
    assert {"test_accuracy", "best_val_accuracy", "val_accuracy", "train_loss"} <= set(run.data.metrics)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert (tmp_path / "run" / "model" / "vidseq.json").is_file()
    again = vidseq("train", str(store), "--out", str(tmp_path / "run"), "-q", "--tracking-uri", uri)
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    assert len(runs(uri)) == 1  # refused before a run was started


@pytest.mark.slow
def test_ddp_training_in_two_processes_logs_one_run_from_rank_zero(store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = vidseq(
        "train",
        str(store),
        "--out",
        str(tmp_path / "ddp"),
        "-q",
        "--epochs",
        "4",
        "--ddp",
        "2",
        "--tracking-uri",
        uri,
        "-o",
        "train.batch_size=4",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("best epoch") == 1  # rank 0 reports, the other rank is silent
    (run,) = runs(uri)  # one MLflow run for two processes
    assert run.info.status == "FINISHED"
    assert [p.name for p in sorted((tmp_path / "ddp").glob("*.pt"))] == ["best.pt", "last.pt"]
    import json

    assert len(json.loads((tmp_path / "ddp" / "history.json").read_text())) == 4
