"""Commands over videos and datasets: ``probe``, ``synth``, ``dataset``, ``extract``.

Place in the data flow: the CLI's face of io, synth, datasets and features; each command parses,
calls one function and prints its result.
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


@app.command()
@friendly
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
@friendly
def synth(
    out: Path = typer.Argument(..., help="Output folder (a folder per class is written into it)."),
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    videos_per_class: int | None = typer.Option(None, "--per-class", help="Videos per class."),
    num_frames: int | None = typer.Option(None, "--frames", help="Frames per video."),
    size: int | None = typer.Option(None, help="Frame width and height in pixels."),
    seed: int | None = typer.Option(None, help="Random seed (same seed, same dataset)."),
    overwrite: bool = typer.Option(
        False, help="Write into a non-empty folder that vidseq synth did not make (its other files are kept)."
    ),
    kind: str | None = typer.Option(
        None,
        help="shapes (moving shapes), camera (pan/zoom/rotate over real photos), actors (real people moving "
        "over real backgrounds, a box and class per person in people.csv) or playback (windows of real videos "
        "played forward, reversed, faster, slower or frozen) (synth.kind).",
    ),
    images: Path | None = typer.Option(
        None,
        help="camera, actors: a folder of images or videos to film (synth.images); default: scikit-image's photos.",
    ),
    people: Path | None = typer.Option(
        None,
        help="actors: a folder of videos with people, cut out by the detector of the actors section "
        "(synth.people; -o actors.weights=detector.pt -o actors.classes=[0]).",
    ),
    source: Path | None = typer.Option(
        None,
        help="playback: a folder of real videos to cut windows from, split by video (synth.source; "
        "-o synth.windows_per_source=N, -o synth.classes=[forward,reversed,faster,slower,frozen]).",
    ),
) -> None:
    """Write a synthetic labelled action dataset whose classes differ only by motion and order.

    Pairs such as move_left/move_right are time-reversals of each other: a model that
    ignores frame order cannot tell them apart; a recurrent model can.
    """
    from vidseq.progress import progress_bar
    from vidseq.synth import generate_dataset

    flags = {
        "videos_per_class": videos_per_class,
        "num_frames": num_frames,
        "size": size,
        "seed": seed,
        "kind": kind,
        "images": images,
        "people": people,
        "source": source,
    }
    full = load(config, override, {f"synth.{key}": value for key, value in flags.items()})
    cfg = full.synth
    bank = None
    if cfg.kind == "actors":
        from vidseq.errors import ConfigError
        from vidseq.features.person_bank import collect_people, find_videos

        if cfg.people is None:
            raise ConfigError("synth.kind=actors needs --people DIR (synth.people): a folder of videos with people")
        videos, failed = find_videos(cfg.people), []
        with progress_bar(len(videos), desc="people", unit="video") as bar:
            bank = collect_people(
                videos,
                full.actors,
                min_frames=full.actors.min_frames,
                seconds=cfg.people_seconds,
                root=cfg.people,
                failed=failed,
                progress=lambda done, total: bar.update(done - bar.n),
            )
        for line in failed:
            err_console.print(f"skipped {line}", highlight=False)
        sources = len({person.source for person in bank})
        console.print(f"people: {len(bank)} cut out of {sources} of {len(videos)} videos in {cfg.people}")
    with progress_bar(None, desc="synth", unit="video") as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = generate_dataset(out, cfg, overwrite=overwrite, progress=advance, bank=bank)
    extra = f", people: {result.people}" if result.people is not None else ""
    where = f"{out} (labels: {out / 'labels.csv'}{extra})"
    console.print(f"wrote {len(result.paths)} videos in {len(result.counts)} classes to {where}")


@app.command()
@friendly
def dataset(
    source: Path = typer.Argument(..., help="Folder per class, CSV, list file or UCF101/HMDB51 split folder."),
    format: str = typer.Option("auto", help="auto, folder, csv, list, ucf101, hmdb51."),
    video_root: Path | None = typer.Option(None, help="Where relative paths in list/split files start."),
    split: int = typer.Option(1, help="UCF101/HMDB51 official split number."),
    label_names: Path | None = typer.Option(None, help="List files: class names in index order."),
    group_pattern: str | None = typer.Option(
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


def _show_splits(found, group_pattern: str | None) -> None:
    """Clips per class and split, where the groups came from, and what would make scores mislead."""
    from rich.markup import escape

    from vidseq.datasets.splits import groups_source, split_report

    labels, splits, groups = ([getattr(i, key) for i in found.items] for key in ("label", "split", "group"))
    source = groups_source([i.path.name for i in found.items], groups, format=found.format, group_pattern=group_pattern)
    report = split_report(labels, splits, groups, classes=found.labels, groups_from=source)
    console.print(report.text(), highlight=False, markup=False)
    for line in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


@app.command()
@friendly
def extract(
    source: Path = typer.Argument(
        ..., help="A video, a folder of videos, a file list, or any dataset format (see `vidseq dataset`)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Root of feature stores (extract.out)."),
    config: Path | None = CONFIG_OPTION,
    override: list[str] = OVERRIDE_OPTION,
    backbone: str | None = typer.Option(None, help="Backbone name (backbone.name)."),
    batch_size: int | None = typer.Option(None, help="Frames per forward (extract.batch_size)."),
    workers: int | None = typer.Option(None, help="Decode worker processes (extract.num_workers)."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:N (extract.device)."),
    engine: str | None = typer.Option(None, help="local or ray (extract.engine; ray needs the ray extra)."),
    runtime: str | None = typer.Option(
        None, help="What runs the backbone: torch or onnxruntime (extract.runtime; the onnx extra)."
    ),
    ray_address: str | None = typer.Option(None, help="Ray cluster to join (extract.ray_address); none: a local Ray."),
    actors: bool = typer.Option(
        False,
        "--actors",
        help="One sequence per tracked person instead of one per video (actors.enabled): people are detected "
        "(actors.weights, an Ultralytics detector) and tracked (actors.tracker) on a grid of actors.fps frames/s; "
        "each track's crops go through the backbone, and its trajectory is a stream of its own.",
    ),
    motion: bool = typer.Option(
        False,
        "--motion",
        help="Also extract the optical-flow motion stream, from the same decode, into a second store beside "
        "the features (motion.enabled; also on when train.streams names motion; settings: -o motion.KEY=VALUE).",
    ),
    pose: bool = typer.Option(
        False,
        "--pose",
        help="Also extract the pose stream (MediaPipe body keypoints per sampled frame; the pose extra), from the "
        "same decode, into a store of its own beside the features (pose.enabled; also on when train.streams names "
        "pose; settings: -o pose.KEY=VALUE).",
    ),
    force: bool = typer.Option(False, "--force", help="Re-extract videos that are already done."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Extract per-frame backbone features of every video into a resumable feature store.

    One .npz per video (features (T, D), frame indices, timestamps) and its record, in a folder
    keyed by backbone, weights, preprocessing and sampling; manifest.csv is a view of the
    records. A video is known by its content (one file under any path spelling is one video).
    Re-running skips finished videos and retries failed ones. Any number of extract processes
    may write one store at once: each claims the videos it extracts, and waits for the ones
    another holds. A video that fails is recorded and the run goes on; the exit code is 1 when
    any video failed (in any stream). Ctrl-C or SIGTERM stops cleanly: rerun to finish.

    With --motion, each sampled frame also gets the pooled optical flow to the frame motion.step
    later (the next one by default; 3*grid*grid numbers: how the picture moves and how each
    cell's brightness changes, which a frozen CNN does not see), from the same decode (no second
    pass over the video), in a linked motion-<method>-<digest> store under the same root, with
    its own manifest; each stream resumes on its own. A video too short for a frame pair fails
    in the motion manifest only.

    With --pose, each sampled frame also gets its pose vector (MediaPipe's 33 body landmarks,
    normalised to the torso, their visibilities and a presence flag: 100 numbers), computed from
    the decoded frame before the backbone's centre crop, in a linked pose-mediapipe-<digest>
    store; a frame where nobody is found has presence 0 (no failure). Needs the pose extra.
    """
    from vidseq.config import motion_settings, pose_settings
    from vidseq.datasets import discover_videos
    from vidseq.features import extract as run_extract

    flags = {
        "extract.out": out,
        "backbone.name": backbone,
        "extract.batch_size": batch_size,
        "extract.num_workers": workers,
        "extract.device": device,
        "extract.engine": engine,
        "extract.runtime": runtime,
        "extract.ray_address": ray_address,
        "motion.enabled": True if motion else None,
        "pose.enabled": True if pose else None,
        "actors.enabled": True if actors else None,
    }
    cfg = load(config, override, flags)
    if pose_settings(cfg) is not None:
        from vidseq.features.pose import check_pose

        check_pose(cfg.pose)  # the pose extra: one line that names it, before any work
    data_options = cfg.data.model_dump(exclude={"source"})
    data_options.pop("format")
    found = discover_videos(source, format=cfg.data.format, **data_options)
    if cfg.actors.enabled:
        _extract_actors(found, cfg, force=force, quiet=quiet)
        return
    result = run_extract(
        found,
        out=cfg.extract.out,
        backbone=cfg.backbone,
        sampling=cfg.sampling,
        config=cfg.extract,
        io=cfg.io,
        force=force,
        progress=not quiet,
        motion=motion_settings(cfg),
        pose=pose_settings(cfg),
    )
    console.print(result.summary(), highlight=False)
    for row in result.failed:
        err_console.print(f"[red]failed:[/] {row['path']}: {row['error']}", highlight=False)
    streams = result.extras.items()
    for name, stream in streams:
        for row in stream.failed:
            err_console.print(f"[red]{name} failed:[/] {row['path']}: {row['error']}", highlight=False)
    if not result.ok or any(not stream.ok for _, stream in streams):
        raise typer.Exit(1)


def _extract_actors(found, cfg, *, force: bool, quiet: bool) -> None:
    """``vidseq extract --actors``: per-person stores (see vidseq.features.actor_extraction)."""
    from vidseq.config import motion_settings, pose_settings
    from vidseq.features.actor_extraction import extract_actors

    result = extract_actors(
        found,
        out=cfg.extract.out,
        actors=cfg.actors,
        backbone=cfg.backbone,
        config=cfg.extract,
        io=cfg.io,
        motion=motion_settings(cfg),
        pose=pose_settings(cfg),
        force=force,
        progress=not quiet,
    )
    console.print(result.summary(), highlight=False)
    for row in result.empty:
        console.print(f"no person: {row['path']}: {row['error']}", highlight=False, markup=False)
    for row in result.failed:
        err_console.print(f"[red]failed:[/] {row['path']}: {row['error']}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _expand_paths(paths: list[Path]) -> list[Path]:
    from vidseq.datasets import VIDEO_EXTENSIONS

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS))
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
            console.print(
                f"{row['path']}\n  {details}", style="red" if row["error"] else None, markup=False, highlight=False
            )
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
    others = sum(
        min(20, max(len(col), *(len(str(row.get(col, ""))) for row in rows))) + 3 for col in _PROBE_COLUMNS[1:]
    )
    return width - others - 4 >= 30


def _probe_lines(rows: list[dict]) -> list[str]:
    """A header and one tab-separated line per file; an error's own tabs and newlines become spaces."""
    cells = [
        [" ".join(str(row.get(col, "")).split()) if col == "error" else str(row.get(col, "")) for col in _PROBE_COLUMNS]
        for row in rows
    ]
    return ["\t".join(line) for line in [_PROBE_COLUMNS, *cells]]
