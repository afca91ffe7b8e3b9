"""Running a pipeline: stages in order, reused when their key is done, tracked in MLflow.

Place in the data flow: on top of everything. Each stage writes into
``<workdir>/<stage>/<key>/`` and, only once it has finished, a ``stage.json`` marker there
(atomically). A later run whose stage has the same key finds the marker and reuses the outputs;
a changed key gets a new folder, so earlier results are never overwritten. A stage that fails
writes ``failed.json`` beside its partial outputs and stops the run; the next run reuses every
finished stage and starts again at the failed one (training resumes from its ``last.pt``).

MLflow: one parent run per pipeline run, one nested run per stage (reused stages too, tagged
``vidseq.reused`` with the run that made them), all tagged ``vidseq.pipeline``. The tracking store
is checked before any work. A run stopped by SIGTERM or Ctrl-C ends KILLED; runs that a killed
(kill -9) earlier run of the pipeline left RUNNING are ended KILLED, with one line, before starting.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vidseq import atomic
from vidseq.errors import VidseqError
from vidseq.outputs import check_writable
from vidseq.pipeline.spec import (
    Pipeline,
    Stage,
    dump_yaml,
    fingerprint_stages,
    load_pipeline,
    stage_config,
)
from vidseq.pipeline.stages import (
    STAGE_FUNCTIONS,
    StageContext,
    dataset_source,
    find_dataset,
    write_stage_config,
)

MARKER = "stage.json"
FAILED = "failed.json"


class PipelineError(VidseqError):
    """A stage failed; the message says which, why, and that a rerun resumes there."""


@dataclass
class StageRecord:
    """How one stage of a run went."""

    name: str
    key: str
    directory: Path
    status: str  # "ran" | "reused"
    seconds: float
    outputs: dict[str, str]
    metrics: dict[str, float]
    summary: str = ""
    run_id: str | None = None
    model_uri: str | None = None


@dataclass
class PipelineResult:
    """The run: its stages, where tracking went, the logged model and the final metrics."""

    pipeline: Pipeline
    stages: list[StageRecord]
    tracking_uri: str | None
    parent_run_id: str | None
    model_uri: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    experiment_id: str | None = None

    def record(self, name: str) -> StageRecord:
        return next(r for r in self.stages if r.name == name)


def run_pipeline(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    from_stage: str | None = None,
    force: bool = False,
    workdir: str | Path | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    register: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> PipelineResult:
    """Run the pipeline file at ``path``; see the module doc for reuse, failure and tracking."""
    from vidseq import tracking as T

    pipeline = load_pipeline(path, overrides, workdir=workdir)
    if from_stage is not None:
        pipeline.stage(from_stage)  # an unknown name is an error before any work
    fingerprint_stages(pipeline.stages, _data_fingerprints(pipeline))
    tracker = T.open_tracker(uri=tracking_uri, experiment=experiment or pipeline.experiment, enabled=tracking)
    check_writable(pipeline.workdir, what="run --workdir, where every stage writes")  # after the server check
    if stale := tracker.close_stale_runs({"vidseq.pipeline": pipeline.name}):
        echo(_stale_line(pipeline.name, stale))
    pipeline.workdir.mkdir(parents=True, exist_ok=True)
    records: list[StageRecord] = []
    redo = force
    params = T.flatten(pipeline.config.model_dump(mode="json"))
    tags = {
        **T.standard_tags(backbone=_backbone_tag(pipeline)),
        "vidseq.pipeline": pipeline.name,
        "vidseq.workdir": str(pipeline.workdir.resolve()),
    }
    with tracker.run(pipeline.name, params=params, tags=tags) as parent:
        parent.log_text(dump_yaml(pipeline.resolved()), "pipeline.yaml")
        for stage in pipeline.stages:
            redo = redo or stage.name == from_stage
            records.append(
                _run_stage(
                    stage, pipeline, records, tracker, redo=redo, register=register, progress=progress, echo=echo
                )
            )
        result = _result(pipeline, records, tracker, parent)
        parent.log_metrics(result.metrics)
        if result.model_uri:
            parent.set_tags({"vidseq.model_uri": result.model_uri})
    _write_last_run(result)
    return result


def _run_stage(
    stage: Stage,
    pipeline: Pipeline,
    done: list[StageRecord],
    tracker,
    *,
    redo: bool,
    register: str | None,
    progress: bool,
    echo: Callable[[str], None],
) -> StageRecord:
    directory = pipeline.workdir / stage.name / stage.short_key
    upstream = {r.name: {"outputs": r.outputs, "metrics": r.metrics} for r in done}
    marker = _read_marker(directory, stage.key)
    tags = {"vidseq.pipeline": pipeline.name, "vidseq.stage": stage.name, "vidseq.stage_key": stage.key}
    params = _stage_params(stage)
    if marker is not None and not redo:
        return _reuse(stage, directory, marker, tracker, params, tags, echo)
    echo(f"[{stage.name}] running -> {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FAILED).unlink(missing_ok=True)
    start = time.perf_counter()
    with tracker.run(stage.name, params=params, tags=tags, nested=True) as run:
        ctx = StageContext(
            stage.name, stage.config, directory, upstream, run, force=redo, progress=progress, register=register
        )
        try:
            write_stage_config(ctx)
            outcome = STAGE_FUNCTIONS[stage.name](ctx)
        except Exception as exc:
            if getattr(exc, "signum", None) is not None:  # stopped by a signal, not failed: the run ends KILLED
                raise
            _write_failure(directory, stage, exc)
            raise PipelineError(_failure_message(stage, pipeline, directory, exc)) from exc
        run.log_metrics(outcome.metrics)
        seconds = time.perf_counter() - start
        record = StageRecord(
            stage.name,
            stage.key,
            directory,
            "ran",
            seconds,
            outcome.outputs,
            outcome.metrics,
            outcome.summary,
            run.run_id,
            outcome.model_uri,
        )
        _write_marker(record, stage, tracker.uri)
    echo(f"[{stage.name}] done in {seconds:.1f} s: {outcome.summary}")
    return record


def _stale_line(name: str, stale: list) -> str:
    """One line on the runs a killed earlier run of pipeline ``name`` left RUNNING, now KILLED."""
    owners = sorted({run.owner for run in stale})
    parents = [run for run in stale if run.parent_run_id is None or run.parent_run_id not in {r.run_id for r in stale}]
    runs = ", ".join(f"{run.name} {run.run_id}" for run in parents)
    children = len(stale) - len(parents)
    return (
        f"marked KILLED {len(stale)} MLflow run(s) that an earlier run of {name} left RUNNING "
        f"({'; '.join(owners)}: gone): {runs}" + (f" and {children} stage run(s)" if children else "")
    )


def _reuse(
    stage: Stage, directory: Path, marker: dict[str, Any], tracker, params, tags, echo: Callable[[str], None]
) -> StageRecord:
    source = {"vidseq.reused": "true", "vidseq.source_run_id": marker.get("run_id") or ""}
    with tracker.run(stage.name, params=params, tags={**tags, **source}, nested=True) as run:
        run.log_metrics(marker["metrics"])
        model_uri = marker.get("model_uri")
        if model_uri is None or marker.get("tracking_uri") != tracker.uri:
            model_dir = marker["outputs"].get("model")
            model_uri = run.log_model(Path(model_dir), labels=_bundle_labels(model_dir)) if model_dir else None
    echo(f"[{stage.name}] reused {directory} ({marker.get('summary', '')})")
    return StageRecord(
        stage.name,
        stage.key,
        directory,
        "reused",
        0.0,
        marker["outputs"],
        marker["metrics"],
        marker.get("summary", ""),
        run.run_id,
        model_uri,
    )


def _bundle_labels(model_dir: str) -> list[str]:
    return json.loads((Path(model_dir) / "vidseq.json").read_text())["labels"]


def _read_marker(directory: Path, key: str) -> dict[str, Any] | None:
    path = directory / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if marker.get("key") != key or any(not Path(p).exists() for p in marker.get("outputs", {}).values()):
        return None  # another key, or its outputs were deleted: run again
    return marker


def _write_marker(record: StageRecord, stage: Stage, tracking_uri: str | None) -> None:
    marker = {
        "stage": record.name,
        "key": record.key,
        "fingerprint": stage.fingerprint,
        "outputs": record.outputs,
        "metrics": record.metrics,
        "summary": record.summary,
        "run_id": record.run_id,
        "model_uri": record.model_uri,
        "tracking_uri": tracking_uri,
        "seconds": round(record.seconds, 3),
        "finished": datetime.now(timezone.utc).isoformat(),
    }
    atomic.write_text(record.directory / MARKER, json.dumps(marker, indent=2, default=str))


def _write_failure(directory: Path, stage: Stage, exc: BaseException) -> None:
    failure = {
        "stage": stage.name,
        "key": stage.key,
        "error": f"{type(exc).__name__}: {exc}",
        "at": datetime.now(timezone.utc).isoformat(),
    }
    atomic.write_text(directory / FAILED, json.dumps(failure, indent=2))


def _failure_message(stage: Stage, pipeline: Pipeline, directory: Path, exc: BaseException) -> str:
    kept = [s.name for s in pipeline.stages[: pipeline.stages.index(stage)]]
    lines = [f"stage '{stage.name}' failed: {exc if isinstance(exc, VidseqError) else f'{type(exc).__name__}: {exc}'}"]
    if kept:
        lines.append(f"  finished stages are kept ({', '.join(kept)}) under {pipeline.workdir}")
    lines.append(f"  partial outputs: {directory}; run the same command again to resume at '{stage.name}'")
    return "\n".join(lines)


def _stage_params(stage: Stage) -> dict[str, str]:
    from vidseq.tracking import flatten

    return flatten(stage_config(stage))


def _data_fingerprints(pipeline: Pipeline) -> dict[str, Any]:
    """Extract stages that read ``data.source`` (no synth stage before them): a digest of the
    dataset's files (path, label, split, size, modification time), so new or changed videos
    give a new key. Also fails early, before any work, when the source is missing."""
    extra: dict[str, Any] = {}
    for stage in pipeline.stages:
        if stage.name != "extract" or "synth" in stage.inputs:
            continue
        source = dataset_source(stage.config, {})
        found = find_dataset(stage.config, source)
        digest = hashlib.sha256()
        for item in sorted(found.items, key=lambda i: str(i.path)):
            try:
                stat = Path(item.path).stat()
                state = f"{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:  # a dangling link, a file gone: extraction records it as failed, not a crash here
                state = "missing"
            digest.update(f"{Path(item.path).resolve()}|{item.label}|{item.split}|{state}\n".encode())
        extra["extract"] = {
            "source": str(Path(source).resolve()),
            "files": len(found.items),
            "digest": digest.hexdigest(),
        }
    return extra


def _backbone_tag(pipeline: Pipeline) -> str:
    backbone = pipeline.config.backbone
    return f"{backbone.name}/{backbone.pooling}"


def _result(pipeline: Pipeline, records: list[StageRecord], tracker, parent) -> PipelineResult:
    metrics: dict[str, float] = {}
    for record in records:  # later stages win: evaluate's test metrics over train's
        if record.name in ("train", "evaluate"):
            metrics.update({k: v for k, v in record.metrics.items() if k.startswith(("test_", "best_val_"))})
    model_uri = next((r.model_uri for r in reversed(records) if r.model_uri), None)
    uri = tracker.uri if parent.run_id is not None else None  # None: tracking was off
    return PipelineResult(
        pipeline, records, uri, parent.run_id, model_uri, metrics, getattr(tracker, "experiment_id", None)
    )


def _write_last_run(result: PipelineResult) -> None:
    summary = {
        "pipeline": str(result.pipeline.path),
        "tracking_uri": result.tracking_uri,
        "parent_run_id": result.parent_run_id,
        "model_uri": result.model_uri,
        "metrics": result.metrics,
        "stages": [
            {
                "name": r.name,
                "status": r.status,
                "directory": str(r.directory),
                "key": r.key,
                "seconds": round(r.seconds, 3),
                "run_id": r.run_id,
            }
            for r in result.stages
        ],
    }
    atomic.write_text(result.pipeline.workdir / "last_run.json", json.dumps(summary, indent=2))


def stage_directories(pipeline: Pipeline) -> dict[str, Path]:
    """Where each stage of a loaded pipeline writes (for tests and tools)."""
    return {s.name: pipeline.workdir / s.name / s.short_key for s in pipeline.stages}
