"""The low-level MLflow access every tracking module shares: importing mlflow on first use,
pointing it at one store for one call, and turning its exceptions into one clear line.

Place in the data flow: the bottom of ``vidseq.tracking`` (imports nothing else of vidseq but
``_common``); ``_runs`` and ``_store`` build on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from vidseq.tracking._common import TrackingError


@contextlib.contextmanager
def mlflow_errors(what: str, uri: str) -> Iterator[None]:
    """Turn MLflow's exceptions into a TrackingError naming the action and the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        if error.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):  # 403 / 401 mid-run
            user = os.environ.get("MLFLOW_TRACKING_USERNAME")
            who = f"user {user!r}" if user else "these credentials"
            code = 403 if error.error_code == "PERMISSION_DENIED" else 401
            raise TrackingError(
                f"{what} failed on {uri}: MLflow refused {who} ({code}): ask an MLflow admin to "
                "grant EDIT on the experiment or registered model, or set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of a user who has it"
            ) from error
        raise TrackingError(f"{what} failed on {uri}: {error.message}") from error


@contextlib.contextmanager
def environ(name: str, value: str | None = None) -> Iterator[None]:
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


def use_uri(uri: str) -> Any:
    """Point MLflow's fluent API at ``uri``, without leaving it in os.environ: MLflow copies it to
    $MLFLOW_TRACKING_URI, which would outlive this tracker and steer the next one."""
    mlflow = mlflow_module()
    with environ("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(uri)
    return mlflow


def mlflow_module() -> Any:
    """mlflow, imported on first use (about 1.5 s), so importing vidseq.tracking stays cheap."""
    import mlflow

    return mlflow
