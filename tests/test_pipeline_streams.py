"""Pipelines with the motion stream: `train.streams` turns motion extraction on, late fusion is
tracked per stream in MLflow, and the logged model predicts with both streams."""

from __future__ import annotations

import pytest
from test_pipeline import QUICKSTART, SMALL, _runs  # noqa: I001 - the tests folder is on sys.path

from vidseq.pipeline import load_pipeline, run_pipeline
from vidseq.training.runs import holds_run

TWO_STREAMS = [*SMALL, "train.streams=[appearance,motion]"]


def test_training_on_motion_makes_the_extract_stage_extract_it():
    plain = {s.name: s for s in load_pipeline(QUICKSTART, SMALL).stages}
    both = {s.name: s for s in load_pipeline(QUICKSTART, TWO_STREAMS).stages}
    assert not plain["extract"].config.motion.enabled and both["extract"].config.motion.enabled
    assert both["extract"].key != plain["extract"].key and "motion" not in plain["extract"].fingerprint["config"]
    asked = {s.name: s.key for s in load_pipeline(QUICKSTART, [*SMALL, "motion.enabled=true"]).stages}
    assert asked["extract"] == both["extract"].key  # the same features, however they were asked for
    assert asked["train"] != both["train"].key  # training reads its streams
    finer = load_pipeline(QUICKSTART, [*TWO_STREAMS, "motion.grid=2"]).stage("extract")
    assert finer.key != both["extract"].key


@pytest.mark.slow
def test_a_late_fusion_pipeline_logs_each_stream_and_a_two_stream_model(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = run_pipeline(QUICKSTART, TWO_STREAMS, progress=False)
    extract, train = result.record("extract"), result.record("train")
    assert "motion_store" in extract.outputs and extract.metrics["motion_failed"] == 0
    metrics = train.metrics
    assert {
        "appearance_test_accuracy",
        "motion_test_accuracy",
        "fusion_weight_appearance",
        "fusion_weight_motion",
        "test_accuracy",
    } <= set(metrics)
    assert metrics["fusion_weight_appearance"] + metrics["fusion_weight_motion"] == pytest.approx(1.0)
    assert holds_run(train.directory) and (train.directory / "motion" / "best.pt").is_file()

    uri = "sqlite:///mlflow.db"
    runs = {
        r.data.tags["vidseq.stage"]: r
        for r in _runs(uri, "vidseq-quickstart")
        if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id
    }
    client = MlflowClient(uri)
    run_id = runs["train"].info.run_id
    curve = client.get_metric_history(run_id, "motion_val_accuracy")
    assert [m.step for m in curve] == [1, 2, 3]
    assert runs["train"].data.params["train.streams"] in ("['appearance', 'motion']", '["appearance", "motion"]')
    reports = {f.path for f in client.list_artifacts(run_id, "reports/motion")}
    assert "reports/motion/test_confusion.png" in reports
    assert {f.path for f in client.list_artifacts(runs["extract"].info.run_id, "motion")} >= {"motion/manifest.csv"}

    # the logged model extracts both streams from video files
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    videos = sorted((tmp_path / "runs" / "quickstart" / "synth").rglob("*.mp4"))[:2]
    out = model.predict([str(v) for v in videos])
    assert list(out["error"]) == ["", ""] and set(out["label"]) <= {"grow", "shrink"}
