"""MLflow runs: a tracker over one experiment, run handles that log params, metrics, artifacts,
datasets and the model, the no-op tracker used without tracking, and closing stale runs.

Place in the data flow: stages -> **runs** -> an MLflow store; ``_store.open_tracker`` makes the
tracker after checking the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidseq import __version__
from vidseq.tracking._client import environ, mlflow_errors, mlflow_module, use_uri
from vidseq.tracking._common import (
    TrackingError,
    cut,
    flat_items,
    flatten,
)
from vidseq.tracking._lifecycle import (
    END_REASON_TAG,
    interruption,
    owner_gone,
    owner_tags,
    run_ended,
    run_started,
    signal_name,
)
from vidseq.tracking._model import (
    bundle_has_actors,
    bundle_has_pose,
    default_requirements,
    model_signature,
    pandas_dataset,
)


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
        mlflow = use_uri(self.uri)
        if (active := mlflow.active_run()) is not None and not nested:
            raise TrackingError(f"run {name!r} started while run {active.info.run_id} is active: pass nested=True")
        with mlflow_errors(f"starting run {name!r}", self.uri):  # owned by this process from the start
            run = mlflow.start_run(run_name=name, experiment_id=self.experiment_id, nested=nested, tags=owner_tags())
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

        client = mlflow_module().MlflowClient(self.uri)
        with mlflow_errors("looking for runs left RUNNING", self.uri):
            running, token = [], None
            while True:
                page = client.search_runs(
                    [self.experiment_id],
                    "attributes.status = 'RUNNING'",
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=1000,
                    page_token=token,
                )
                running.extend(page)
                if not (token := page.token):
                    break
        wanted = dict(tags or {})
        stale = {
            r.info.run_id: r
            for r in running
            if all(r.data.tags.get(k) == v for k, v in wanted.items()) and owner_gone(r.data.tags)
        }
        for run in running:  # children of a stale run (stage runs) go with it, unless their own process lives
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent in stale and run.info.run_id not in stale and not _owner_alive(run.data.tags):
                stale[run.info.run_id] = run
        closed = []
        for run in stale.values():
            tags_ = run.data.tags
            owner = f"pid {tags_.get('vidseq.pid', '?')} on {tags_.get('vidseq.host', '?')}"
            reason = f"left RUNNING by {owner}, which is gone; ended by a later vidseq process (pid {os.getpid()})"
            with mlflow_errors(f"ending stale run {run.info.run_id}", self.uri):
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
    with environ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"):
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
        self._client = mlflow_module().MlflowClient(uri)

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        """Log numbers (nested dicts as ``a.b``); non-finite and non-numeric values are skipped."""
        from mlflow.entities import Metric

        now, values = int(time.time() * 1000), {k: _finite(v) for k, v in flat_items(metrics)}
        batch = [Metric(k, v, now, step or 0) for k, v in values.items() if v is not None]
        with mlflow_errors("logging metrics", self.uri):
            self._client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in batches: nested dicts flattened, values as text cut to MLflow's limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        batch = [Param(k, cut(v, MAX_PARAM_VAL_LENGTH)) for k, v in flatten(params).items()]
        with mlflow_errors("logging params (a param's value cannot change in a run)", self.uri):
            self._client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        batch = [RunTag(k, cut(v, MAX_TAG_VAL_LENGTH)) for k, v in flatten(tags).items()]
        with mlflow_errors("setting tags", self.uri):
            self._client.log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).is_file():
            raise TrackingError(f"cannot log artifact {path}: no such file")
        with mlflow_errors(f"logging artifact {path}", self.uri):
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if not Path(directory).is_dir():
            raise TrackingError(f"cannot log the artifacts of {directory}: no such folder")
        with mlflow_errors(f"logging the artifacts of {directory}", self.uri):
            self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with mlflow_errors(f"logging {artifact_file}", self.uri):
            self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write ``obj`` as JSON (YAML for .yaml/.yml); Paths and other objects become strings."""
        plain = json.loads(json.dumps(obj, default=str))
        with mlflow_errors(f"logging {artifact_file}", self.uri):
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

        dataset = pandas_dataset(rows, name=name, source=source, targets=targets)
        with warnings.catch_warnings():  # schema inference hints about integer columns
            warnings.simplefilter("ignore")
            entity = dataset._to_mlflow_entity()
        entry = DatasetInput(entity, [InputTag("mlflow.data.context", context)])
        with mlflow_errors(f"logging dataset {name!r}", self.uri):
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

        actors = bundle_has_actors(bundle)  # a per-person model: a row per person, and ultralytics
        pose = bundle_has_pose(bundle)  # MediaPipe in the model's environment
        requirements = list(pip_requirements or default_requirements(actors=actors, pose=pose))
        with mlflow_errors("logging the model", self.uri), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = Model.log(  # pyfunc.log_model without the active-run requirement (run_id)
                artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=self.run_id,
                loader_module=loader_module, data_path=str(bundle), signature=model_signature(actors=actors),
                pip_requirements=requirements,
                metadata={"vidseq_version": __version__, "labels": list(labels)},
            )  # fmt: skip
        return info.model_uri if register is None else self._register(info.model_id, register)

    def _register(self, model_id: str, name: str) -> str:
        """A new version of registered model ``name`` (created if missing), without MLflow's
        prints; stages are deprecated, so none is set (use aliases if needed)."""
        from mlflow.exceptions import MlflowException

        with mlflow_errors(f"registering model {name!r}", self.uri):
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
