"""A real MLflow tracking server for tests: ``with mlflow_server(tmp_path) as uri: ...``.

Starts ``python -m mlflow server`` (the interpreter running the tests) on a free local port with a
sqlite backend and served artifacts under ``tmp_path``, one worker and no job runner (two
processes, about half a GB, up in ~6 s), waits until ``/health`` answers, yields the URI, and
stops the whole process group on exit so no server process outlives the test.

``mlflow_server(tmp_path, admin_password="...")`` starts MLflow's basic-auth app instead
(``--app-name basic-auth``, which needs Flask-WTF: the ``test`` extra): an auth config of its own
(``MLFLOW_AUTH_CONFIG_PATH``) with user ``admin`` (``ADMIN_USERNAME``) holding that password and a
sqlite user database under ``tmp_path``. ``/health`` stays open; every API call needs credentials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
ADMIN_USERNAME = "admin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no server log)"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left of it."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no worker of its group lingers either.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def _auth_config(root: Path, admin_password: str) -> Path:
    """A basic-auth config: user ``admin`` with ``admin_password`` (MLflow wants 12+ characters),
    its own user database, READ for users on what they did not create."""
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config


@contextlib.contextmanager
def mlflow_server(tmp_path: str | Path, *, admin_password: str | None = None) -> Iterator[str]:
    """Run an MLflow server storing under ``tmp_path``; yield its URI (``http://127.0.0.1:PORT``).
    With ``admin_password``: MLflow's basic-auth app, user ``admin`` holding that password."""
    root = Path(tmp_path) / "mlflow-server"
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if admin_password is not None:
        command[4:4] = ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(root, admin_password))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = os.urandom(16).hex()  # CSRF key the app requires
        for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
            env.pop(name, None)  # they would override the config's admin
    log = root / "server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(uri):
            if process.poll() is not None:
                exited = f"mlflow server exited with {process.returncode}"
                raise RuntimeError(f"{exited}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                late = f"mlflow server {uri} not healthy in {STARTUP_TIMEOUT_S:.0f} s"
                raise RuntimeError(f"{late}:\n{_log_tail(log)}")
            time.sleep(0.25)
        yield uri
    finally:
        _stop(process)
