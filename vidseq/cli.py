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
from vidseq.errors import VidseqError

app = typer.Typer(
    help="vidseq: action recognition in video with per-frame CNN/YOLO features and LSTM/GRU "
    "heads.\n\nvideos -> frames -> backbone features -> sequences -> LSTM/GRU -> labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
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
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None

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
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    else:
        console.print(_probe_table(rows))
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
) -> None:
    """Write a synthetic labelled action dataset whose classes differ only by motion and order.

    Pairs such as move_left/move_right are time-reversals of each other: a model that
    ignores frame order cannot tell them apart; a recurrent model can.
    """
    from rich.progress import Progress

    from vidseq.synth import generate_dataset

    flags = {"videos_per_class": videos_per_class, "num_frames": num_frames, "size": size, "seed": seed}
    extra = [f"synth.{key}={value}" for key, value in flags.items() if value is not None]
    cfg = _config(config, [*override, *extra]).synth
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("writing videos", total=len(cfg.classes) * cfg.videos_per_class)
        result = generate_dataset(
            out, cfg, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done)
        )
    console.print(
        f"wrote {len(result.paths)} videos in {len(cfg.classes)} classes to {out} "
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
) -> None:
    """Show what vidseq finds in a labelled dataset: classes, splits, missing and skipped files."""
    from vidseq.datasets import discover

    found = discover(
        source,
        format=format,
        video_root=video_root,
        split=split,
        label_names=label_names,
    )
    console.print(found.summary(), highlight=False)


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


def _probe_table(rows: list[dict]) -> Table:
    columns = ["path", "frames", "fps", "duration_s", "width", "height", "codec", "backend", "error"]
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*(str(row.get(col, "")) for col in columns), style="red" if row["error"] else None)
    return table


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
