"""The ``vidseq`` command line: thin wrappers that parse, build a config and call one function.

Every command turns a vidseq error into one red line and a non-zero exit code; no Python
traceback reaches the user for bad input (set VIDSEQ_DEBUG=1 to see one).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from vidseq import __version__
from vidseq.config import VidseqConfig, load_config, to_yaml
from vidseq.errors import Interrupted, VidseqError
from vidseq.tracking import exit_on_interrupt  # cheap: no mlflow until a run starts

app = typer.Typer(
    help="vidseq: action recognition in video with per-frame CNN/YOLO features and LSTM/GRU "
    "heads.\n\nvideos -> frames -> backbone features -> sequences -> LSTM/GRU -> labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML config file (see configs/); defaults apply where it is silent."
)
OVERRIDE_OPTION = typer.Option(
    [], "--override", "-o", help="Override one config key: -o section.key=value (repeatable)."
)


def _friendly(func: Callable) -> Callable:
    """Run a command; report a VidseqError as one line and exit 2 (traceback with VIDSEQ_DEBUG)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VidseqError as exc:
            if os.environ.get("VIDSEQ_DEBUG"):
                raise
            stopped = isinstance(exc, Interrupted)
            err_console.print(f"[bold red]{'stopped' if stopped else 'error'}:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(128 + exc.signum if stopped else 2) from None

    return wrapper


def _config(config: Optional[Path], overrides: list[str]) -> VidseqConfig:
    return load_config(config, overrides)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"vidseq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """vidseq: action recognition in video."""


@app.command()
@_friendly
def probe(
    paths: list[Path] = typer.Argument(..., help="Video files or folders (searched recursively)."),
    backend: str = typer.Option("auto", help="Decoder: auto, decord, pyav, opencv, torchcodec."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per line instead."),
) -> None:
    """Show each video's frames, fps, duration, size and codec; a bad file gets a row with its error.

    Exits 1 when any file could not be probed.
    """
    from vidseq.io import probe as probe_video

    files = _expand_paths(paths)
    rows = []
    for path in files:
        try:
            info = probe_video(path, backend=backend)
            rows.append({"path": str(path), **_info_dict(info), "error": ""})
        except VidseqError as exc:
            rows.append({"path": str(path), "error": getattr(exc, "reason", str(exc))})
    _print_probe(rows, as_json=as_json)
    failed = sum(1 for row in rows if row["error"])
    if failed:
        err_console.print(f"{failed} of {len(rows)} file(s) could not be read.")
        raise typer.Exit(1)


@app.command()
@_friendly
def synth(
    out: Path = typer.Argument(..., help="Output folder (a folder per class is written into it)."),
    config: Optional[Path] = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    videos_per_class: Optional[int] = typer.Option(None, "--per-class", help="Videos per class."),
    num_frames: Optional[int] = typer.Option(None, "--frames", help="Frames per video."),
    size: Optional[int] = typer.Option(None, help="Frame width and height in pixels."),
    seed: Optional[int] = typer.Option(None, help="Random seed (same seed, same dataset)."),
    overwrite: bool = typer.Option(
        False, help="Write into a non-empty folder that vidseq synth did not make (its other files are kept)."
    ),
    kind: Optional[str] = typer.Option(
        None, help="shapes (moving shapes) or camera (pan/zoom/rotate over real photos) (synth.kind)."
    ),
    images: Optional[Path] = typer.Option(
        None, help="camera: a folder of images or videos to film (synth.images); default: scikit-image's photos."
    ),
) -> None:
    """Write a synthetic labelled action dataset whose classes differ only by motion and order.

    Pairs such as move_left/move_right are time-reversals of each other: a model that
    ignores frame order cannot tell them apart; a recurrent model can.
    """
    from vidseq.progress import progress_bar
    from vidseq.synth import generate_dataset

    flags = {"videos_per_class": videos_per_class, "num_frames": num_frames, "size": size, "seed": seed,
             "kind": kind, "images": images}
    extra = [f"synth.{key}={value}" for key, value in flags.items() if value is not None]
    cfg = _config(config, [*override, *extra]).synth
    with progress_bar(None, desc="synth", unit="video") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = generate_dataset(out, cfg, overwrite=overwrite, progress=advance)
    console.print(
        f"wrote {len(result.paths)} videos in {len(result.counts)} classes to {out} "
        f"(labels: {out / 'labels.csv'})"
    )


@app.command()
@_friendly
def dataset(
    source: Path = typer.Argument(..., help="Folder per class, CSV, list file or UCF101/HMDB51 split folder."),
    format: str = typer.Option("auto", help="auto, folder, csv, list, ucf101, hmdb51."),
    video_root: Optional[Path] = typer.Option(None, help="Where relative paths in list/split files start."),
    split: int = typer.Option(1, help="UCF101/HMDB51 official split number."),
    label_names: Optional[Path] = typer.Option(None, help="List files: class names in index order."),
    group_pattern: Optional[str] = typer.Option(
        None, help="Regex on file names whose first group names a video's source (UCF101: _g(\\d+)_)."
    ),
    allow_split_leak: bool = typer.Option(
        False, "--allow-split-leak", help="Accept an explicit split that puts one group on both sides."
    ),
) -> None:
    """Show what vidseq finds in a labelled dataset: classes, splits, groups, missing and skipped files.

    An explicit split that puts clips of one group (one source video or scene) on both sides is
    an error unless --allow-split-leak: such a test split measures memory, not recognition.
    """
    from vidseq.datasets import discover

    found = discover(
        source,
        format=format,
        video_root=video_root,
        split=split,
        label_names=label_names,
        group_pattern=group_pattern,
        allow_split_leak=allow_split_leak,
    )
    console.print(found.summary(), highlight=False)
    _show_splits(found, group_pattern)


def _show_splits(found, group_pattern: Optional[str]) -> None:
    """Clips per class and split, where the groups came from, and what would make scores mislead."""
    from rich.markup import escape

    from vidseq.splits_report import groups_source, split_report

    labels, splits, groups = ([getattr(i, key) for i in found.items] for key in ("label", "split", "group"))
    source = groups_source([i.path.name for i in found.items], groups, format=found.format, group_pattern=group_pattern)
    report = split_report(labels, splits, groups, classes=found.labels, groups_from=source)
    console.print(report.text(), highlight=False, markup=False)
    for line in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


@app.command()
@_friendly
def extract(
    source: Path = typer.Argument(
        ..., help="A video, a folder of videos, a file list, or any dataset format (see `vidseq dataset`)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Root of feature stores (extract.out)."),
    config: Optional[Path] = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    backbone: Optional[str] = typer.Option(None, help="Backbone name (backbone.name)."),
    batch_size: Optional[int] = typer.Option(None, help="Frames per forward (extract.batch_size)."),
    workers: Optional[int] = typer.Option(None, help="Decode worker processes (extract.num_workers)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N (extract.device)."),
    engine: Optional[str] = typer.Option(None, help="local or ray (extract.engine; ray needs the ray extra)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join (extract.ray_address); none: a local Ray."),
    motion: bool = typer.Option(
        False, "--motion",
        help="Also extract the optical-flow motion stream, from the same decode, into a second store beside "
        "the features (motion.enabled; also on when train.streams names motion; settings: -o motion.KEY=VALUE).",
    ),
    force: bool = typer.Option(False, "--force", help="Re-extract videos that are already done."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Extract per-frame backbone features of every video into a resumable feature store.

    One .npz per video (features (T, D), frame indices, timestamps) and a manifest.csv, in a
    folder keyed by backbone, weights, preprocessing and sampling. Re-running skips finished
    videos. A video that fails is recorded in the manifest and the run goes on; the exit code
    is 1 when any video failed (in any stream).

    With --motion, each sampled frame also gets the pooled optical flow to the frame motion.step
    later (the next one by default; 2*grid*grid numbers: how the picture moves, which a frozen
    CNN does not see), from the same decode (no second pass over the video), in a linked
    motion-<method>-<digest> store under the same root, with its own manifest; each stream
    resumes on its own. A video too short for a frame pair fails in the motion manifest only.
    """
    from vidseq.config import wants_motion
    from vidseq.datasets import discover_videos
    from vidseq.features import extract as run_extract

    flags = {"extract.out": out, "backbone.name": backbone, "extract.batch_size": batch_size,
             "extract.num_workers": workers, "extract.device": device, "extract.engine": engine,
             "extract.ray_address": ray_address, "motion.enabled": True if motion else None}
    cfg = _config(config, [*override, *(f"{k}={v}" for k, v in flags.items() if v is not None)])
    data_options = cfg.data.model_dump(exclude={"source"})
    data_options.pop("format")
    found = discover_videos(source, format=cfg.data.format, **data_options)
    motion_cfg = cfg.motion.model_copy(update={"enabled": True}) if wants_motion(cfg) else None
    result = run_extract(
        found, out=cfg.extract.out, backbone=cfg.backbone, sampling=cfg.sampling,
        config=cfg.extract, io=cfg.io, force=force, progress=not quiet, motion=motion_cfg,
    )
    console.print(result.summary(), highlight=False)
    for row in result.failed:
        err_console.print(f"[red]failed:[/] {row['path']}: {row['error']}", highlight=False)
    if result.motion is not None:
        for row in result.motion.failed:
            err_console.print(f"[red]motion failed:[/] {row['path']}: {row['error']}", highlight=False)
    if not result.ok or (result.motion is not None and not result.motion.ok):
        raise typer.Exit(1)


@app.command()
@_friendly
@exit_on_interrupt  # SIGTERM / Ctrl-C: the MLflow run ends KILLED, one line, exit 143 / 130
def train(
    features: Optional[Path] = typer.Argument(
        None, help="Feature store folder from `vidseq extract` (or its --out root if it holds one) (train.features)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (train.out)."),
    config: Optional[Path] = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    model: Optional[str] = typer.Option(None, help="lstm, gru, meanpool, tcn (model.name)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (train.epochs)."),
    streams: Optional[str] = typer.Option(
        None, help="Comma-separated feature streams: appearance, motion (train.streams; motion must be extracted)."
    ),
    fusion: Optional[str] = typer.Option(None, help="Several streams: late or early (train.fusion)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again in an --out that holds a run."),
    ddp: Optional[int] = typer.Option(
        None, "--ddp", min=1, help="Train with DistributedDataParallel in N processes on this machine (torchrun)."
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, help="Log the run to MLflow at this URI (or set --track for $MLFLOW_TRACKING_URI / sqlite:///mlflow.db)."
    ),
    track: bool = typer.Option(False, "--track", help="Log the run to MLflow (see --tracking-uri)."),
    experiment: str = typer.Option("vidseq-train", help="MLflow experiment when tracking."),
    register: Optional[str] = typer.Option(None, help="When tracking: register the model under this name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an LSTM/GRU (or a baseline) on stored feature sequences.

    Writes last.pt every epoch and best.pt on the best validation metric (both load with
    torch.load(weights_only=True)), curves.png, history.json, val/test metrics with
    confusion matrices, and model/ (the model for `vidseq predict`). After a kill, --resume
    continues where the run stopped. With --track (or --tracking-uri) the run is logged to
    MLflow: epochs, metrics, reports and the model. Under torchrun (or --ddp N) every process
    trains its share and only rank 0 writes checkpoints and logs.

    Two streams (--streams appearance,motion, after `vidseq extract --motion`): --fusion late
    trains a model per stream in --out/<stream>/ and averages their probabilities with a weight
    chosen on val (best.pt is the fused model); --fusion early trains one model on both.
    """
    if ddp is not None:
        _relaunch_under_torchrun(ddp)
        return
    from vidseq.metrics import format_report
    from vidseq.pipeline.stages import tracked_train
    from vidseq.tracking import flatten, open_tracker, standard_tags, ui_hint

    flags = {"train.features": features, "train.out": out, "model.name": model, "train.epochs": epochs,
             "train.fusion": fusion, "train.streams": f"[{streams}]" if streams else None}
    cfg = _config(config, [*override, *(f"{k}={v}" for k, v in flags.items() if v is not None)])
    from vidseq.distributed import is_main_process

    main_process = is_main_process()
    tracking = (track or tracking_uri is not None) and main_process
    tracker = open_tracker(uri=tracking_uri, experiment=experiment, enabled=tracking)  # checked before work
    from vidseq.runs import holds_run

    if tracking and holds_run(cfg.train.out) and not (resume or overwrite):
        raise VidseqError(f"{cfg.train.out} already holds a training run: pass --resume to continue it "
                          "or --overwrite to start again")
    if stale := tracker.close_stale_runs():  # runs a killed (kill -9) earlier process left RUNNING here
        console.print(f"marked KILLED {len(stale)} MLflow run(s) left RUNNING by a process that is gone: "
                      + ", ".join(f"{r.name} {r.run_id} ({r.owner})" for r in stale), highlight=False, markup=False)
    params = flatten(cfg.model_dump(mode="json", include={"model", "train", "evaluate"}))
    tags = standard_tags()
    with tracker.run("train", params=params, tags=tags) as run:
        result, outcome = tracked_train(cfg, features=cfg.train.features, out=cfg.train.out,
                                        run=run, resume=resume, overwrite=overwrite,
                                        progress=not quiet and main_process, register=register)
        run.log_metrics(outcome.metrics)
    if not main_process:
        return
    console.print(f"best epoch {result.best_epoch} of {len(result.history)}; run folder {result.out}")
    for stream, record in result.extra.get("streams", {}).items():
        test = f", test accuracy {record['test']['accuracy']:.3f}" if record.get("test") else ""
        console.print(f"  {stream}: val accuracy {record['val']['accuracy']:.3f}{test}")
    if (result.extra.get("fusion") or {}).get("weights"):
        weights = ", ".join(f"{s} {w:.2f}" for s, w in zip(result.extra.get("streams", {}), result.extra["fusion"]["weights"]))
        console.print(f"  late fusion weights (chosen on val): {weights}")
    if tracking:
        console.print(f"MLflow run {run.run_id}; results: {ui_hint(tracker.uri, tracker.experiment_id)}", highlight=False, markup=False)
    console.print("validation:\n" + format_report(result.val), highlight=False)
    if result.test is not None:
        console.print("test:\n" + format_report(result.test), highlight=False)


def _relaunch_under_torchrun(nproc: int) -> None:
    """Run this same `vidseq train` command (without --ddp) in ``nproc`` processes."""
    import subprocess
    import sys

    args, skip = [], False
    for arg in sys.argv[2:]:  # sys.argv: [vidseq, train, ...]
        if skip:
            skip = False
        elif arg == "--ddp":
            skip = True
        elif not arg.startswith("--ddp="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "vidseq", "train", *args]
    done = subprocess.run(command)
    if done.returncode:
        raise typer.Exit(done.returncode)


@app.command()
@_friendly
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `vidseq train` (best.pt)."),
    features: Optional[Path] = typer.Option(None, help="Feature store (default: the one it was trained on)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: eval-<split>/ beside it)."),
    config: Optional[Path] = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    split: Optional[str] = typer.Option(None, help="train, val, test or all (evaluate.split)."),
    views: Optional[int] = typer.Option(None, help="Temporal views averaged per video (evaluate.views)."),
) -> None:
    """Top-1, top-5, mean class accuracy, macro F1, confusion matrix (PNG, CSV), per-class report."""
    from vidseq.evaluate import evaluate as run_evaluate

    flags = {"evaluate.split": split, "evaluate.views": views}
    cfg = _config(config, [*override, *(f"{k}={v}" for k, v in flags.items() if v is not None)])
    result = run_evaluate(checkpoint, config=cfg.evaluate, features=features, out=out)
    console.print(result.summary(), highlight=False)
    console.print(f"reports in {result.out}")


@app.command()
@_friendly
def predict(
    inputs: Optional[list[Path]] = typer.Argument(
        None, help="Videos, folders (searched recursively) or text files listing videos."
    ),
    model: str = typer.Option(
        ..., "--model", "-m",
        help="best.pt of `vidseq train`, a model folder, or an MLflow model URI (models:/NAME/1, runs:/ID/model).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write rows to FILE.csv or FILE.jsonl; an existing file is appended to: its predicted videos are "
        "skipped, its failed ones tried again."
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Labels (with probabilities) per video."),
    window: Optional[float] = typer.Option(
        None, help="Seconds per window: label every window of each video and join them into segments "
        "(--stream/--render default: the training clips' median length)."
    ),
    hop: Optional[float] = typer.Option(None, help="Seconds between windows (default: half a window)."),
    smooth: int = typer.Option(1, min=1, help="--window: average each window's probabilities with its neighbours'."),
    carry_state: bool = typer.Option(
        False, "--carry-state",
        help="--window: carry the LSTM/GRU state along the video, one step per hop (streaming-capable models).",
    ),
    stream: Optional[str] = typer.Option(
        None, help="Label a live source as frames arrive: a camera index (0), a file or a URL."
    ),
    render: Optional[Path] = typer.Option(None, help="Write the (one) input video with its labels drawn on it (.mp4)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    workers: Optional[int] = typer.Option(None, help="Decode worker processes (extract.num_workers)."),
    engine: str = typer.Option("local", help="local or ray: how frames are decoded and embedded (as `vidseq extract`)."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: the cluster to join; none: a local Ray."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for models:/ and runs:/ URIs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label videos with a trained model: one row per video, or per window with --window.

    Decoding and the backbone run as in `vidseq extract` (parallel decode, batched frames).
    A file that cannot be read gets a row with its error and the run goes on (exit code 1).
    With --window, each video becomes a timeline: a label per window and the windows of one
    label joined into segments. --stream prints a label per window of a live source, with the
    latency from its last frame to the label. --render draws the labels onto the video.
    """
    from vidseq.config import ExtractConfig
    from vidseq.predict import load_predictor

    if not inputs and stream is None:
        raise VidseqError("give videos, folders or list files to label (or --stream SOURCE)")
    options = {"engine": engine, "ray_address": ray_address, "num_workers": workers}
    extract_config = ExtractConfig(**{k: v for k, v in options.items() if v is not None})
    predictor = load_predictor(_local_model(model, tracking_uri), device=device, extract_config=extract_config)
    if stream is not None:
        _predict_stream(predictor, stream, window or predictor.default_window, hop)
        return
    if render is not None:
        _predict_render(predictor, inputs, render, window or predictor.default_window, hop)
        return
    _predict_files(predictor, inputs, out=out, top_k=top_k, window=window, hop=hop, quiet=quiet,
                   smooth=smooth, carry_state=carry_state)


def _local_model(model: str, tracking_uri: Optional[str]) -> Path:
    """A local path as it is; an MLflow URI downloaded (or found in a local store) first."""
    if Path(model).exists() or ":/" not in model:
        return Path(model)
    from vidseq.tracking import download_model

    return download_model(model, tracking_uri=tracking_uri)


def _predict_files(predictor, inputs, *, out, top_k, window, hop, quiet, smooth, carry_state) -> None:
    from vidseq.predict.batch import predict_batch

    result = predict_batch(predictor, inputs, out=out, top_k=top_k, window=window, hop=hop, smooth=smooth,
                           carry_state=carry_state, progress=not quiet)
    if out is None:
        console.print(_rows_table(result, windowed=window is not None))
    console.print(f"{result.predicted} predicted, {result.skipped} already in {out}, {result.failed} failed"
                  if out is not None else f"{result.predicted} predicted, {result.failed} failed", highlight=False)
    for row in result.rows:
        if row.get("error"):
            err_console.print(f"failed: {row['path']}: {row['error']}", highlight=False, markup=False)
    if result.passed_over:
        err_console.print(f"{len(result.passed_over)} file(s) in the folders are not videos and were passed over "
                          f"(e.g. {result.passed_over[0]})", highlight=False, markup=False)
    if result.failed:
        raise typer.Exit(1)


def _rows_table(result, *, windowed: bool) -> Table:
    if windowed:
        columns = ["path", "start", "end", "label", "probability", "error"]
        rows = [r for r in result.rows if r.get("kind") in ("segment", "video")]
    else:
        columns = ["path", "label", "probability", "top_labels", "frames", "seconds", "error"]
        rows = result.rows
    table = Table(*columns, title="segments" if windowed else None)
    for row in rows:
        cells = [Path(row["path"]).name, *(str(row.get(c, "")) for c in columns[1:])]
        table.add_row(*cells, style="red" if row.get("error") else None)
    return table


def _predict_stream(predictor, source: str, window: float, hop: Optional[float]) -> None:
    from vidseq.predict.stream import stream_labels

    for item in stream_labels(predictor, source, window=window, hop=hop or window / 2):
        console.print(f"{item.start:8.2f}-{item.end:8.2f} s  {item.label:<20} {item.probability:.3f}  "
                      f"latency {item.latency * 1000:.0f} ms", highlight=False, markup=False)


def _predict_render(predictor, inputs, render: Path, window: float, hop: Optional[float]) -> None:
    from vidseq.predict.batch import collect_inputs
    from vidseq.predict.render import render_video
    from vidseq.predict.windows import predict_timeline

    paths, errors, _ = collect_inputs(inputs)
    if errors or len(paths) != 1:
        problem = "; ".join(f"{p}: {e}" for p, e in errors.items()) or f"got {len(paths)} videos"
        raise VidseqError(f"--render draws on one video: {problem}")
    timeline = predict_timeline(predictor, paths[0], window=window, hop=hop or window / 2)
    if timeline.error:
        raise VidseqError(f"{paths[0]}: {timeline.error}")
    spans = [(s.start, s.end, s.label, s.probability) for s in timeline.segments]
    result = render_video(paths[0], render, spans)
    console.print(f"wrote {result.out} ({result.frames} frames); segments:", highlight=False)
    for start, end, label, probability in spans:
        console.print(f"  {start:8.2f}-{end:8.2f} s  {label}  {probability:.3f}", highlight=False, markup=False)


@app.command("run")
@_friendly
@exit_on_interrupt  # SIGTERM / Ctrl-C: the MLflow runs end KILLED, one line, exit 143 / 130
def run_pipeline_command(
    pipeline: Path = typer.Argument(..., help="A pipeline file, e.g. pipelines/quickstart.yaml."),
    override: list[str] = typer.Option(
        [], "--override", "-o",
        help="section.key=value for every stage, stage.section.key=value for one (repeatable).",
    ),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Recompute this stage and the ones after it."),
    force: bool = typer.Option(False, "--force", help="Recompute every stage."),
    workdir: Optional[Path] = typer.Option(None, help="Where stage outputs go (default: the pipeline's workdir)."),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."
    ),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the pipeline's)."),
    register: Optional[str] = typer.Option(None, help="Register the trained model under this name."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not log to MLflow."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a stage pipeline (synth, extract, train, evaluate, predict), tracked in MLflow.

    Every stage's outputs go to WORKDIR/<stage>/<key>/, where the key is a digest of the
    stage's config and inputs: a stage whose key already finished is reused, so changing only
    a training option does not extract again. A failing stage stops the run with its error;
    running the same command again resumes at that stage. One MLflow parent run per pipeline
    run, a nested run per stage; the trained model is logged as a pyfunc model.
    """
    from vidseq.pipeline import run_pipeline
    from vidseq.tracking import ui_hint

    result = run_pipeline(
        pipeline, override, from_stage=from_stage, force=force, workdir=workdir, tracking=not no_tracking,
        tracking_uri=tracking_uri, experiment=experiment, register=register, progress=not quiet,
        echo=lambda line: console.print(line, highlight=False, markup=False),
    )
    reused = sum(1 for r in result.stages if r.status == "reused")
    console.print(f"\npipeline {result.pipeline.name}: {len(result.stages) - reused} stage(s) ran, "
                  f"{reused} reused; outputs under {result.pipeline.workdir}", highlight=False)
    headline = ("accuracy", "top5", "mean_class_accuracy", "macro_f1")
    for prefix, split in (("best_val_", "val"), ("test_", "test")):
        shown = [f"{k} {result.metrics[prefix + k]:.3f}" for k in headline if prefix + k in result.metrics]
        if shown:
            console.print(f"{split}: " + ", ".join(shown), highlight=False)
    if result.model_uri:
        console.print(f"model: {result.model_uri}  (mlflow.pyfunc.load_model(uri).predict([video paths]))", markup=False,
                      highlight=False)
    if result.tracking_uri:
        console.print(f"results: {ui_hint(result.tracking_uri, result.experiment_id)}", highlight=False,
                      markup=False)


@config_app.command("show")
@_friendly
def config_show(config: Optional[Path] = CONFIG_OPTION, override: list[str] = OVERRIDE_OPTION) -> None:
    """Print the resolved configuration (defaults + file + overrides) as YAML."""
    typer.echo(to_yaml(_config(config, override)), nl=False)


@config_app.command("check")
@_friendly
def config_check(files: list[Path] = typer.Argument(..., help="Config files to validate.")) -> None:
    """Validate config files; exits 2 naming the first bad key."""
    for path in files:
        load_config(path)
        console.print(f"{path}: ok")


def _expand_paths(paths: list[Path]) -> list[Path]:
    from vidseq.datasets import VIDEO_EXTENSIONS

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            )
        else:
            files.append(path)  # a missing or non-video file still gets its own error row
    return files


def _info_dict(info) -> dict:
    return {
        "frames": info.num_frames,
        "fps": round(info.fps, 3),
        "duration_s": round(info.duration, 3),
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "backend": info.backend,
    }


_PROBE_COLUMNS = ["path", "frames", "fps", "duration_s", "width", "height", "codec", "backend", "error"]


def _print_probe(rows: list[dict], *, as_json: bool) -> None:
    """JSON lines; on a terminal a table, or where it is too narrow for one each path on a line of
    its own; to a file or a pipe tab-separated lines. Never a path cut short."""
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    elif console.file.isatty() and _probe_table_fits(rows, console.width):
        console.print(_probe_table(rows))
    elif console.file.isatty():  # the path unbroken (the terminal wraps it), its details below
        for row in rows:
            details = "  ".join(f"{col} {row[col]}" for col in _PROBE_COLUMNS[1:] if row.get(col, "") != "")
            console.print(f"{row['path']}\n  {details}", style="red" if row["error"] else None,
                          markup=False, highlight=False)
    else:  # grep, cut and awk get whole paths
        for line in _probe_lines(rows):
            typer.echo(line)


def _probe_table(rows: list[dict]) -> Table:
    table = Table(show_lines=False)
    for col in _PROBE_COLUMNS:  # a narrow terminal folds paths and errors onto more lines, never cuts them
        long = col in ("path", "error")
        table.add_column(col, overflow="fold" if long else "ellipsis", no_wrap=not long)
    for row in rows:
        table.add_row(*(str(row.get(col, "")) for col in _PROBE_COLUMNS), style="red" if row["error"] else None)
    return table


def _probe_table_fits(rows: list[dict], width: int) -> bool:
    """Whether the table leaves its path column 30 characters (each column: its text + 3 of border)."""
    others = sum(min(20, max(len(col), *(len(str(row.get(col, ""))) for row in rows))) + 3
                 for col in _PROBE_COLUMNS[1:])
    return width - others - 4 >= 30


def _probe_lines(rows: list[dict]) -> list[str]:
    """A header and one tab-separated line per file; an error's own tabs and newlines become spaces."""
    cells = [[" ".join(str(row.get(col, "")).split()) if col == "error" else str(row.get(col, ""))
              for col in _PROBE_COLUMNS] for row in rows]
    return ["\t".join(line) for line in [_PROBE_COLUMNS, *cells]]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
