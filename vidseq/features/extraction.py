"""The extraction loop: videos -> sampled frames -> backbone features -> the feature store.

Place in the data flow: datasets + io + sampling -> **extract** -> ``FeatureStore`` -> training.
Decode workers (``workers.decode_videos``: forked processes, each video watched for time and
memory) open, sample, decode and fit frames to the backbone's input size in parallel while the
main process runs the model; frames of several videos are packed into one batch. A video is
processed in chunks of ``chunk_frames``, so decoded frames never pile up, and its features go
to a memory-mapped temporary file when they are large, so peak memory does not grow with video
length. A bad video becomes a manifest
row with its error, and so does one whose decoder hangs or leaks (``extract.video_timeout``,
``extract.worker_memory_gb``: its worker is killed and replaced); the run goes on. The run's
thread budget (``vidseq.threads``) sizes the decode workers (``extract.num_workers: auto``) and
the backbone's torch threads so that together they never outnumber the cores it may use.

With ``motion`` enabled the same run writes the motion stream (``vidseq.features.motion``) into a second
store under the same root, linked to the first: the decode workers read each chunk's frames and
their flow partners in one read and compute the pooled flow there, so the videos are decoded
once. With ``pose`` enabled, likewise the pose stream (``vidseq.features.pose``: MediaPipe on the
decoded sampled frames, before the backbone's crop) into a ``pose-mediapipe`` store. Each stream
resumes on its own: a video is decoded when any stream lacks its entry, and gets only what is
missing (no forward when only its motion or pose is; no flow when only its features).

``config.engine == "ray"`` hands the run to ``ray_engine.extract_ray``. Both engines share
``plan`` (store keys, ``plan_run``, ``extract_rounds``: records, claims, waiting for other
writers, a clean stop on SIGTERM) and ``_engine`` (``video_chunks``, ``BatchForward``,
``VideoSink``): one decode, one forward and one store writer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.backbones import Backbone, decode_size, fit_frames
from vidseq.config import BackboneConfig, ExtractConfig, IOConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.datasets import Dataset, VideoItem
from vidseq.features._engine import (
    BatchForward,
    VideoSink,
    put_stream,
    video_chunks,
)
from vidseq.features.keys import (
    FEATURE_KEY_VERSION,
    build_backbone,
    motion_store_key,
    recipe_of,
    resolve_device,
    store_key,
)
from vidseq.features.plan import (
    ExtractionPlan,
    ExtractionRun,
    ExtractResult,
    extract_rounds,
    plan_extraction,
    plan_run,
)
from vidseq.features.pose import check_pose
from vidseq.features.workers import DecodeLimits, DecodeSettings, decode_videos
from vidseq.progress import progress_bar
from vidseq.threads import thread_budget, torch_threads

__all__ = [  # the shared core lives in ``plan`` and ``_engine``; re-exported for their old callers
    "FEATURE_KEY_VERSION", "BatchForward", "ExtractResult", "ExtractionPlan", "ExtractionRun", "VideoSink",
    "build_backbone", "decode_size", "extract", "fit_frames", "motion_store_key", "plan_extraction", "plan_run",
    "recipe_of", "resolve_device", "store_key", "video_chunks",
]  # fmt: skip


def extract(
    items: list[VideoItem] | Dataset,
    *,
    out: str | Path,
    backbone: BackboneConfig | Backbone | None = None,
    sampling: SamplingConfig | None = None,
    config: ExtractConfig | None = None,
    io: IOConfig | None = None,
    force: bool = False,
    progress: bool = True,
    on_video_done: Callable[[dict[str, Any]], None] | None = None,
    reuse_from: list[str | Path] | tuple[str | Path, ...] = (),
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
) -> ExtractResult:
    """Extract features of ``items`` into the store under ``out`` for this backbone and sampling.

    Finished videos are reused unless ``force``; failures are recorded, not raised. Given a
    ``Dataset``, its missing and skipped files get manifest rows too (nothing is lost silently).
    ``reuse_from``: other roots whose store for the same key may already hold a video's entry
    (it is hard-linked, or copied, instead of extracted again). ``motion`` (when enabled): the
    motion stream too, in its own linked store under ``out`` (``result.motion``), from the same
    decode. ``pose`` (when enabled): the pose stream likewise (``result.pose``; ``ConfigError``
    before any work where the pose extra is missing). ``on_video_done``: called once per video
    done in every stream it needed.
    ``config.engine == "ray"``: the same run on a Ray cluster (``ray_engine.extract_ray``;
    ``config.ray_address`` picks it).
    """
    config = config or ExtractConfig()
    if pose is not None and pose.enabled:
        check_pose(pose)  # the pose extra and its model, before any work (one line that says the fix)
    if config.engine == "ray":
        # ray is an optional extra: its engine (and ray) are imported only when asked for
        from vidseq.features.ray_engine import extract_ray

        return extract_ray(
            items,
            out=out,
            backbone=backbone,
            sampling=sampling,
            config=config,
            io=io,
            force=force,
            progress=progress,
            on_video_done=on_video_done,
            reuse_from=reuse_from,
            motion=motion,
            pose=pose,
        )
    sampling = sampling or SamplingConfig()
    device = resolve_device(config.device)
    model = backbone if isinstance(backbone, Backbone) else build_backbone(backbone or BackboneConfig(), device)

    plan = partial(
        plan_run,
        out=out,
        spec=model.spec,
        sampling=sampling,
        recipe=recipe_of(backbone, sampling, io, config),
        motion=motion,
        pose=pose,
        reuse_from=reuse_from,
        on_video_done=on_video_done,
    )

    def engine(run: ExtractionRun) -> ExtractResult:
        start = time.perf_counter()
        jobs = run.jobs()
        threads = thread_budget().extraction(config.num_workers, device=device.type, videos=len(jobs))
        with torch_threads(threads.torch):  # set first: an onnxruntime session sizes itself from it
            runner = _Runner(model, config, device, run.sink, run.extra_sinks)
            backend = (io or IOConfig()).backend
            settings = DecodeSettings(
                model.spec, sampling, backend, config.chunk_frames, run.config_of("motion"), run.config_of("pose")
            )
            loader = _loader(jobs, settings, config, device, workers=threads.workers)
            if progress:  # once, not on every progress line: what the run's cores went to
                print(f"extract [{threads.describe(torch.get_num_threads())}]", file=sys.stderr, flush=True)
            with (
                progress_bar(len(run.todo), desc="extract", unit="video", enabled=progress) as bar,
                closing(loader),
            ):  # closing: workers stop
                run.progress.bar = bar
                for chunk in loader:
                    runner.add(chunk)
                runner.flush()
        run.close()
        return run.finish(time.perf_counter() - start)

    return extract_rounds(items, plan, engine, force=force)


# -- decode workers ------------------------------------------------------------------------


def _loader(
    jobs,
    settings: DecodeSettings,
    config: ExtractConfig,
    device: torch.device,
    *,
    workers: int = 0,
) -> Iterator[dict[str, Any]]:
    """Decoded chunks of ``jobs`` (``ExtractionRun.jobs()``), their frames as tensors (pinned on CUDA).

    ``workers`` watched decode workers (``workers.decode_videos``; 0: decoding here, without
    limits; the run's thread budget sizes them from ``config.num_workers``); ``settings``: the
    run's decoding, with its motion and pose settings (None: no such stream).
    """
    pin = device.type == "cuda"
    for part in decode_videos(jobs, settings, workers=workers, limits=DecodeLimits.of(config)):
        if not part["error"]:
            part["frames"] = torch.from_numpy(part["frames"])
            if pin:
                part["frames"] = part["frames"].pin_memory()
        yield part


class _Runner:
    """The local engine's model side: packs chunks of several videos into batches for the sink;
    hands each chunk's other streams (motion, pose) to their sinks as it comes."""

    def __init__(
        self,
        model: Backbone,
        config: ExtractConfig,
        device: torch.device,
        sink: VideoSink,
        streams: dict[str, VideoSink] | None = None,
    ) -> None:
        self.forward, self.sink, self.batch_size = BatchForward(model, config, device), sink, config.batch_size
        self.streams = streams or {}
        self.frames: list[torch.Tensor] = []
        self.chunks: list[dict[str, Any]] = []

    def add(self, chunk: dict[str, Any]) -> None:
        for name, sink in self.streams.items():
            put_stream(sink, chunk, name)
        if chunk["error"]:
            self.sink.fail(chunk["job"], chunk["error"])
            return
        frames = chunk.pop("frames")
        if not len(frames):
            return  # this video's features are done: only its other streams were wanted
        self.frames.append(frames)
        self.chunks.append(chunk)
        if sum(len(f) for f in self.frames) >= self.batch_size:
            self.flush(final=False)

    def flush(self, *, final: bool = True) -> None:
        """Forward the pending frames in whole batches (all of them when ``final``; else the rest
        waits for the next chunks) and hand each chunk's share to the sink."""
        if not self.frames:
            return
        frames = torch.cat(self.frames)
        ready = len(frames) if final else len(frames) // self.batch_size * self.batch_size
        features = self._forward(frames[:ready])
        offset, waiting = 0, []
        for chunk in self.chunks:
            count, start = len(chunk["indices"]), chunk["start"]
            done = max(0, min(count, ready - offset))
            if done:
                self.sink.put(
                    chunk["job"],
                    slice(start, start + done),
                    chunk["indices"][:done],
                    features[offset : offset + done],
                    total=chunk["total"],
                    fps=chunk["fps"],
                )
            if done < count:
                waiting.append({**chunk, "start": start + done, "indices": chunk["indices"][done:]})
            offset += count
        self.frames = [frames[ready:]] if ready < len(frames) else []
        self.chunks = waiting

    def _forward(self, frames: torch.Tensor) -> np.ndarray:
        return self.forward(frames)
