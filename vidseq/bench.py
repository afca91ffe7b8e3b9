"""``vidseq bench``: how fast extraction runs on this machine with this config, part by part.

Place in the data flow: a tool beside the pipeline. It runs the real parts of extraction on a few
videos and times them: **decode-only** (``features.workers.decode_videos``: the decode workers of
extraction, opening, sampling and fitting frames exactly as ``_engine.video_chunks`` does, with no
model), **model-only** per runtime (``backbones.FrameEncoder``, and the ONNX Runtime encoder where
``extract.runtime`` and onnxruntime exist, on frames already decoded and fitted, in whole batches)
and **end-to-end** (``features.extract`` into a temporary store). Each part is warmed up, then run
``repeats`` times, alternating, and its best run counts (on a shared machine the slow runs
measure the neighbours). The slower of decode and model bounds the run; the end-to-end rate
projects the time of N videos (N x frames per video / frames per second).

Imports io, sampling, synth (a generated clip when no input is given), datasets, backbones and
features; nothing above them.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.backbones import Backbone, FrameEncoder
from vidseq.backbones.onnx import RUNTIMES, OnnxFallbackWarning
from vidseq.config import VidseqConfig, motion_settings, wants_motion
from vidseq.datasets import VideoItem, discover_videos
from vidseq.errors import VidseqError
from vidseq.features import build_backbone, extract, resolve_device
from vidseq.features.workers import DecodeLimits, DecodeSettings, decode_videos
from vidseq.io import write_video
from vidseq.synth import render_clip, video_rng
from vidseq.threads import thread_budget, torch_threads

SYNTH_CLIPS = 8  # generated clips when no input is given: 8 x 16 sampled frames = 2 batches of 64
SYNTH_FRAMES = 48
SYNTH_SIZE = 224
MODEL_BATCHES = (2, 16)  # model-only runs on at least 2 and at most 16 whole batches


class BenchError(VidseqError):
    """The benchmark cannot run on this input (no video decodes, nothing to measure)."""


@dataclass
class Projection:
    """The time ``videos`` videos of ``frames_per_video`` sampled frames take at ``frames_per_second``."""

    videos: int
    frames_per_video: float
    frames_per_second: float
    seconds: float


@dataclass
class BenchResult:
    """Best frames/s of each part (``runs``: every timed run) and what was measured."""

    input: str
    videos: int
    failed: int
    frames: int  # sampled frames of one pass over the input
    backbone: str
    device: str
    runtime: str  # the configured runtime: the one end-to-end ran with
    batch_size: int
    workers: int  # decode workers, as the thread budget sizes them for extraction
    torch_threads: int  # the backbone's threads in extraction (model-only runs on them too)
    cores: int  # the cores the thread budget has
    cores_from: str  # where that number came from (CPU affinity, a cgroup quota, --threads)
    repeats: int
    motion: bool
    decode: float
    model: dict[str, float]
    end_to_end: float
    runs: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # runtime -> why it was not measured

    @property
    def frames_per_video(self) -> float:
        """Mean sampled frames of a video of the input (those that decoded)."""
        return self.frames / max(1, self.videos - self.failed)

    @property
    def bound(self) -> str:
        """``decode`` or ``model``: the part with the lower rate, which the run cannot beat."""
        return "decode" if self.decode < self.model[self.runtime] else "model"

    @property
    def efficiency(self) -> float:
        """End-to-end as a fraction of the bounding part's rate (1.0: the parts overlap perfectly)."""
        return self.end_to_end / min(self.decode, self.model[self.runtime])

    def projection(self, videos: int, frames_per_video: float | None = None) -> Projection:
        """The time of ``videos`` videos at the end-to-end rate (``frames_per_video``: the input's mean)."""
        frames = self.frames_per_video if frames_per_video is None else frames_per_video
        return Projection(videos, frames, self.end_to_end, videos * frames / self.end_to_end)

    def to_dict(self, videos: int, frames_per_video: float | None = None) -> dict[str, Any]:
        """Everything, with the bound and the projection, as plain JSON types."""
        out = asdict(self)
        out.update(
            frames_per_video=self.frames_per_video,
            bound=self.bound,
            efficiency=self.efficiency,
            projection=asdict(self.projection(videos, frames_per_video)),
        )
        return out

    def lines(self, videos: int, frames_per_video: float | None = None) -> list[str]:
        """The report: one screen."""
        fitted = self.videos - self.failed
        failed = f", {self.failed} failed to decode" if self.failed else ""
        lines = [
            f"input: {self.input}: {fitted} video(s){failed}, {self.frames_per_video:.1f} sampled frames each",
            f"setup: {self.backbone} on {self.device}, runtime {self.runtime}, batch {self.batch_size}, "
            f"{self.workers} decode worker(s) + {self.torch_threads} torch thread(s)"
            f"{', motion stream on' if self.motion else ''}",
            f"        on {self.cores} cores ({self.cores_from}); best of {self.repeats} runs after a warm-up",
            "",
            f"  {'part':<28}{'frames/s':>10}   runs",
            _row("decode-only", self.decode, self.runs["decode"]),
        ]
        for runtime, rate in self.model.items():
            lines.append(_row(f"model-only ({runtime})", rate, self.runs["model"][runtime]))
        for runtime, why in self.skipped.items():
            lines.append(f"  {f'model-only ({runtime})':<28}{'-':>10}   not measured: {why}")
        lines.append(_row(f"end-to-end ({self.runtime})", self.end_to_end, self.runs["end_to_end"]))
        lines.append("")
        other = "model" if self.bound == "decode" else "decode"
        other_rate = self.model[self.runtime] if other == "model" else self.decode
        bound_rate = min(self.decode, self.model[self.runtime])
        lines.append(
            f"bound: {self.bound} ({bound_rate:.1f} frames/s; {other} runs at {other_rate / bound_rate:.1f}x that); "
            f"end-to-end reaches {self.efficiency:.0%} of it"
        )
        lines.extend(self._hints())
        p = self.projection(videos, frames_per_video)
        lines.append(
            f"projection: {p.videos:,} videos x {p.frames_per_video:.1f} frames at {p.frames_per_second:.1f} "
            f"frames/s = {format_seconds(p.seconds)}"
        )
        return lines

    def _hints(self) -> list[str]:
        hints = []
        if self.bound == "model":
            faster = {r: v for r, v in self.model.items() if r != self.runtime and v > 1.1 * self.model[self.runtime]}
            for runtime, rate in faster.items():
                hints.append(
                    f"hint: {runtime} runs the model {rate / self.model[self.runtime]:.2f}x faster: "
                    f"-o extract.runtime={runtime}"
                )
        elif self.workers < 1:
            hints.append("hint: decoding runs in this process: -o extract.num_workers=2 (or more) overlaps it")
        return hints


def _row(name: str, rate: float, runs: list[float]) -> str:
    return f"  {name:<28}{rate:>10.1f}   {' '.join(f'{r:.1f}' for r in runs)}"


def format_seconds(seconds: float) -> str:
    """``3 h 12 min``, ``4 min 05 s``, ``12.3 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours / 24:.1f} days ({hours} h)"


# -- inputs --------------------------------------------------------------------------------


def synth_clips(
    folder: str | Path, *, count: int = SYNTH_CLIPS, frames: int = SYNTH_FRAMES, size: int = SYNTH_SIZE
) -> list[Path]:
    """``count`` distinct moving-shape clips (``vidseq.synth``) written to ``folder``; their paths."""
    folder = Path(folder)
    paths = []
    for index in range(count):
        clip = render_clip("move_right", video_rng(index, "bench", index), num_frames=frames, size=size)
        path = folder / f"bench_{index:03d}.mp4"
        write_video(path, clip, fps=25.0)
        paths.append(path)
    return paths


def bench_items(source: str | Path, config: VidseqConfig, *, limit: int | None = None) -> list[VideoItem]:
    """The videos of ``source`` (a video, a folder, a list or a dataset), at most ``limit`` of them."""
    options = config.data.model_dump(exclude={"source", "format"})
    found = discover_videos(source, format=config.data.format, **options)
    items = list(found.items)
    if not items:
        raise BenchError(f"{source}: no videos to measure; give a video file or a folder of videos")
    return items[:limit] if limit else items


# -- the parts -----------------------------------------------------------------------------


def decode_pass(
    items: list[VideoItem], model: Backbone, config: VidseqConfig, *, workers: int
) -> tuple[float, np.ndarray, int]:
    """One pass of extraction's decoding (``workers`` decode processes, as the run's thread budget
    sizes them; its sampling and fitting; motion when the config wants it) over ``items``:
    (frames/s, the fitted frames, videos that failed)."""
    motion = config.motion if wants_motion(config) else None
    jobs = [(job, str(item.path), True, motion is not None) for job, item in enumerate(items)]
    settings = DecodeSettings(model.spec, config.sampling, config.io.backend, config.extract.chunk_frames, motion)
    frames, failed = [], set()
    with torch_threads(torch.get_num_threads()):  # no workers: decoding sets torch to 1 thread, as extraction does
        start = time.perf_counter()
        for part in decode_videos(jobs, settings, workers=workers, limits=DecodeLimits.of(config.extract)):
            if part["error"]:
                failed.add(part["job"])
            else:
                frames.append(part["frames"])
        seconds = time.perf_counter() - start
    fitted = np.concatenate(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    return len(fitted) / seconds, fitted, len(failed)


def whole_batches(frames: np.ndarray, batch: int) -> np.ndarray:
    """``frames`` repeated or cut to whole batches (2 to 16 of them): extraction's forwards are
    always whole batches, so a rate measured on a short last batch would mislead."""
    batches = min(max(math.ceil(len(frames) / batch), MODEL_BATCHES[0]), MODEL_BATCHES[1])
    return np.resize(frames, (batches * batch, *frames.shape[1:]))


def model_encoder(runtime: str, model: Backbone, config: VidseqConfig) -> FrameEncoder:
    """The ``FrameEncoder`` extraction would run for ``runtime`` (``BatchForward``'s settings);
    BenchError saying why where that runtime cannot run this backbone here."""
    extract_cfg = config.extract
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OnnxFallbackWarning)
        try:
            encoder = FrameEncoder(
                model,
                precision=extract_cfg.precision,
                channels_last=extract_cfg.channels_last,
                device=resolve_device(extract_cfg.device),
                batch=extract_cfg.batch_size,
                runtime=runtime,
            )
        except VidseqError as exc:
            raise BenchError(str(exc)) from None
    if encoder.runtime != runtime:
        why = next((str(w.message) for w in caught if issubclass(w.category, OnnxFallbackWarning)), "")
        raise BenchError(why.split(";")[0] or f"{runtime} cannot run {model.spec.name} here")
    return encoder


def model_pass(encode: Callable[[torch.Tensor], np.ndarray], frames: torch.Tensor) -> float:
    """Frames/s of one ``encode`` over ``frames`` (its result copied back, so the device is done)."""
    start = time.perf_counter()
    encode(frames)
    return len(frames) / (time.perf_counter() - start)


def end_to_end_pass(items: list[VideoItem], model: Backbone, config: VidseqConfig) -> float:
    """Frames/s of ``vidseq.features.extract`` over ``items`` into a fresh temporary store (the
    prebuilt ``model``: its build is not timed, as a long run pays it once)."""
    motion = motion_settings(config)
    with tempfile.TemporaryDirectory(prefix="vidseq-bench-") as out:
        result = extract(
            items,
            out=out,
            backbone=model,
            sampling=config.sampling,
            config=config.extract,
            io=config.io,
            progress=False,
            motion=motion,
        )
    if not result.frames:
        raise BenchError("end-to-end extraction stored no frames: every video failed (see vidseq probe)")
    return result.frames / result.seconds


def configured_runtime(config: VidseqConfig) -> str:
    """``extract.runtime``: the runtime end-to-end runs with."""
    return config.extract.runtime


def run_bench(
    items: list[VideoItem],
    config: VidseqConfig,
    *,
    repeats: int = 3,
    runtimes: list[str] | None = None,
    label: str | None = None,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure decode-only, model-only (per runtime) and end-to-end frames/s of ``items`` under
    ``config``: a warm-up pass of each, then ``repeats`` rounds, alternating; the best run counts.

    Model-only runs for the configured ``extract.runtime`` (which must run here) and each other of
    ``runtimes`` (default: all) that can: one that cannot is in ``skipped``, with why. End-to-end
    runs with the configured runtime."""
    if repeats < 1:
        raise BenchError(f"repeats must be at least 1, got {repeats}")
    say = log or (lambda _line: None)
    unknown = sorted(set(runtimes or ()) - set(RUNTIMES))
    if unknown:
        raise BenchError(f"unknown runtime(s) {', '.join(unknown)}: use {', '.join(RUNTIMES)}")
    runtime = configured_runtime(config)
    device = resolve_device(config.extract.device)
    threads = thread_budget().extraction(config.extract.num_workers, device=device.type, videos=len(items))
    say(f"building {config.backbone.name} on {device}; {threads.describe()}")
    model = build_backbone(config.backbone, device)
    # the model side runs on the run's torch threads, as in extraction (an ORT session sizes itself from them)
    with torch_threads(threads.torch):
        say("warm-up: decoding")
        _, frames, failed = decode_pass(items, model, config, workers=threads.workers)
        if failed == len(items):
            raise BenchError(f"none of the {len(items)} video(s) decoded; see which and why with: vidseq probe INPUT")
        sampled = len(frames)
        frames = torch.from_numpy(whole_batches(frames, config.extract.batch_size))
        if device.type == "cuda":
            frames = frames.pin_memory()  # as extraction hands decoded chunks to the model
        encoders, skipped = {}, {}
        for name in [runtime, *(r for r in runtimes or RUNTIMES if r != runtime)]:
            say(f"warm-up: model ({name})")
            try:
                encoders[name] = model_encoder(name, model, config)
            except BenchError as exc:
                if name == runtime:  # what the config runs with must run: say why it cannot
                    raise BenchError(f"extract.runtime {runtime} cannot run here: {exc}") from None
                skipped[name] = str(exc)
                continue
            encoders[name](frames)
        runs: dict[str, Any] = {"decode": [], "model": {name: [] for name in encoders}, "end_to_end": []}
        for round_ in range(repeats):
            say(f"round {round_ + 1} of {repeats}")
            runs["decode"].append(decode_pass(items, model, config, workers=threads.workers)[0])
            for name, encode in encoders.items():
                runs["model"][name].append(model_pass(encode, frames))
            runs["end_to_end"].append(end_to_end_pass(items, model, config))
    return BenchResult(
        input=label or (str(items[0].path) if len(items) == 1 else f"{len(items)} videos"),
        videos=len(items),
        failed=failed,
        frames=sampled,
        backbone=config.backbone.name,
        device=str(device),
        runtime=runtime,
        batch_size=config.extract.batch_size,
        workers=threads.workers,
        torch_threads=threads.torch,
        cores=threads.cores,
        cores_from=threads.source,
        repeats=repeats,
        motion=wants_motion(config),
        decode=max(runs["decode"]),
        model={name: max(rates) for name, rates in runs["model"].items()},
        end_to_end=max(runs["end_to_end"]),
        runs=_rounded(runs),
        skipped=skipped,
    )


def _rounded(runs: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _rounded(value) if isinstance(value, dict) else [round(v, 2) for v in value] for key, value in runs.items()
    }
