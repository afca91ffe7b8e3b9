"""Commands over trained models: ``train``, ``evaluate``, ``predict``.

Place in the data flow: the CLI's face of training (``vidseq.pipeline.commands.train_command``
composes training with MLflow) and prediction; each command parses, calls one function and
prints its result.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from vidseq.cli._app import (
    CONFIG_OPTION,
    OVERRIDE_OPTION,
    app,
    console,
    err_console,
    friendly,
    load,
)
from vidseq.errors import VidseqError
from vidseq.tracking import exit_on_interrupt  # cheap: no mlflow until a run starts


@app.command()
@friendly
@exit_on_interrupt  # SIGTERM / Ctrl-C: the MLflow run ends KILLED, one line, exit 143 / 130
def train(
    features: Path | None = typer.Argument(
        None, help="Feature store folder from `vidseq extract` (or its --out root if it holds one) (train.features)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (train.out)."),
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    model: str | None = typer.Option(None, help="lstm, gru, transformer, meanpool, tcn (model.name)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (train.epochs)."),
    streams: str | None = typer.Option(
        None, help="Comma-separated feature streams: appearance, motion (train.streams; motion must be extracted)."
    ),
    fusion: str | None = typer.Option(None, help="Several streams: late or early (train.fusion)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again in an --out that holds a run."),
    ddp: int | None = typer.Option(
        None, "--ddp", min=1, help="Train with DistributedDataParallel in N processes on this machine (torchrun)."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="Log the run to MLflow at this URI (or set --track for $MLFLOW_TRACKING_URI / sqlite:///mlflow.db)."
    ),
    track: bool = typer.Option(False, "--track", help="Log the run to MLflow (see --tracking-uri)."),
    experiment: str = typer.Option("vidseq-train", help="MLflow experiment when tracking."),
    register: str | None = typer.Option(None, help="When tracking: register the model under this name."),
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
        from vidseq.training.distributed import relaunch_under_torchrun

        code = relaunch_under_torchrun(ddp)
        if code:
            raise typer.Exit(code)
        return
    from vidseq.metrics import format_report
    from vidseq.pipeline.commands import train_command

    flags = {
        "train.features": features,
        "train.out": out,
        "model.name": model,
        "train.epochs": epochs,
        "train.fusion": fusion,
        "train.streams": f"[{streams}]" if streams else None,
    }
    done = train_command(
        load(config, override, flags),
        resume=resume,
        overwrite=overwrite,
        track=track,
        tracking_uri=tracking_uri,
        experiment=experiment,
        register=register,
        progress=not quiet,
        echo=lambda line: console.print(line, highlight=False, markup=False),
    )
    result = done.result
    if result is None:
        return  # a DDP rank other than 0: rank 0 reports
    console.print(f"best epoch {result.best_epoch} of {len(result.history)}; run folder {result.out}")
    console.print(result.stop_reason, highlight=False, markup=False)  # early stopping or all epochs, and why
    for stream, record in result.extra.get("streams", {}).items():
        test = f", test accuracy {record['test']['accuracy']:.3f}" if record.get("test") else ""
        console.print(f"  {stream}: val accuracy {record['val']['accuracy']:.3f}{test}")
    if (result.extra.get("fusion") or {}).get("weights"):
        weights = zip(result.extra.get("streams", {}), result.extra["fusion"]["weights"])
        console.print("  late fusion weights (chosen on val): " + ", ".join(f"{s} {w:.2f}" for s, w in weights))
    if done.run_id:
        console.print(f"MLflow run {done.run_id}; results: {done.hint}", highlight=False, markup=False)
    console.print("validation:\n" + format_report(result.val), highlight=False)
    if result.test is not None:
        console.print("test:\n" + format_report(result.test), highlight=False)


@app.command()
@friendly
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `vidseq train` (best.pt)."),
    features: Path | None = typer.Option(None, help="Feature store (default: the one it was trained on)."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: eval-<split>/ beside it)."),
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    split: str | None = typer.Option(None, help="train, val, test or all (evaluate.split)."),
    views: int | None = typer.Option(None, help="Temporal views averaged per video (evaluate.views)."),
) -> None:
    """Top-1, top-5, mean class accuracy, macro F1, confusion matrix (PNG, CSV), per-class report."""
    from vidseq.training.evaluate import evaluate as run_evaluate

    flags = {"evaluate.split": split, "evaluate.views": views}
    cfg = load(config, override, flags)
    result = run_evaluate(checkpoint, config=cfg.evaluate, features=features, out=out)
    console.print(result.summary(), highlight=False)
    console.print(f"reports in {result.out}")


@app.command()
@friendly
def predict(
    inputs: list[Path] | None = typer.Argument(
        None, help="Videos, folders (searched recursively) or text files listing videos."
    ),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="best.pt of `vidseq train`, a model folder, a folder of `vidseq export`, or an MLflow model URI "
        "(models:/NAME/1, runs:/ID/model).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write rows to FILE.csv or FILE.jsonl; an existing file is appended to: its predicted videos are "
        "skipped, its failed ones tried again.",
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Labels (with probabilities) per video."),
    window: float | None = typer.Option(
        None,
        help="Seconds per window: label every window of each video and join them into segments "
        "(--stream/--render default: the training clips' median length).",
    ),
    hop: float | None = typer.Option(None, help="Seconds between windows (default: half a window)."),
    smooth: int = typer.Option(1, min=1, help="--window: average each window's probabilities with its neighbours'."),
    carry_state: bool = typer.Option(
        False,
        "--carry-state",
        help="--window: carry the LSTM/GRU state along the video, one step per hop (streaming-capable models).",
    ),
    stream: str | None = typer.Option(
        None, help="Label a live source as frames arrive: a camera index (0), a file or a URL."
    ),
    render: Path | None = typer.Option(None, help="Write the (one) input video with its labels drawn on it (.mp4)."),
    actors: bool = typer.Option(
        False,
        "--actors",
        help="A row per tracked person (a model trained on `vidseq extract --actors` stores): track id, first and "
        "last time, label, probability; with --window a timeline per person, --render their boxes, --stream live.",
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    workers: int | None = typer.Option(None, help="Decode worker processes (extract.num_workers)."),
    engine: str = typer.Option(
        "local", help="local or ray: how frames are decoded and embedded (as `vidseq extract`)."
    ),
    ray_address: str | None = typer.Option(None, help="--engine ray: the cluster to join; none: a local Ray."),
    runtime: str | None = typer.Option(
        None, help="What runs the backbone: torch or onnxruntime (as `vidseq extract --runtime`; the onnx extra)."
    ),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI for models:/ and runs:/ URIs."),
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
    options = {"engine": engine, "ray_address": ray_address, "num_workers": workers, "runtime": runtime}
    extract_config = ExtractConfig(**{k: v for k, v in options.items() if v is not None})
    predictor = load_predictor(_local_model(model, tracking_uri), device=device, extract_config=extract_config)
    if actors or getattr(predictor, "actors", None) is not None:
        _predict_actors(
            predictor, inputs, actors=actors, out=out, quiet=quiet, stream=stream, render=render,
            window=window, hop=hop, smooth=smooth, carry_state=carry_state,
        )  # fmt: skip
        return
    if stream is not None:
        _predict_stream(predictor, stream, window or predictor.default_window, hop)
        return
    if render is not None:
        _predict_render(predictor, inputs, render, window or predictor.default_window, hop)
        return
    _predict_files(
        predictor,
        inputs,
        out=out,
        top_k=top_k,
        window=window,
        hop=hop,
        quiet=quiet,
        smooth=smooth,
        carry_state=carry_state,
    )


def _predict_actors(
    predictor, inputs, *, actors: bool, out, quiet: bool, stream, render, window, hop, smooth, carry_state
) -> None:
    """``vidseq predict --actors``: a row per tracked person, with --window a timeline per person,
    --render the boxes drawn, --stream a live source (see vidseq.predict.actors)."""
    from vidseq.predict.actors import TIMELINE_COLUMNS, predict_actors, render_actors
    from vidseq.predict.batch import collect_inputs

    if not actors:
        raise VidseqError("this model was trained on per-person sequences: add --actors (a row per tracked person)")
    if stream is not None:
        _stream_actors(predictor, stream, window or predictor.default_window, hop)
        return
    paths, errors, _ = collect_inputs(inputs)
    if render is not None and (errors or len(paths) != 1):
        problem = "; ".join(f"{p}: {e}" for p, e in errors.items()) or f"got {len(paths)} videos"
        raise VidseqError(f"--render draws on one video: {problem}")
    options = {"window": window, "hop": hop, "smooth": smooth, "carry_state": carry_state}
    people = predict_actors(predictor, paths, progress=not quiet, **options)
    if window is not None:
        rows = [row for person in people for row in person.timeline_rows()]
        blank = dict.fromkeys(TIMELINE_COLUMNS)
        rows += [{**blank, "path": p, "kind": "video", "error": e} for p, e in errors.items()]
    else:
        rows = [person.as_row() for person in people]
        rows += [{**dict.fromkeys(rows[0] if rows else ["path"]), "path": p, "error": e} for p, e in errors.items()]
    if out is not None:
        _write_rows(Path(out), rows)
    if window is not None:
        table = Table("path", "track", "start s", "end s", "label", "probability", "error", title="segments per person")
        for row in rows:
            if row["kind"] in ("segment", "video"):
                table.add_row(*("" if row[k] is None else str(row[k]) for k in (
                    "path", "track", "start", "end", "label", "probability", "error")))  # fmt: skip
    else:
        table = Table("path", "track", "first s", "last s", "frames", "label", "probability", "error")
        for row in rows:
            table.add_row(*("" if row[k] is None else str(row[k]) for k in (
                "path", "track", "first", "last", "frames", "label", "probability", "error")))  # fmt: skip
    console.print(table)
    if render is not None and people and people[0].track is not None:
        result = render_actors(paths[0], render, people, backend=predictor.io.backend)
        console.print(f"wrote {result.out} ({result.frames} frames, {len(people)} people)", highlight=False)
    failed = [row for row in rows if row["error"] and row["track"] is None]
    if any("no person" not in row["error"] for row in failed):
        raise typer.Exit(1)


def _write_rows(out: Path, rows: list[dict]) -> None:
    """Rows to FILE.jsonl, else CSV (written atomically)."""
    from vidseq.atomic import write_text

    if out.suffix == ".jsonl":
        write_text(out, "".join(json.dumps(row) + "\n" for row in rows))
        return
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["path"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, text.getvalue())


def _stream_actors(predictor, source: str, window: float, hop: float | None) -> None:
    """``--stream SOURCE --actors``: each person's label per window as it completes, then how fast."""
    from vidseq.predict.actors import ActorStream, latency_summary

    stream = ActorStream(predictor, source, window=window, hop=hop or window / 2)
    latencies = []
    for item in stream:
        latencies.append(item.latency)
        console.print(
            f"person {item.track:<4} {item.start:8.2f}-{item.end:8.2f} s  {item.label:<20} {item.probability:.3f}  "
            f"latency {item.latency * 1000:.0f} ms",
            highlight=False,
            markup=False,
        )
    console.print(
        f"{stream.stream_seconds:.1f} s of stream ({stream.frames_read} frames, {stream.grid_frames} tracked at "
        f"{stream.rate:g} fps) in {stream.wall_seconds:.1f} s: real-time factor {stream.realtime_factor:.2f}; "
        f"{len(latencies)} labels, latency {latency_summary(latencies)}",
        highlight=False,
        markup=False,
    )


def _local_model(model: str, tracking_uri: str | None) -> Path:
    """A local path as it is; an MLflow URI downloaded (or found in a local store) first."""
    if Path(model).exists() or ":/" not in model:
        return Path(model)
    from vidseq.tracking import download_model

    return download_model(model, tracking_uri=tracking_uri)


def _predict_files(predictor, inputs, *, out, top_k, window, hop, quiet, smooth, carry_state) -> None:
    from vidseq.predict.batch import predict_batch

    result = predict_batch(
        predictor,
        inputs,
        out=out,
        top_k=top_k,
        window=window,
        hop=hop,
        smooth=smooth,
        carry_state=carry_state,
        progress=not quiet,
    )
    if out is None:
        console.print(_rows_table(result, windowed=window is not None))
    console.print(
        f"{result.predicted} predicted, {result.skipped} already in {out}, {result.failed} failed"
        if out is not None
        else f"{result.predicted} predicted, {result.failed} failed",
        highlight=False,
    )
    for row in result.rows:
        if row.get("error"):
            err_console.print(f"failed: {row['path']}: {row['error']}", highlight=False, markup=False)
    if result.passed_over:
        err_console.print(
            f"{len(result.passed_over)} file(s) in the folders are not videos and were passed over "
            f"(e.g. {result.passed_over[0]})",
            highlight=False,
            markup=False,
        )
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


def _predict_stream(predictor, source: str, window: float, hop: float | None) -> None:
    from vidseq.predict.stream import stream_labels

    for item in stream_labels(predictor, source, window=window, hop=hop or window / 2):
        console.print(
            f"{item.start:8.2f}-{item.end:8.2f} s  {item.label:<20} {item.probability:.3f}  "
            f"latency {item.latency * 1000:.0f} ms",
            highlight=False,
            markup=False,
        )


def _predict_render(predictor, inputs, render: Path, window: float, hop: float | None) -> None:
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
