"""vidseq against an MLflow server behind its own basic auth (``mlflow server --app-name basic-auth``,
on 127.0.0.1 only): with the right credentials in the environment ``vidseq run``, ``vidseq train
--tracking-uri`` and ``vidseq predict --model models:/NAME/1`` work; with wrong or missing ones each
exits 2 before any work with one stderr line that says what to set, and no traceback.

One server and one pipeline run are shared by the module (about a minute on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _mlflow_server import ADMIN_USERNAME, mlflow_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "pipelines" / "quickstart.yaml"
SMALL = [  # as tests/test_pipeline.py, at 1 epoch
    "synth.classes=[grow,shrink]", "synth.videos_per_class=6", "synth.num_frames=8", "synth.size=64",
    "sampling.count=6", "model.hidden_size=16", "train.epochs=1", "extract.num_workers=1",
]  # fmt: skip
PASSWORD = "admin-password-for-tests"  # MLflow wants 12+ characters
MODEL = "quickstart-auth"
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _env(**credentials: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*CREDENTIAL_VARS, "MLFLOW_TRACKING_URI")}
    return {**env, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", **credentials}


RIGHT = {"MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
WRONG = {"MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME, "MLFLOW_TRACKING_PASSWORD": "not-the-password-1"}


def _vidseq(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidseq", *args], check=False, capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)  # fmt: skip


@contextlib.contextmanager
def _credentials(values: dict[str, str]):
    """Set the credentials in this process for MlflowClient checks; restore them afterwards."""
    before = {name: os.environ.get(name) for name in CREDENTIAL_VARS}
    for name in CREDENTIAL_VARS:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("auth-server"), admin_password=PASSWORD) as uri:
        yield uri


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    """`vidseq run` of the small quickstart with the right credentials, registering MODEL."""
    root = tmp_path_factory.mktemp("auth-pipeline")
    out = _vidseq(
        "run",
        str(QUICKSTART),
        "--workdir",
        str(root / "w"),
        "--tracking-uri",
        server,
        "--register",
        MODEL,
        "-q",
        *(x for o in SMALL for x in ("-o", o)),
        env=_env(**RIGHT),
        cwd=root,
    )
    return root, out


@pytest.fixture(scope="module")
def clients(server, pipeline):
    """`vidseq train --tracking-uri` and `vidseq predict --model models:/MODEL/1` with the right
    credentials, run side by side (they share nothing but the server): their results and root."""
    root, out = pipeline
    assert out.returncode == 0, out.stderr[-3000:]
    features = next((root / "w" / "extract").glob("*/efficientnet_lite0-*"))
    clip = next((root / "w" / "synth").rglob("*.mp4"))
    commands = {
        "train": ["train", str(features), "--out", str(root / "train"), "--epochs", "1", "--tracking-uri", server,
                  "-q"],
        "predict": ["predict", str(clip), "--model", f"models:/{MODEL}/1", "--out", "p.csv", "-q"],
    }  # fmt: skip
    env = _env(**RIGHT, MLFLOW_TRACKING_URI=server)  # predict finds the server here, train by --tracking-uri
    running = {name: subprocess.Popen([sys.executable, "-m", "vidseq", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=root)
               for name, args in commands.items()}  # fmt: skip
    done = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return root, done


def _one_line_error(out: subprocess.CompletedProcess, uri: str) -> str:
    """The run failed with exactly one stderr line naming the server and what to set."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and uri in lines[0] and "(401)" in lines[0]
    assert "MLFLOW_TRACKING_USERNAME" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert WRONG["MLFLOW_TRACKING_PASSWORD"] not in out.stderr and PASSWORD not in out.stderr
    return lines[0]


def test_the_server_wants_credentials_for_its_api_but_not_for_health(server):
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{server}/health", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5)
    assert refused.value.code == 401


def test_run_logs_its_runs_and_registers_the_model_with_the_right_credentials(server, pipeline):
    from mlflow import MlflowClient

    _, out = pipeline
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"models:/{MODEL}/1" in out.stdout
    with _credentials(RIGHT):
        client = MlflowClient(server)
        experiment = client.get_experiment_by_name("vidseq-quickstart")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}  # parent + 4 stages
        assert client.get_model_version(MODEL, "1").status == "READY"


def test_train_with_tracking_uri_logs_a_run(server, clients):
    from mlflow import MlflowClient

    _, done = clients
    assert done["train"].returncode == 0, done["train"].stderr[-3000:]
    with _credentials(RIGHT):
        client = MlflowClient(server)
        runs = client.search_runs([client.get_experiment_by_name("vidseq-train").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_predict_reads_the_registered_model(clients):
    root, done = clients
    assert done["predict"].returncode == 0, done["predict"].stderr[-3000:]
    rows = (root / "p.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[1] in ("grow", "shrink")


def test_wrong_or_missing_credentials_stop_run_train_and_predict_with_one_line(server, pipeline, tmp_path):
    root, out = pipeline
    assert out.returncode == 0, out.stderr[-3000:]
    features = next((root / "w" / "extract").glob("*/efficientnet_lite0-*"))
    wrong, missing = _env(**WRONG), _env()
    run = _vidseq("run", str(QUICKSTART), "--workdir", str(tmp_path / "w"), "--tracking-uri", server,
                  *(x for o in SMALL for x in ("-o", o)), env=wrong, cwd=tmp_path)  # fmt: skip
    assert "refused the credentials of user 'admin'" in _one_line_error(run, server)
    assert not list((tmp_path / "w").glob("*/*"))  # nothing was synthesised or extracted
    train = _vidseq("train", str(features), "--out", str(tmp_path / "train"), "--tracking-uri", server,
                    env=missing, cwd=tmp_path)  # fmt: skip
    assert "requires credentials (401) and none are set" in _one_line_error(train, server)
    assert not (tmp_path / "train" / "last.pt").exists()
    predict = _vidseq("predict", str(features), "--model", f"models:/{MODEL}/1", "--tracking-uri", server,
                      env=wrong, cwd=tmp_path)  # fmt: skip
    _one_line_error(predict, server)


def test_a_host_name_outside_allowed_hosts_is_named(server):
    """MLflow 3 answers API calls for a Host outside --allowed-hosts with 403 (its /health still 200)."""
    from vidseq.tracking import TrackingError
    from vidseq.tracking._store import _check_server

    host = socket.gethostname()
    try:
        if socket.gethostbyname(host) != "127.0.0.1" or host == "localhost":
            pytest.skip(f"host name {host} does not reach 127.0.0.1")
    except OSError:
        pytest.skip(f"host name {host} does not resolve")
    uri = server.replace("127.0.0.1", host)
    with _credentials(RIGHT), pytest.raises(TrackingError, match=r"rejected the Host header .* --allowed-hosts"):
        _check_server(uri)
    with _credentials(RIGHT):
        _check_server(server)  # the same credentials by IP: fine
