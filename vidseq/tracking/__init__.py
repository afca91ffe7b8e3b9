"""Everything MLflow: runs, params, metrics, artifacts, datasets and the packaged model.

Place in the data flow: stages -> metrics/artifacts -> **tracking** -> an MLflow store. Only the
pipeline runner and the CLI import this package; it is the only part of vidseq that imports
mlflow, and it does so inside functions, so ``import vidseq.tracking`` stays cheap.

``open_tracker`` checks the store before any work: an unreachable server fails in seconds with
the fix, not in MLflow's minutes-long retry loop after a training run. Runs are context managers
that end FINISHED, FAILED (the body raised) or KILLED (Ctrl-C, SIGTERM). Every call names its run
id, so a parent run can be written to while a nested one is active. Runs carry the host and pid
of their process; ``Tracker.close_stale_runs`` ends those whose process is gone (kill -9, a
crash), ``exit_on_interrupt`` gives a CLI command the exit of an interrupted one (see
``_lifecycle``). Experiments are tagged ``mlflow.experimentKind = custom_model_development``
so the MLflow UI opens them on their training runs, not on its GenAI pages. The model is logged as a pyfunc
loaded by ``vidseq.predict._load_pyfunc`` from the bundle folder, never as a pickled class
(which breaks when the class moves, mlflow/mlflow#9514).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidseq import __version__
from vidseq.tracking._common import (
    TrackingError,
    _cut,
    _flat_items,
    flatten,
    git_commit,
    standard_tags,
)
from vidseq.tracking._lifecycle import (
    END_REASON_TAG,
    Terminated,
    exit_on_interrupt,
    interruption,
    owner_gone,
    owner_tags,
    run_ended,
    run_started,
    signal_name,
)
from vidseq.tracking._model import (
    MODEL_REQUIREMENTS,
    _pandas_dataset,
    default_requirements,
    model_signature,
)

__all__ = [
    "DEFAULT_TRACKING_URI", "EXPERIMENT_KIND", "MODEL_REQUIREMENTS", "NullRunHandle", "NullTracker", "RunHandle",
    "StaleRun", "Terminated", "Tracker", "TrackingError", "default_requirements", "download_model", "exit_on_interrupt",
    "flatten", "git_commit", "model_signature", "open_tracker", "resolve_tracking_uri", "standard_tags", "ui_hint",
]  # fmt: skip

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default, in the working directory
HEALTH_TIMEOUT_S = 5.0
# The MLflow UI (3.x) opens an experiment on its GenAI pages (traces, prompts) unless this tag says
# it holds model training; the values are the UI's own.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_LOCAL_FIX = (
    f"or unset MLFLOW_TRACKING_URI / drop --tracking-uri to log to the local {DEFAULT_TRACKING_URI}"
)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to log to: ``uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def download_model(model_uri: str, *, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """Fetch a logged model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/m-...``,
    ``runs:/RUN/model``) to a local folder; ``vidseq.predict.load_predictor`` reads it."""
    mlflow = _mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    with _mlflow_errors(f"downloading model {model_uri}", uri), _environ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"):
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


def open_tracker(
    *, uri: str | None = None, experiment: str = "vidseq", enabled: bool = True
) -> Tracker | NullTracker:
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
            client = _use_uri(uri).MlflowClient(uri)
            experiment_id = _experiment_id(client, experiment, uri)
    except TrackingError:
        raise
    except Exception as error:  # unknown scheme, file store, corrupt db: say which store
        raise TrackingError(f"cannot open the MLflow store {uri}: {error}") from error
    return Tracker(uri=uri, experiment=experiment, experiment_id=experiment_id)


def _check_server(uri: str) -> None:
    """One GET of <uri>/health with a short timeout; 401/403 count as up (auth is MLflow's job)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return
        raise TrackingError(
            f"{uri} answered HTTP {error.code} on /health: is it an MLflow tracking server? "
            f"Fix the URI, {_LOCAL_FIX}"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(error, 'reason', error)}): "
            f"start the server (mlflow server --host HOST --port PORT), {_LOCAL_FIX}"
        ) from error


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
            f"tracking URI {uri}: {db} is not writable: fix its permissions or pass another "
            "--tracking-uri"
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


@dataclass(frozen=True)
class StaleRun:
    """A run left RUNNING by a process that is gone, now ended by ``close_stale_runs``."""

    run_id: str
    name: str
    owner: str  # "pid 1234 on host"
    parent_run_id: str | None


class Tracker:
    """An open MLflow store and experiment; ``run`` starts runs in it."""

    def __init__(self, *, uri: str, experiment: str, experiment_id: str) -> None:
        self.uri, self.experiment, self.experiment_id = uri, experiment, experiment_id

    @contextlib.contextmanager
    def run(
        self, name: str, *, params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None, nested: bool = False,
    ) -> Iterator[RunHandle]:  # fmt: skip
        """A run named ``name`` (a child of the active run when ``nested``) that ends FINISHED,
        FAILED when the body raises, KILLED on Ctrl-C or SIGTERM (and on an error that carries the
        ``signum`` that stopped the work); the exception is re-raised."""
        mlflow = _use_uri(self.uri)
        if (active := mlflow.active_run()) is not None and not nested:
            raise TrackingError(
                f"run {name!r} started while run {active.info.run_id} is active: pass nested=True"
            )
        with _mlflow_errors(f"starting run {name!r}", self.uri):  # owned by this process from the start
            run = mlflow.start_run(run_name=name, experiment_id=self.experiment_id, nested=nested,
                                   tags=owner_tags())
        handle, status = RunHandle(run.info.run_id, self.uri), "FAILED"
        run_started(handle.run_id, name, self.uri)  # SIGTERM now ends it KILLED (see _lifecycle)
        ended = False
        try:
            handle.set_tags(tags or {})
            handle.log_params(params or {})
            yield handle
            status = "FINISHED"
        except BaseException as error:
            if interruption(error) is not None:  # Ctrl-C, SIGTERM (see _lifecycle)
                status, tags = "KILLED", {END_REASON_TAG: f"stopped by {signal_name(error)}"}
            else:
                tags = {"vidseq.error": f"{type(error).__name__}: {error}"}
            with contextlib.suppress(Exception):  # never hide the body's error behind a logging one
                handle.set_tags(tags)
            raise
        finally:
            try:
                ended = _end_run(mlflow, handle.run_id, status, quiet_failure=status != "FINISHED")
            finally:
                run_ended(handle.run_id, status, ended=ended)

    def close_stale_runs(self, tags: Mapping[str, str] | None = None, *, status: str = "KILLED") -> list[StaleRun]:
        """End as ``status`` the RUNNING runs of this experiment (those with all of ``tags``) whose
        process is gone: one on this host whose pid is no longer alive (kill -9, a crash), and the
        RUNNING children of such runs. Each gets an end time (now) and ``vidseq.end_reason``.
        Runs of a live process, of another host, or without vidseq's owner tags are left alone."""
        from mlflow.entities import ViewType

        client = _mlflow().MlflowClient(self.uri)
        with _mlflow_errors("looking for runs left RUNNING", self.uri):
            running, token = [], None
            while True:
                page = client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                          run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
                running.extend(page)
                if not (token := page.token):
                    break
        wanted = dict(tags or {})
        stale = {r.info.run_id: r for r in running
                 if all(r.data.tags.get(k) == v for k, v in wanted.items()) and owner_gone(r.data.tags)}
        for run in running:  # children of a stale run (stage runs) go with it, unless their own process lives
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent in stale and run.info.run_id not in stale and not _owner_alive(run.data.tags):
                stale[run.info.run_id] = run
        closed = []
        for run in stale.values():
            tags_ = run.data.tags
            owner = f"pid {tags_.get('vidseq.pid', '?')} on {tags_.get('vidseq.host', '?')}"
            reason = f"left RUNNING by {owner}, which is gone; ended by a later vidseq process (pid {os.getpid()})"
            with _mlflow_errors(f"ending stale run {run.info.run_id}", self.uri):
                client.set_tag(run.info.run_id, END_REASON_TAG, reason)
                client.set_terminated(run.info.run_id, status)
            closed.append(StaleRun(run.info.run_id, run.info.run_name or "", owner, tags_.get("mlflow.parentRunId")))
        return closed


def _owner_alive(tags: Mapping[str, str]) -> bool:
    """Whether a run names an owner process that may still run (tagged and not certainly gone)."""
    return "vidseq.pid" in tags and not owner_gone(tags)


def _end_run(mlflow: Any, run_id: str, status: str, *, quiet_failure: bool) -> bool:
    """End ``run_id`` without MLflow printing its URL to stdout (``ui_hint`` says where to look);
    whether it ended (a failure is raised unless ``quiet_failure``)."""
    with _environ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"):
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(status)
            else:
                mlflow.MlflowClient(mlflow.get_tracking_uri()).set_terminated(run_id, status)
        except Exception as error:
            if not quiet_failure:  # the body's own exception is already on its way
                raise TrackingError(f"cannot end run {run_id}: {error}") from error
            return False
    return True


class RunHandle:
    """Logging into one run; every call names the run, so it works while a nested run is active."""

    def __init__(self, run_id: str, uri: str) -> None:
        self.run_id, self.uri = run_id, uri
        self._client = _mlflow().MlflowClient(uri)

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        """Log numbers (nested dicts as ``a.b``); non-finite and non-numeric values are skipped."""
        from mlflow.entities import Metric

        now, values = int(time.time() * 1000), {k: _finite(v) for k, v in _flat_items(metrics)}
        batch = [Metric(k, v, now, step or 0) for k, v in values.items() if v is not None]
        with _mlflow_errors("logging metrics", self.uri):
            self._client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in batches: nested dicts flattened, values as text cut to MLflow's limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        batch = [Param(k, _cut(v, MAX_PARAM_VAL_LENGTH)) for k, v in flatten(params).items()]
        with _mlflow_errors("logging params (a param's value cannot change in a run)", self.uri):
            self._client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        batch = [RunTag(k, _cut(v, MAX_TAG_VAL_LENGTH)) for k, v in flatten(tags).items()]
        with _mlflow_errors("setting tags", self.uri):
            self._client.log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).is_file():
            raise TrackingError(f"cannot log artifact {path}: no such file")
        with _mlflow_errors(f"logging artifact {path}", self.uri):
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if not Path(directory).is_dir():
            raise TrackingError(f"cannot log the artifacts of {directory}: no such folder")
        with _mlflow_errors(f"logging the artifacts of {directory}", self.uri):
            self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with _mlflow_errors(f"logging {artifact_file}", self.uri):
            self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write ``obj`` as JSON (YAML for .yaml/.yml); Paths and other objects become strings."""
        plain = json.loads(json.dumps(obj, default=str))
        with _mlflow_errors(f"logging {artifact_file}", self.uri):
            self._client.log_dict(self.run_id, plain, artifact_file)

    def log_dataset(
        self, rows: list[Mapping[str, Any]], *, name: str, source: str | Path, context: str,
        targets: str | None = "label",
    ) -> None:  # fmt: skip
        """Log ``rows`` (path, label, split, ...) as an MLflow dataset input with a content digest.

        Rows are sorted by ``path`` (when present) and non-numbers stringified, so the digest names
        the set of videos and covers every column. ``source`` is a path (made absolute) or a URL.
        MLflow keeps one input per (name, digest) in a run: the same rows logged twice stay one.
        """
        from mlflow.entities import DatasetInput, InputTag

        dataset = _pandas_dataset(rows, name=name, source=source, targets=targets)
        with warnings.catch_warnings():  # schema inference hints about integer columns
            warnings.simplefilter("ignore")
            entity = dataset._to_mlflow_entity()
        entry = DatasetInput(entity, [InputTag("mlflow.data.context", context)])
        with _mlflow_errors(f"logging dataset {name!r}", self.uri):
            self._client.log_inputs(self.run_id, datasets=[entry])

    def log_model(
        self, bundle_dir: str | Path, *, name: str = "model", labels: list[str],
        register: str | None = None, loader_module: str = "vidseq.predict",
        pip_requirements: list[str] | None = None,
    ) -> str:  # fmt: skip
        """Log the bundle folder as a pyfunc model loaded by ``loader_module._load_pyfunc`` and
        return its URI: ``models:/<model id>``, or ``models:/REGISTER/VERSION`` once registered
        under ``register``. Default ``pip_requirements``: ``default_requirements()``. Silent."""
        bundle = Path(bundle_dir)
        if not bundle.is_dir():
            raise TrackingError(
                f"cannot log the model: bundle folder {bundle} does not exist "
                "(write it with vidseq.predict.write_bundle)"
            )
        if not labels:
            raise TrackingError("cannot log the model: labels is empty; pass the class names")
        import mlflow.pyfunc
        from mlflow.models import Model

        requirements = list(pip_requirements or default_requirements())
        with _mlflow_errors("logging the model", self.uri), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = Model.log(  # pyfunc.log_model without the active-run requirement (run_id)
                artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=self.run_id,
                loader_module=loader_module, data_path=str(bundle), signature=model_signature(),
                pip_requirements=requirements,
                metadata={"vidseq_version": __version__, "labels": list(labels)},
            )  # fmt: skip
        return info.model_uri if register is None else self._register(info.model_id, register)

    def _register(self, model_id: str, name: str) -> str:
        """A new version of registered model ``name`` (created if missing), without MLflow's
        prints; stages are deprecated, so none is set (use aliases if needed)."""
        from mlflow.exceptions import MlflowException

        with _mlflow_errors(f"registering model {name!r}", self.uri):
            with contextlib.suppress(MlflowException):  # already registered: add a version
                self._client.create_registered_model(name)
            version = self._client.create_model_version(
                name, source=f"models:/{model_id}", run_id=self.run_id, model_id=model_id
            )
        return f"models:/{name}/{version.version}"


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (non-numeric, NaN, inf, or an array of many values)."""
    if isinstance(value, (str, bytes)) or value is None:
        return None
    if not isinstance(value, (int, float)) and getattr(value, "ndim", None) != 0:
        return None  # numpy/torch scalars have ndim 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number - number == 0 else None  # inf - inf and nan - nan are nan


@contextlib.contextmanager
def _mlflow_errors(what: str, uri: str) -> Iterator[None]:
    """Turn MLflow's exceptions into a TrackingError naming the action and the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        raise TrackingError(f"{what} failed on {uri}: {error.message}") from error


class NullTracker:
    """The Tracker interface with tracking turned off: its runs log nothing."""

    def __init__(self, *, uri: str, experiment: str) -> None:
        self.uri, self.experiment, self.experiment_id = uri, experiment, None

    @contextlib.contextmanager
    def run(
        self, name: str, *, params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None, nested: bool = False,
    ) -> Iterator[NullRunHandle]:  # fmt: skip
        yield NullRunHandle()

    def close_stale_runs(self, tags: Mapping[str, str] | None = None, *, status: str = "KILLED") -> list[StaleRun]:
        return []


class NullRunHandle:
    """The RunHandle interface logging nothing: ``run_id`` is None, ``log_model`` returns None."""

    run_id = None

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, obj: Any, artifact_file: str) -> None: ...

    def log_dataset(
        self, rows: list[Mapping[str, Any]], *, name: str, source: str | Path, context: str,
        targets: str | None = "label",
    ) -> None: ...  # fmt: skip

    def log_model(self, bundle_dir: str | Path, *, labels: list[str], **options: Any) -> None:
        return None


@contextlib.contextmanager
def _environ(name: str, value: str | None = None) -> Iterator[None]:
    """Set ``name`` (if ``value``) for the block; afterwards it is as before, whoever changed it."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _use_uri(uri: str) -> Any:
    """Point MLflow's fluent API at ``uri``, without leaving it in os.environ: MLflow copies it to
    $MLFLOW_TRACKING_URI, which would outlive this tracker and steer the next one."""
    mlflow = _mlflow()
    with _environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(uri)
    return mlflow


def _mlflow() -> Any:
    """mlflow, imported on first use (about 1.5 s), so importing vidseq.tracking stays cheap."""
    import mlflow

    return mlflow
