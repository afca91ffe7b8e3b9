"""Commands about this machine rather than a dataset: ``bench`` and ``doctor``.

Place in the data flow: the CLI's face of ``vidseq.bench`` (frames/s of extraction's parts here,
with this config) and ``vidseq.doctor`` (versions, decoders, GPU, MLflow, output folders,
ultralytics' offline settings); each command parses, calls one function and prints its result.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.markup import escape

from vidseq.cli._app import CONFIG_OPTION, OVERRIDE_OPTION, app, console, err_console, friendly, load


@app.command()
@friendly
def bench(
    source: Path | None = typer.Argument(
        None, help="A video, a folder of videos or a dataset; none: clips generated with vidseq.synth."
    ),
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    videos: int = typer.Option(1000, "--videos", min=1, help="Project the time of this many videos."),
    frames: float | None = typer.Option(
        None, "--frames", min=1, help="Sampled frames per projected video (default: the input's mean)."
    ),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs of each part (the best counts)."),
    limit: int = typer.Option(8, "--limit", min=1, help="Use at most this many videos of INPUT."),
    clips: int = typer.Option(8, "--clips", min=1, help="Without INPUT: how many clips to generate."),
    runtimes: str | None = typer.Option(
        None, "--runtimes", help="Model-only runtimes, comma-separated (default: torch,onnxruntime where installed)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Frames/s of extraction on this machine with this config: decode-only, model-only (per runtime)
    and end to end, which part bounds the run, and the projected time for --videos N.

    Each part runs once to warm up, then --repeats times, alternating; the best run counts. The
    projection is N x frames per video / the end-to-end rate (short runs pay worker start-up, so
    a long run is usually a little faster).
    """
    from vidseq.bench import bench_items, run_bench, synth_clips

    cfg = load(config, override)
    log = None if as_json else (lambda line: err_console.print(f"[dim]{escape(line)}[/]", highlight=False))
    with tempfile.TemporaryDirectory(prefix="vidseq-bench-clips-") as tmp:
        if source is None:
            source_path, label = Path(tmp), f"{clips} generated clip(s) (vidseq.synth)"
            synth_clips(source_path, count=clips)
        else:
            source_path, label = source, str(source)
        items = bench_items(source_path, cfg, limit=limit)
        chosen = [r.strip() for r in runtimes.split(",") if r.strip()] if runtimes else None
        result = run_bench(items, cfg, repeats=repeats, runtimes=chosen, label=label, log=log)
    if as_json:
        print(json.dumps(result.to_dict(videos, frames)))
        return
    for line in result.lines(videos, frames):
        console.print(escape(line), highlight=False)


@app.command()
@friendly
def doctor(
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI to check (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
    ),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for an http(s) tracking server."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Check this installation: versions, which decoders read a test clip correctly, GPU visibility,
    the MLflow store, write access to the config's output folders and ultralytics' offline settings.

    Each problem is printed with its fix. Exit code 1 when something vidseq needs is broken;
    warnings alone exit 0.
    """
    from vidseq.doctor import run_doctor

    cfg = load(config, override)
    report = run_doctor(cfg, tracking_uri=tracking_uri, timeout=timeout)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for line, style in report.styled_lines():
            console.print(f"[{style}]{escape(line)}[/]" if style else escape(line), highlight=False)
    if not report.ok:
        raise typer.Exit(1)
