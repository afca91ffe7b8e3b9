"""The stage functions a pipeline runs: each calls one library function and reports its outputs.

Place in the data flow: the pipeline runner hands each stage its resolved config, its output
folder and the outputs of the stages it reads; the stage calls ``vidseq.synth``,
``vidseq.features.extract``, ``vidseq.training.train``, ``vidseq.training.evaluate`` or ``vidseq.predict`` and
logs what it made to its MLflow run (a ``RunHandle`` of ``vidseq.tracking``; a null one when
tracking is off). Stages know nothing of caching: the runner decides whether one runs at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseq import metrics as M
from vidseq.config import VidseqConfig, motion_settings, pose_settings, to_yaml
from vidseq.datasets import Dataset, discover_videos
from vidseq.errors import VidseqError
from vidseq.training.distributed import is_main_process


class StageError(VidseqError):
    """A stage cannot do its work (no input data, nothing extracted)."""


@dataclass
class StageContext:
    """What a stage gets: its config, its folder, the outputs it reads, and its MLflow run."""

    name: str
    config: VidseqConfig
    out: Path
    upstream: dict[str, dict[str, Any]]  # stage name -> its record ("outputs", "metrics", ...)
    run: Any  # vidseq.tracking.RunHandle (or the null one)
    force: bool = False
    progress: bool = True
    register: str | None = None

    def output(self, stage: str, name: str) -> str:
        return self.upstream[stage]["outputs"][name]


@dataclass
class StageOutcome:
    """What a stage made: output paths, scalar metrics, a one-line summary, a logged model."""

    outputs: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    model_uri: str | None = None


def run_synth(ctx: StageContext) -> StageOutcome:
    from vidseq.synth import generate_dataset

    result = generate_dataset(ctx.out / "data", ctx.config.synth, overwrite=True)
    labels = ctx.out / "data" / "labels.csv"
    ctx.run.log_artifact(labels)
    return StageOutcome(
        {"data": str(labels)},
        {"videos": float(len(result.paths))},
        f"{len(result.paths)} videos in {len(result.counts)} classes",
    )


def dataset_source(ctx_config: VidseqConfig, upstream: dict[str, dict[str, Any]]) -> str:
    """Where an extract stage reads videos: the synth stage's labels, else ``data.source``."""
    if "synth" in upstream:
        return upstream["synth"]["outputs"]["data"]
    if not ctx_config.data.source:
        raise StageError(
            "no videos to extract: set data.source (e.g. -o data.source=/path/to/clips) "
            "or put a synth stage before extract"
        )
    return ctx_config.data.source


def find_dataset(config: VidseqConfig, source: str) -> Dataset:
    """The videos (and labels) of ``source`` as the ``data`` section describes them."""
    options = config.data.model_dump(exclude={"source", "format"})
    return discover_videos(source, format=config.data.format, **options)


def dataset_rows(found: Dataset) -> list[dict[str, Any]]:
    return [
        {"path": str(i.path), "label": i.label or "", "split": i.split or "", "group": i.group or ""}
        for i in found.items
    ]


def run_extract(ctx: StageContext) -> StageOutcome:
    from vidseq.features import extract

    source = dataset_source(ctx.config, ctx.upstream)
    found = find_dataset(ctx.config, source)
    ctx.run.log_dataset(dataset_rows(found), name=Path(source).name or "videos", source=str(source), context="extract")
    cfg = ctx.config
    if cfg.actors.enabled:
        return _extract_actors(ctx, found, source)
    earlier = [d for d in ctx.out.parent.iterdir() if d.is_dir() and d != ctx.out]  # other keys' stores
    result = extract(
        found,
        out=ctx.out,
        backbone=cfg.backbone,
        sampling=cfg.sampling,
        config=cfg.extract,
        io=cfg.io,
        force=ctx.force,
        progress=ctx.progress,
        reuse_from=[] if ctx.force else earlier,
        motion=motion_settings(cfg),
        pose=pose_settings(cfg),
    )
    done = result.extracted + result.reused
    if done == 0:
        first = result.failed[0]["error"] if result.failed else "no videos found"
        raise StageError(f"no video of {source} could be extracted ({len(result.failed)} failed; first: {first})")
    ctx.run.log_artifact(result.store.manifest_path)
    ctx.run.log_artifact(result.store.directory / "store.json")
    metrics = {
        "videos": float(done),
        "extracted": float(result.extracted),
        "reused": float(result.reused),
        "failed": float(len(result.failed)),
        "frames": float(result.frames),
        "duplicates": float(result.duplicates),
        "frames_per_s": result.frames / result.seconds if result.seconds else 0.0,
    }
    outputs = {"store": str(result.store.directory)}
    for stream, made in result.extras.items():
        for name in ("manifest.csv", "store.json"):
            ctx.run.log_artifact(made.store.directory / name, artifact_path=stream)
        metrics[f"{stream}_videos"] = float(made.extracted + made.reused)
        metrics[f"{stream}_failed"] = float(len(made.failed))
        outputs[f"{stream}_store"] = str(made.store.directory)
    return StageOutcome(outputs, metrics, result.summary())


def _extract_actors(ctx: StageContext, found: Dataset, source: str) -> StageOutcome:
    """The extract stage with ``actors.enabled``: a store entry per tracked person (crops, trajectory
    and, with motion, flow inside the crops); the train stage reads the crops' store."""
    from vidseq.features.actor_extraction import extract_actors

    cfg = ctx.config
    result = extract_actors(
        found,
        out=ctx.out,
        actors=cfg.actors,
        backbone=cfg.backbone,
        config=cfg.extract,
        io=cfg.io,
        motion=motion_settings(cfg),
        pose=pose_settings(cfg),
        force=ctx.force,
        progress=ctx.progress,
    )
    if result.tracked + result.reused == 0:
        first = (result.failed or result.empty or [{"error": "no videos found"}])[0]["error"]
        raise StageError(f"no person was tracked in any video of {source} (first: {first})")
    for store in result.stores.values():
        store.write_manifest_view()
        ctx.run.log_artifact(store.manifest_path, artifact_path=store.stream)
    metrics = {
        "videos": float(result.tracked + result.reused),
        "tracked": float(result.tracked),
        "tracks": float(result.tracks),
        "empty": float(len(result.empty)),
        "failed": float(len(result.failed)),
        "frames_per_s": result.frames / result.seconds if result.seconds else 0.0,
    }
    outputs = {"store": str(result.store.directory)}
    if "motion" in result.stores:
        outputs["motion_store"] = str(result.stores["motion"].directory)
    return StageOutcome(outputs, metrics, result.summary())


def run_train(ctx: StageContext) -> StageOutcome:
    from vidseq.training.runs import holds_run

    resume = holds_run(ctx.out) and not ctx.force  # late fusion: the streams' own run folders
    _, outcome = tracked_train(
        ctx.config,
        features=ctx.output("extract", "store"),
        out=ctx.out,
        run=ctx.run,
        resume=resume,
        overwrite=ctx.force,
        progress=ctx.progress,
        register=ctx.register,
    )
    return outcome


def tracked_train(
    config: VidseqConfig,
    *,
    features: str | Path | None,
    out: str | Path,
    run: Any,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    register: str | None = None,
) -> tuple[Any, StageOutcome]:
    """``vidseq.training.train.train`` with its epochs, metrics, reports, dataset and model logged to
    ``run`` (a tracking RunHandle, or the null one); returns the TrainResult and the outcome."""
    from vidseq.predict import write_bundle
    from vidseq.training.runs import features_dir
    from vidseq.training.train import train

    out = Path(out)
    store = str(features_dir(features or config.train.features))

    logged: set[tuple[str, int]] = set()  # (metric, epoch) already in this run: each is logged once

    def log_epoch(row: dict[str, float]) -> None:
        step = int(row["epoch"])
        values = {k: v for k, v in row.items() if k != "epoch" and (k, step) not in logged}
        if values:
            run.log_metrics(values, step=step)
            logged.update((k, step) for k in values)

    result = train(
        model_config=config.model,
        config=config.train,
        evaluate_config=config.evaluate,
        features=store,
        out=out,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        on_epoch_end=log_epoch,
    )
    if not is_main_process():  # under DDP, rank 0 alone logs and writes the model folder
        return result, StageOutcome({"checkpoint": str(result.best_checkpoint)})
    if resume:  # the epochs before the resume point went to the interrupted attempt's run: add them
        for row in result.history:  # here too, so this run holds the whole curve, each epoch once
            log_epoch(row)
    metrics = {"best_epoch": float(result.best_epoch), "epochs": float(len(result.history))}
    # The best model's validation metrics: named apart from the per-epoch val_* curves.
    metrics.update({f"best_val_{k}": v for k, v in M.scalar_metrics(result.val).items()})
    if result.test is not None:
        metrics.update({f"test_{k}": v for k, v in M.scalar_metrics(result.test).items()})
    metrics.update(_stream_metrics(result.extra))
    run.log_dataset(_training_rows(result.best_checkpoint, store), name="features", source=store, context="training")
    for name in ("config.yaml", "labels.json", "curves.png", "history.json", "data_warnings.json"):
        run.log_artifact(out / name)
    run.log_artifacts(_reports(out), artifact_path="reports")
    for stream in result.extra.get("streams", {}):  # late fusion: each stream's own run folder
        run.log_artifacts(_reports(out / stream), artifact_path=f"reports/{stream}")
    bundle = write_bundle(result.best_checkpoint, out / "model")
    model_uri = run.log_model(bundle, labels=result.labels, register=register)
    summary = f"best epoch {result.best_epoch}, val accuracy {result.val['accuracy']:.3f}"
    if result.test is not None:
        summary += f", test accuracy {result.test['accuracy']:.3f}"
    outcome = StageOutcome(
        {"checkpoint": str(result.best_checkpoint), "model": str(bundle)}, metrics, summary, model_uri
    )
    return result, outcome


def _stream_metrics(extra: dict[str, Any]) -> dict[str, float]:
    """Late fusion: each stream's best val and test metrics (``motion_test_accuracy``, ...) and
    the fusion weights (``fusion_weight_motion``), beside the fused model's."""
    metrics: dict[str, float] = {}
    for stream, record in extra.get("streams", {}).items():
        metrics[f"{stream}_best_epoch"] = float(record["best_epoch"])
        for split, prefix in (("val", "best_val"), ("test", "test")):
            if record.get(split) is not None:
                metrics.update({f"{stream}_{prefix}_{k}": v for k, v in M.scalar_metrics(record[split]).items()})
    fusion = extra.get("fusion") or {}
    streams = list(extra.get("streams", {}))
    for stream, weight in zip(streams, fusion.get("weights") or []):
        metrics[f"fusion_weight_{stream}"] = float(weight)
    return metrics


def _training_rows(checkpoint: Path, store: str) -> list[dict[str, Any]]:
    """The videos a model was trained on: path, label and the split recorded at training time."""
    from vidseq.features import FeatureStore
    from vidseq.training import checkpoint as checkpoints

    splits = checkpoints.load(checkpoint).get("splits", {})
    rows = FeatureStore.load_existing(store).read_manifest()
    return [{"path": r["path"], "label": r["label"], "split": splits[r["path"]]} for r in rows if r["path"] in splits]


def _reports(folder: Path) -> Path:
    """A folder of the report files of a run folder (copied, so checkpoints are not uploaded twice)."""
    import shutil

    reports = folder / "reports"
    reports.mkdir(exist_ok=True)
    for pattern in ("*_confusion.png", "*_confusion.csv", "*_per_class.csv", "*_metrics.json"):
        for file in folder.glob(pattern):
            shutil.copyfile(file, reports / file.name)
    return reports


def run_evaluate(ctx: StageContext) -> StageOutcome:
    from vidseq.training.evaluate import evaluate

    result = evaluate(ctx.output("train", "checkpoint"), config=ctx.config.evaluate, out=ctx.out)
    split = ctx.config.evaluate.split
    metrics = {f"{split}_{k}": v for k, v in M.scalar_metrics(result.metrics).items()}
    ctx.run.log_artifacts(ctx.out, artifact_path="evaluation")
    return StageOutcome({"report": str(ctx.out)}, metrics, f"{split}: {_one_line(metrics, split)}")


def _one_line(metrics: dict[str, float], split: str) -> str:
    keys = ("accuracy", "top5_accuracy", "mean_class_accuracy", "macro_f1")
    return ", ".join(f"{k} {metrics[f'{split}_{k}']:.3f}" for k in keys if f"{split}_{k}" in metrics)


def run_predict(ctx: StageContext) -> StageOutcome:
    from vidseq.predict import Predictor
    from vidseq.predict.batch import predict_batch

    cfg = ctx.config.predict
    if not cfg.input:
        raise StageError("the predict stage needs predict.input (e.g. -o predict.input=/path/to/videos)")
    predictor = Predictor.from_checkpoint(
        ctx.output("train", "checkpoint"), device=ctx.config.extract.device, extract_config=ctx.config.extract
    )
    out = ctx.out / "predictions.csv"
    if ctx.force:
        out.unlink(missing_ok=True)
    if predictor.actors is not None:
        return _predict_actors(ctx, predictor, cfg.input, out)
    result = predict_batch(
        predictor, [cfg.input], out=out, top_k=cfg.top_k, window=cfg.window, hop=cfg.hop, progress=ctx.progress
    )
    ctx.run.log_artifact(out)
    total = result.predicted + result.failed + result.skipped
    metrics = {"videos": float(total), "predicted": float(result.predicted), "failed": float(result.failed)}
    return StageOutcome(
        {"predictions": str(out)}, metrics, f"{result.predicted} videos labelled, {result.failed} failed -> {out}"
    )


def _predict_actors(ctx: StageContext, predictor, source: str, out: Path) -> StageOutcome:
    """The predict stage of a per-person model: a row per tracked person (as ``predict --actors``)."""
    import csv
    import io

    from vidseq.atomic import write_text
    from vidseq.predict.actors import predict_actors
    from vidseq.predict.batch import collect_inputs

    paths, errors, _ = collect_inputs([source])
    rows = [row.as_row() for row in predict_actors(predictor, paths, progress=ctx.progress)]
    rows += [{"path": path, "error": error} for path, error in errors.items()]
    text = io.StringIO()
    fields = ["path", "track", "first", "last", "frames", "label", "probability", "error"]
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, text.getvalue())
    ctx.run.log_artifact(out)
    people = sum(1 for row in rows if row.get("track") is not None)
    failed = sum(1 for row in rows if row.get("track") is None and "no person" not in (row.get("error") or ""))
    metrics = {"videos": float(len(paths) + len(errors)), "people": float(people), "failed": float(failed)}
    summary = f"{people} people labelled, {failed} videos failed -> {out}"
    return StageOutcome({"predictions": str(out)}, metrics, summary)


def write_stage_config(ctx: StageContext) -> Path:
    """The stage's resolved config, beside its outputs and in its MLflow run."""
    from vidseq import atomic

    path = ctx.out / "stage_config.yaml"
    atomic.write_text(path, to_yaml(ctx.config))
    ctx.run.log_artifact(path)
    return path


STAGE_FUNCTIONS: dict[str, Callable[[StageContext], StageOutcome]] = {
    "synth": run_synth,
    "extract": run_extract,
    "train": run_train,
    "evaluate": run_evaluate,
    "predict": run_predict,
}
