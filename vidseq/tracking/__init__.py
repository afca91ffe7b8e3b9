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

from vidseq.interrupts import Terminated
from vidseq.tracking._common import TrackingError, flatten, git_commit, standard_tags
from vidseq.tracking._lifecycle import exit_on_interrupt
from vidseq.tracking._model import MODEL_REQUIREMENTS, default_requirements, model_signature
from vidseq.tracking._runs import NullRunHandle, NullTracker, RunHandle, StaleRun, Tracker
from vidseq.tracking._store import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    download_model,
    open_tracker,
    resolve_tracking_uri,
    ui_hint,
)

__all__ = [
    "DEFAULT_TRACKING_URI", "EXPERIMENT_KIND", "MODEL_REQUIREMENTS", "NullRunHandle", "NullTracker", "RunHandle",
    "StaleRun", "Terminated", "Tracker", "TrackingError", "default_requirements", "download_model", "exit_on_interrupt",
    "flatten", "git_commit", "model_signature", "open_tracker", "resolve_tracking_uri", "standard_tags", "ui_hint",
]  # fmt: skip
