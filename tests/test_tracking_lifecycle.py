"""MLflow runs end truthfully: real `vidseq` processes killed mid-run (SIGTERM, Ctrl-C, kill -9).

A tiny pipeline (synth -> extract -> train: 2 classes x 6 videos of 8 frames, a GRU of 16) is
extracted once for the module; each test copies its work folder and a migrated sqlite store,
starts `vidseq run` or `vidseq train --track` in a subprocess, waits until a few epochs are
logged, and kills it. MLflow is read back with MlflowClient, as the UI would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from vidseq.tracking import open_tracker

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*")

EPOCHS = 40  # about 20 ms each: the kill after epoch 3 lands mid-training with a wide margin
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr")
PIPELINE = f"""\
name: tiny
experiment: vidseq-tiny
workdir: w
config:
  synth: {{classes: [grow, shrink], videos_per_class: 6, num_frames: 8, size: 64}}
  sampling: {{count: 6}}
  model: {{hidden_size: 16}}
  extract: {{num_workers: 0}}
  train: {{epochs: {EPOCHS}, patience: 1000}}
stages: [synth, extract, train]
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    for name in ("VIDSEQ_DEBUG", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background pytest may pass SIGINT ignored


class Proc:
    """A `vidseq` subprocess whose output is collected by threads while the test polls MLflow."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "vidseq", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            preexec_fn=_default_sigint,
        )  # noqa: PLW1509 (no lock taken)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # a hang: SIGABRT makes faulthandler (PYTHONFAULTHANDLER) print every thread's stack
            self.popen.send_signal(signal.SIGABRT)
            self.popen.wait(30)
            for thread in self._threads:
                thread.join(10)
            stacks = "\n".join(self.err[-120:])
            raise AssertionError(f"still running {timeout} s after it was asked to stop; threads:\n{stacks}") from None
        for thread in self._threads:
            thread.join(10)
        return code

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            assert self.popen.poll() is None, f"exited {self.popen.returncode}: {self.err[-20:]}"
            assert time.monotonic() < deadline, f"no {text!r} in {self.out}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """The pipeline file, a work folder with synth and extract done, and a migrated sqlite store."""
    root = tmp_path_factory.mktemp("lifecycle")
    (root / "tiny.yaml").write_text(PIPELINE)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseq",
            "run",
            str(root / "tiny.yaml"),
            "--workdir",
            str(root / "w"),
            "--no-tracking",
            "-q",
            "-o",
            "train.epochs=1",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (marker,) = (root / "w" / "extract").glob("*/stage.json")
    open_tracker(uri=f"sqlite:///{root / 'pristine.db'}", experiment="warm-up")
    return {
        "pipeline": root / "tiny.yaml",
        "work": root / "w",
        "db": root / "pristine.db",
        "store": Path(json.loads(marker.read_text())["outputs"]["store"]),
    }


@pytest.fixture
def case(prepared, tmp_path) -> dict[str, object]:
    """This test's copies: the work folder and the store (its URI)."""
    shutil.copytree(prepared["work"], tmp_path / "w")
    shutil.copy(prepared["db"], tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = ["run", str(prepared["pipeline"]), "--workdir", str(tmp_path / "w"), "--tracking-uri", uri, "-q"]
    return {"uri": uri, "run": run, "store": prepared["store"], "tmp": tmp_path}


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def _wait_for_epochs(uri: str, experiment: str, run_name: str, epochs: int, proc: Proc, timeout: float = 60) -> str:
    """Block until the RUNNING run ``run_name`` has ``epochs`` train_loss values; its id.

    An epoch of this tiny GRU takes about 20 ms, so the poll reads the sqlite file itself (one
    query, a few ms) rather than through MlflowClient, whose store set-up per call took seconds
    on a loaded machine: long enough for the training to finish before the signal was sent (it
    then landed in the interpreter's teardown, and the process exited 0 with its run FINISHED).
    """
    db = uri.removeprefix("sqlite:///")
    query = """
        SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
        WHERE e.name = ? AND r.name = ? AND r.status = 'RUNNING'
          AND (SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'train_loss') >= ?
    """
    deadline = time.monotonic() + timeout
    while True:
        assert proc.popen.poll() is None, f"exited {proc.popen.returncode} before the kill: {proc.err[-20:]}"
        assert time.monotonic() < deadline, "training did not log epochs in time"
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            found = connection.execute(query, (experiment, run_name, epochs)).fetchone()
        if found is not None:
            return found[0]
        time.sleep(0.01)


def _assert_one_value_per_epoch(uri: str, run_id: str) -> None:
    client = MlflowClient(uri)
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), f"{key}: {len(steps)} values for {EPOCHS} epochs"


def test_sigterm_ends_the_pipeline_runs_killed_and_exits_143(case):
    uri = case["uri"]
    proc = Proc(*case["run"])
    proc.wait_for("[train] running")
    _wait_for_epochs(uri, "vidseq-tiny", "train", 3, proc)
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, proc.err[-20:]
    stopped = [line for line in proc.err if "SIGTERM" in line]
    assert len(stopped) == 1 and "KILLED" in stopped[0] and "Traceback" not in "\n".join(proc.err)
    runs = {r.info.run_name: r for r in _runs(uri, "vidseq-tiny")}
    assert set(runs) == {"tiny", "synth", "extract", "train"}
    for name in ("tiny", "train"):  # the parent run and the stage that was running
        run = runs[name]
        assert run.info.status == "KILLED" and run.info.end_time and run.info.end_time >= run.info.start_time
        assert run.data.tags["vidseq.end_reason"] == "stopped by SIGTERM"
        assert run.info.run_id in stopped[0]
    assert runs["synth"].info.status == runs["extract"].info.status == "FINISHED"
    assert runs["train"].data.tags["vidseq.pipeline"] == "tiny" and runs["train"].data.tags["vidseq.pid"]
    kind = MlflowClient(uri).get_experiment_by_name("vidseq-tiny").tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"  # the UI shows the training runs, not its GenAI pages


def test_ctrl_c_ends_the_training_run_killed_exits_130_and_resume_logs_each_epoch_once(case):
    uri, tmp = case["uri"], case["tmp"]
    args = [
        "train",
        str(case["store"]),
        "--out",
        str(tmp / "run"),
        "--tracking-uri",
        uri,
        "-q",
        "--epochs",
        str(EPOCHS),
        "-o",
        "train.patience=1000",
        "-o",
        "model.hidden_size=16",
    ]
    proc = Proc(*args)
    killed_id = _wait_for_epochs(uri, "vidseq-train", "train", 3, proc)
    proc.popen.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.err[-20:]
    stopped = [line for line in proc.err if "Ctrl-C" in line]
    assert len(stopped) == 1 and killed_id in stopped[0] and "KILLED" in stopped[0]
    killed = MlflowClient(uri).get_run(killed_id)
    assert killed.info.status == "KILLED" and killed.info.end_time
    done = len(MlflowClient(uri).get_metric_history(killed_id, "train_loss"))
    assert 3 <= done < EPOCHS

    resumed = Proc(*args, "--resume")
    assert resumed.wait(120) == 0, resumed.err[-30:]
    (run,) = [r for r in _runs(uri, "vidseq-train") if r.info.run_id != killed_id]
    assert run.info.status == "FINISHED"
    _assert_one_value_per_epoch(uri, run.info.run_id)  # the whole curve, each epoch once


def test_kill_9_leaves_runs_that_the_next_run_ends_and_the_resumed_train_stage_logs_each_epoch_once(case):
    uri = case["uri"]
    proc = Proc(*case["run"])
    proc.wait_for("[train] running")
    _wait_for_epochs(uri, "vidseq-tiny", "train", 3, proc)
    proc.popen.kill()
    assert proc.wait(30) == -signal.SIGKILL
    left = {r.info.run_id: r for r in _runs(uri, "vidseq-tiny") if r.info.status == "RUNNING"}
    assert {r.info.run_name for r in left.values()} == {"tiny", "train"}  # what kill -9 leaves
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("vidseq-tiny").experiment_id
    here = {"vidseq.pipeline": "tiny", "vidseq.host": socket.gethostname()}
    alive = client.create_run(experiment_id, run_name="alive", tags={**here, "vidseq.pid": str(os.getpid())})
    elsewhere = client.create_run(
        experiment_id,
        run_name="elsewhere",
        tags={**here, "vidseq.host": "another-host", "vidseq.pid": str(proc.popen.pid)},
    )

    again = Proc(*case["run"])
    assert again.wait(120) == 0, again.err[-30:]
    notes = [line for line in again.out if "marked KILLED" in line]
    assert len(notes) == 1 and again.out.index(notes[0]) < again.out.index(
        next(line for line in again.out if line.startswith("[synth]"))
    )  # said before starting
    for run_id, run in left.items():
        ended = client.get_run(run_id)
        assert ended.info.status == "KILLED" and ended.info.end_time, run.info.run_name
        assert "which is gone" in ended.data.tags["vidseq.end_reason"]
    (parent_id,) = [run_id for run_id, run in left.items() if run.info.run_name == "tiny"]
    assert parent_id in notes[0] and "and 1 stage run(s)" in notes[0]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # a live owner's run is left alone
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # so is another host's
    new = [
        r
        for r in _runs(uri, "vidseq-tiny")
        if r.info.run_id not in left and r.info.run_name == "train" and r.info.status == "FINISHED"
    ]
    assert len(new) == 1 and "[train] running" in "\n".join(again.out)  # the train stage resumed
    _assert_one_value_per_epoch(uri, new[0].info.run_id)


def test_experiments_are_tagged_for_model_training(tmp_path, prepared):
    shutil.copy(prepared["db"], tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    def kind(name: str) -> str | None:
        return client.get_experiment_by_name(name).tags.get("mlflow.experimentKind")

    open_tracker(uri=uri, experiment="fresh")
    assert kind("fresh") == "custom_model_development"
    client.create_experiment("older")  # made by an earlier vidseq: no kind
    client.create_experiment("guessed", tags={"mlflow.experimentKind": "genai_development_inferred"})
    client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("older", "guessed", "chosen"):
        open_tracker(uri=uri, experiment=name)
    assert kind("older") == kind("guessed") == "custom_model_development"
    assert kind("chosen") == "genai_development"  # a kind someone chose in the UI stays
