"""Stage pipelines: keys, reuse, failure and resume, on the real quickstart pipeline at a small size."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidseq.errors import ConfigError, VidseqError
from vidseq.pipeline import PipelineError, load_pipeline, run_pipeline, stage_directories
from vidseq.pipeline import stages as stage_module

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "pipelines" / "quickstart.yaml"
FOLDER = REPO / "pipelines" / "folder.yaml"
# The quickstart at test size: 2 classes x 6 videos of 8 frames, a small GRU, 3 epochs.
SMALL = [
    "synth.classes=[grow,shrink]",
    "synth.videos_per_class=6",
    "synth.num_frames=8",
    "synth.size=64",
    "sampling.count=6",
    "model.hidden_size=16",
    "train.epochs=3",
    "extract.num_workers=1",
]


def statuses(result) -> dict[str, str]:
    return {r.name: r.status for r in result.stages}


def entry_times(store: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in Path(store, "features").glob("*.npz")}


# -- keys ----------------------------------------------------------------------------------


def test_keys_change_only_where_the_config_is_read():
    base = {s.name: s.key for s in load_pipeline(QUICKSTART, SMALL).stages}
    hidden = {s.name: s.key for s in load_pipeline(QUICKSTART, [*SMALL, "model.hidden_size=32"]).stages}
    assert hidden["synth"] == base["synth"] and hidden["extract"] == base["extract"]
    assert hidden["train"] != base["train"] and hidden["evaluate"] != base["evaluate"]  # evaluate reads train
    speed = {
        s.name: s.key
        for s in load_pipeline(QUICKSTART, [*SMALL, "extract.num_workers=0", "extract.batch_size=7"]).stages
    }
    assert speed == base  # how fast extraction runs is not part of any key
    pooling = {s.name: s.key for s in load_pipeline(QUICKSTART, [*SMALL, "backbone.pooling=avg"]).stages}
    assert pooling["synth"] == base["synth"] and pooling["extract"] != base["extract"]
    assert pooling["train"] != base["train"]  # its input changed


def test_stage_overrides_reach_one_stage_only():
    pipeline = load_pipeline(QUICKSTART, [*SMALL, "train.model.hidden_size=8", "train.train.lr=0.01"])
    assert pipeline.stage("train").config.model.hidden_size == 8
    assert pipeline.stage("evaluate").config.model.hidden_size == 16
    assert pipeline.stage("train").config.train.lr == 0.01 and pipeline.stage("extract").config.train.lr == 0.001
    assert pipeline.stage("extract").config.backbone.pooling == "grid2"  # from the shared config


def test_bad_pipelines_and_overrides_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"'nostage' is not a stage of .*quickstart.yaml"):
        load_pipeline(QUICKSTART, ["nostage.model.hidden_size=8"])
    with pytest.raises(
        ConfigError,
        match=r"(?s)stage train.*unknown key 'model.hiden_size' \(from -o train.model.hiden_size=8\)"
        r".*did you mean 'hidden_size'",
    ):
        load_pipeline(QUICKSTART, ["train.model.hiden_size=8"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [synth, trian]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid pipeline\n  stages.1.name"):
        load_pipeline(bad)
    bad.write_text("name: x\nstages: [synth, synth]\n")
    with pytest.raises(ConfigError, match="stage names must be unique, repeated: synth"):
        load_pipeline(bad)
    bad.write_text("name: x\nconfig: missing.yaml\nstages: [synth]\n")
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found"):
        load_pipeline(bad)
    with pytest.raises(ConfigError, match="no stage 'fit'"):
        run_pipeline(QUICKSTART, SMALL, from_stage="fit", workdir=tmp_path / "w", tracking=False)
    assert not (tmp_path / "w").exists()


def test_config_files_are_read_relative_to_the_pipeline(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "small.yaml").write_text("synth:\n  size: 48\n  num_frames: 5\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nconfig: configs/small.yaml\nstages:\n  - name: synth\n"
        "    config: [configs/small.yaml, {synth: {num_frames: 7}}]\n"
    )
    stage = load_pipeline(path).stage("synth")
    assert (stage.config.synth.size, stage.config.synth.num_frames) == (48, 7)


# -- running -------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_runs_then_reuses_then_retrains_only(tmp_path):
    workdir = tmp_path / "work"
    first = run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False)
    assert statuses(first) == {"synth": "ran", "extract": "ran", "train": "ran", "evaluate": "ran"}
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    store = first.record("extract").outputs["store"]
    before = entry_times(store)
    assert len(before) == 12
    dirs = stage_directories(first.pipeline)
    for name, directory in dirs.items():
        marker = json.loads((directory / "stage.json").read_text())
        assert marker["key"] == first.pipeline.stage(name).key and (directory / "stage_config.yaml").is_file()

    again = run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False)
    assert set(statuses(again).values()) == {"reused"}
    assert again.metrics == first.metrics

    changed = run_pipeline(
        QUICKSTART, [*SMALL, "model.hidden_size=24"], workdir=workdir, tracking=False, progress=False
    )
    assert statuses(changed) == {"synth": "reused", "extract": "reused", "train": "ran", "evaluate": "ran"}
    assert entry_times(store) == before  # no feature file was written again
    assert changed.record("train").directory != first.record("train").directory
    assert (first.record("train").directory / "best.pt").is_file()  # the earlier run is kept

    forced = run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False, from_stage="train")
    assert statuses(forced) == {"synth": "reused", "extract": "reused", "train": "ran", "evaluate": "ran"}
    everything = run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False, force=True)
    assert set(statuses(everything).values()) == {"ran"}
    assert everything.record("extract").metrics["extracted"] == 12  # --force extracts again
    assert everything.metrics == first.metrics  # and, seeded, gets the same result


@pytest.mark.slow
def test_a_failing_stage_stops_keeps_earlier_outputs_and_the_rerun_resumes(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    calls = []
    real_train = stage_module.STAGE_FUNCTIONS["train"]

    def broken(ctx):
        calls.append(ctx.name)
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setitem(stage_module.STAGE_FUNCTIONS, "train", broken)
    with pytest.raises(PipelineError) as info:
        run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False)
    message = str(info.value)
    assert "stage 'train' failed: RuntimeError: out of memory (simulated)" in message
    assert "finished stages are kept (synth, extract)" in message
    assert "run the same command again to resume at 'train'" in message
    dirs = stage_directories(load_pipeline(QUICKSTART, SMALL, workdir=workdir))
    failure = json.loads((dirs["train"] / "failed.json").read_text())
    assert "out of memory" in failure["error"] and not (dirs["train"] / "stage.json").exists()
    assert (dirs["extract"] / "stage.json").is_file() and not (dirs["evaluate"]).exists()

    monkeypatch.setitem(stage_module.STAGE_FUNCTIONS, "train", real_train)
    rerun = run_pipeline(QUICKSTART, SMALL, workdir=workdir, tracking=False, progress=False)
    assert statuses(rerun) == {"synth": "reused", "extract": "reused", "train": "ran", "evaluate": "ran"}
    assert not (dirs["train"] / "failed.json").exists()


@pytest.mark.slow
def test_cli_reports_a_failing_stage_in_one_clear_message(tmp_path):
    # A real failure: evaluating a split that has no videos. The earlier stages finish and stay.
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("VIDSEQ_DEBUG", None)
    args = [
        sys.executable,
        "-m",
        "vidseq",
        "run",
        str(QUICKSTART),
        "--workdir",
        str(tmp_path / "w"),
        "--no-tracking",
        "-q",
        *(x for o in SMALL for x in ("-o", o)),
    ]
    out = subprocess.run([*args, "-o", "evaluate.split=holdout"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2, out.stderr
    assert "stage 'evaluate' failed" in out.stderr and "'holdout' split has no videos" in out.stderr
    assert "resume at 'evaluate'" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "[train] reused" in out.stdout and "[evaluate] done" in out.stdout
    assert "test: accuracy" in out.stdout


@pytest.mark.slow
def test_folder_pipeline_trains_on_a_labelled_folder_and_notices_new_videos(tmp_path):
    from vidseq.config import SynthConfig
    from vidseq.synth import generate_dataset

    data = tmp_path / "clips"
    generate_dataset(
        data, SynthConfig(classes=["grow", "shrink"], videos_per_class=6, num_frames=8, size=64), progress=None
    )
    (data / "labels.csv").unlink()  # a plain folder per class, as a user has it
    (data / "synth.json").unlink()
    small = ["sampling.count=6", "model.hidden_size=16", "train.epochs=2", "extract.num_workers=1"]
    with pytest.raises(VidseqError, match="no videos to extract: set data.source") as info:
        run_pipeline(FOLDER, small, workdir=tmp_path / "w", tracking=False, progress=False)
    assert "-o data.source=" in str(info.value)
    first = run_pipeline(
        FOLDER, [*small, f"data.source={data}"], workdir=tmp_path / "w", tracking=False, progress=False
    )
    assert statuses(first) == {"extract": "ran", "train": "ran", "evaluate": "ran"}
    again = run_pipeline(
        FOLDER, [*small, f"data.source={data}"], workdir=tmp_path / "w", tracking=False, progress=False
    )
    assert set(statuses(again).values()) == {"reused"}
    import numpy as np

    from vidseq.io import write_video
    from vidseq.synth import render_clip

    copy = data / "grow" / "copy_of_a_clip.mp4"  # the same content under a new name: the same video
    copy.write_bytes(next((data / "grow").glob("*.mp4")).read_bytes())
    extra = data / "grow" / "new_clip.mp4"
    write_video(extra, render_clip("grow", np.random.default_rng(99), num_frames=8, size=64), fps=25.0)
    grown = run_pipeline(
        FOLDER, [*small, f"data.source={data}"], workdir=tmp_path / "w", tracking=False, progress=False
    )
    assert statuses(grown)["extract"] == "ran"
    assert grown.record("extract").metrics["reused"] == 12 and grown.record("extract").metrics["extracted"] == 1
    assert grown.record("extract").metrics["duplicates"] == 1


# -- MLflow --------------------------------------------------------------------------------


def _runs(uri: str, experiment: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def _check_tracked(uri: str, result) -> None:
    from mlflow import MlflowClient

    runs = {r.info.run_id: r for r in _runs(uri, "vidseq-quickstart")}
    parent = runs[result.parent_run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["test_accuracy"] == result.metrics["test_accuracy"]
    assert (
        parent.data.params["model.hidden_size"] == "16"
        and parent.data.tags["vidseq.backbone"] == "efficientnet_lite0/grid2"
    )
    assert "vidseq.version" in parent.data.tags
    children = {
        r.data.tags["vidseq.stage"]: r
        for r in runs.values()
        if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id
    }
    assert set(children) == {"synth", "extract", "train", "evaluate"}
    client = MlflowClient(uri)
    train = children["train"]
    curve = client.get_metric_history(train.info.run_id, "val_accuracy")
    assert [m.step for m in curve] == [1, 2, 3]
    assert train.data.params["model.hidden_size"] == "16" and "synth.classes" not in train.data.params
    files = {f.path for f in client.list_artifacts(train.info.run_id)}
    assert {"config.yaml", "labels.json", "curves.png", "stage_config.yaml", "reports"} <= files
    reports = {f.path for f in client.list_artifacts(train.info.run_id, "reports")}
    assert {"reports/test_confusion.png", "reports/val_per_class.csv"} <= reports
    evaluation = {f.path for f in client.list_artifacts(children["evaluate"].info.run_id, "evaluation")}
    assert {"evaluation/confusion.png", "evaluation/per_class.csv"} <= evaluation
    inputs = client.get_run(train.info.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest and inputs[0].tags[0].value == "training"


@pytest.mark.slow
def test_pipeline_logs_to_a_real_tracking_server_over_http(tmp_path):
    from _mlflow_server import mlflow_server

    with mlflow_server(tmp_path) as uri:
        result = run_pipeline(QUICKSTART, SMALL, workdir=tmp_path / "w", tracking_uri=uri, progress=False)
        assert result.tracking_uri == uri and result.model_uri
        _check_tracked(uri, result)
        again = run_pipeline(QUICKSTART, SMALL, workdir=tmp_path / "w", tracking_uri=uri, progress=False)
        assert set(statuses(again).values()) == {"reused"}
        reused = [
            r for r in _runs(uri, "vidseq-quickstart") if r.data.tags.get("mlflow.parentRunId") == again.parent_run_id
        ]
        assert len(reused) == 4 and all(r.data.tags["vidseq.reused"] == "true" for r in reused)
        assert again.model_uri == result.model_uri  # the same store: the logged model is referenced


@pytest.mark.slow
def test_default_tracking_is_sqlite_in_the_working_directory_and_the_model_predicts_real_clips(
    tmp_path, monkeypatch, clip_paths
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = run_pipeline(QUICKSTART, SMALL, progress=False, register="quickstart-gru")
    assert result.tracking_uri == "sqlite:///mlflow.db" and (tmp_path / "mlflow.db").is_file()
    assert (tmp_path / "runs" / "quickstart" / "last_run.json").is_file()
    _check_tracked("sqlite:///mlflow.db", result)
    assert result.model_uri.startswith("models:/quickstart-gru/")
    # A new process, offline, loads the logged model and labels real clips (and a bad file).
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    clips = [str(p) for p in clip_paths[:3]] + [str(bad)]
    code = (
        "import json, sys, mlflow\n"
        "mlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
        f"model = mlflow.pyfunc.load_model({result.model_uri!r})\n"
        f"out = model.predict({clips!r})\n"
        "print(json.dumps(out[['path', 'label', 'probability', 'frames', 'error']].to_dict('records')))\n"
        "print(json.dumps([None if p is None else list(p) for p in out['probabilities']]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, probabilities = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert [r["path"] for r in rows] == clips
    for row, probs in zip(rows[:3], probabilities[:3]):
        assert row["error"] == "" and row["label"] in ("grow", "shrink") and row["frames"] == 6
        assert abs(sum(probs) - 1) < 1e-5 and row["probability"] == max(probs)
    assert rows[3]["label"] == "" and "not a video" in rows[3]["error"]
    # `vidseq predict --model URI` fetches the same model from the store.
    out = subprocess.run(
        [sys.executable, "-m", "vidseq", "predict", clips[0], "--model", result.model_uri, "--out", "p.csv", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "p.csv").read_text().splitlines()[1].split(",")[1] == rows[0]["label"]


def test_unreachable_tracking_server_fails_before_any_work(tmp_path):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "COLUMNS": "200"}
    start = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseq",
            "run",
            str(QUICKSTART),
            "--workdir",
            str(tmp_path / "w"),
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
            *(x for o in SMALL for x in ("-o", o)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2 and time.monotonic() - start < 60
    assert f"http://127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()  # nothing was synthesised or extracted


@pytest.mark.slow
def test_a_predict_stage_labels_a_folder_with_the_trained_model(tmp_path, clip_paths):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for path in clip_paths[:2]:
        (folder / path.name).symlink_to(path)
    (folder / "broken.avi").write_bytes(b"junk" * 100)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(QUICKSTART.read_text().replace("  - evaluate\n", "  - predict\n"))
    result = run_pipeline(
        pipeline,
        [*SMALL, f"predict.input={folder}", "predict.top_k=2"],
        workdir=tmp_path / "w",
        tracking=False,
        progress=False,
    )
    record = result.record("predict")
    assert record.metrics == {"videos": 3.0, "predicted": 2.0, "failed": 1.0}
    rows = list(csv.DictReader(open(record.outputs["predictions"])))
    assert sorted(Path(r["path"]).name for r in rows) == sorted([p.name for p in clip_paths[:2]] + ["broken.avi"])
    assert all(len(r["top_labels"].split("|")) == 2 for r in rows if not r["error"])
    again = run_pipeline(
        pipeline,
        [*SMALL, f"predict.input={folder}", "predict.top_k=2"],
        workdir=tmp_path / "w",
        tracking=False,
        progress=False,
    )
    assert statuses(again)["predict"] == "reused"
