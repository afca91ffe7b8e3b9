"""The tracking store: which URI, checked before any work (an unreachable server fails in
seconds, with the fix), the experiment (tagged for the training pages of the UI), where to look
at the results, and downloading a logged model.

Place in the data flow: the entry of ``vidseq.tracking``: ``open_tracker`` -> ``_runs.Tracker``.
"""

from __future__ import annotations

import os
import shlex
import ssl
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from vidseq.tracking._client import environ, mlflow_errors, mlflow_module, use_uri
from vidseq.tracking._common import TrackingError
from vidseq.tracking._runs import NullTracker, Tracker

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default, in the working directory
HEALTH_TIMEOUT_S = 5.0
# The MLflow UI (3.x) opens an experiment on its GenAI pages (traces, prompts) unless this tag says
# it holds model training; the values are the UI's own.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_LOCAL_FIX = f"or unset MLFLOW_TRACKING_URI / drop --tracking-uri to log to the local {DEFAULT_TRACKING_URI}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to log to: ``uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def download_model(model_uri: str, *, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """Fetch a logged model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/m-...``,
    ``runs:/RUN/model``) to a local folder; ``vidseq.predict.load_predictor`` reads it."""
    mlflow = mlflow_module()
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    with mlflow_errors(f"downloading model {model_uri}", uri), environ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, tracking_uri=uri, dst_path=None if dst is None else str(dst)
        )
    return Path(local)


def ui_hint(uri: str, experiment_id: str | None = None) -> str:
    """The command that shows the runs logged to ``uri`` and, given the experiment, the page of
    its training runs: MLflow 3.17's UI opens on its GenAI pages unless the URL (or its own
    GenAI / Model training toggle) says ``workflowType=machine_learning``; the experiment tag
    ``mlflow.experimentKind`` that vidseq sets is not enough for that UI version."""
    page = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning" if experiment_id else ""
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}{page}"
    command = f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
    return f"{command}, then open http://127.0.0.1:5000{page}" if page else command


def open_tracker(*, uri: str | None = None, experiment: str = "vidseq", enabled: bool = True) -> Tracker | NullTracker:
    """Check the store at ``uri`` (see ``resolve_tracking_uri``), select ``experiment`` (created
    if missing) and return a Tracker; ``enabled=False`` returns a NullTracker that logs nothing."""
    uri = resolve_tracking_uri(uri)
    if not enabled:
        return NullTracker(uri=uri, experiment=experiment)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:"):
        _check_sqlite(uri)
    try:
        with warnings.catch_warnings():  # SQLAlchemy deprecation noise from MLflow's store
            warnings.filterwarnings("ignore", message=".*noload.*")
            client = use_uri(uri).MlflowClient(uri)
            experiment_id = _experiment_id(client, experiment, uri)
    except TrackingError:
        raise
    except Exception as error:  # unknown scheme, file store, corrupt db: say which store
        raise TrackingError(f"cannot open the MLflow store {uri}: {error}") from error
    return Tracker(uri=uri, experiment=experiment, experiment_id=experiment_id)


def _check_server(uri: str) -> None:
    """Before any work: one GET of <uri>/health with a short timeout (is it up?), then one
    authenticated API call (search one experiment) with the credentials MLflow's client will
    send, so a server behind MLflow's basic auth (its /health is open) or a proxy that wants
    credentials fails here with one line, not on the first logged metric."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S, context=_tls_context(uri)):
            pass
    except urllib.error.HTTPError as error:
        if error.code not in (401, 403):  # a proxy guarding /health too: the API call tells
            raise TrackingError(
                f"{uri} answered HTTP {error.code} on /health: is it an MLflow tracking server? "
                f"Fix the URI, {_LOCAL_FIX}"
            ) from error
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(error, 'reason', error)}): "
            f"start the server (mlflow server --host HOST --port PORT), {_LOCAL_FIX}"
        ) from error
    _check_access(uri)


def _tls_context(uri: str) -> ssl.SSLContext | None:
    """For https: the TLS settings MLflow's client uses (MLFLOW_TRACKING_SERVER_CERT_PATH for a
    private CA, MLFLOW_TRACKING_CLIENT_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS=true)."""
    if not uri.startswith("https://"):
        return None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        context = ssl._create_unverified_context()  # what the user asked MLflow for, too
    else:
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    if client_cert := os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        context.load_cert_chain(client_cert)
    return context


def _check_access(uri: str) -> None:
    """One API call as MLflow's client makes it (its credentials: MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, ~/.mlflow/credentials, MLFLOW_TRACKING_TOKEN, an auth plugin);
    401 and 403 become one line that says what to set. Other answers are left to MLflow's calls."""
    mlflow_module()
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    try:
        response = http_request(
            creds, "/api/2.0/mlflow/experiments/search", "GET", params={"max_results": 1},
            max_retries=0, timeout=HEALTH_TIMEOUT_S,
        )  # fmt: skip
    except Exception as error:  # MLflow wraps timeouts, TLS and auth-plugin errors in one
        raise TrackingError(
            f"MLflow at {uri} answers /health but not an API call: {getattr(error, 'message', error)}"
        ) from error
    code = response.status_code
    if code not in (401, 403):
        return
    user = f" of user {creds.username!r}" if creds.username else ""
    env = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
    if code == 401 and not (creds.password or creds.token or creds.auth or creds.aws_sigv4):
        missing = "MLFLOW_TRACKING_PASSWORD is not set" if creds.username else "none are set"
        raise TrackingError(f"MLflow at {uri} requires credentials (401) and {missing}: set {env}")
    if code == 401:
        raise TrackingError(f"MLflow at {uri} refused the credentials{user} (401): check {env}")
    if "Invalid Host header" in response.text:  # MLflow 3's DNS-rebinding guard (--allowed-hosts)
        host = urllib.parse.urlsplit(uri).netloc
        raise TrackingError(
            f"MLflow at {uri} rejected the Host header {host!r} (403): start the server with "
            f"--allowed-hosts naming it (by default only localhost and private IPs are allowed)"
        )
    raise TrackingError(
        f"MLflow at {uri} denied access{user} (403): ask an MLflow admin for permission, or set "
        f"{env} of a user who has it"
    )


def _check_sqlite(uri: str) -> None:
    """The folder of the database file must exist and be writable (and the file, if present)."""
    path = uri.removeprefix("sqlite:").removeprefix("///").split("?")[0]
    if path in ("", "//", ":memory:"):
        return
    db = Path(path).absolute()
    if not db.parent.is_dir():
        raise TrackingError(
            f"tracking URI {uri}: folder {db.parent} does not exist: create it "
            f"(mkdir -p {shlex.quote(str(db.parent))}) or pass another --tracking-uri"
        )
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(
            f"tracking URI {uri}: {db} is not writable: fix its permissions or pass another --tracking-uri"
        )


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing; either way tagged as model training
    (an existing one keeps a kind chosen in the UI; a kind the UI only inferred is replaced)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by another process
            if (found := client.get_experiment_by_name(name)) is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {name!r} in {uri} is deleted: restore it (MLFLOW_TRACKING_URI={uri} "
            f"mlflow experiments restore --experiment-id {found.experiment_id}) or choose "
            "another experiment name"
        )
    kind = (found.tags or {}).get(EXPERIMENT_KIND_TAG)
    if kind is None or kind.endswith("_inferred") or kind == "no_inferred_type":
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id
