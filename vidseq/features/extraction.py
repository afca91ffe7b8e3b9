"""The extraction loop: videos -> sampled frames -> backbone features -> the feature store.

Place in the data flow: datasets + io + sampling -> **extract** -> ``FeatureStore`` -> training.
Decode workers (a torch DataLoader over an IterableDataset) open, sample, decode and fit frames
to the backbone's input size in parallel while the main process runs the model; frames of
several videos are packed into one batch. A video is processed in chunks of ``chunk_frames``,
so decoded frames never pile up, and its features go to a memory-mapped temporary file when
they are large, so peak memory does not grow with video length. A bad video becomes a manifest
row with its error; the run goes on.

With ``motion`` enabled the same run writes the motion stream (``vidseq.motion``) into a second
store under the same root, linked to the first: the decode workers read each chunk's frames and
their flow partners in one read and compute the pooled flow there, so the videos are decoded
once. Each stream resumes on its own: a video is decoded when any stream lacks its entry, and
gets only what is missing (no forward when only its motion is; no flow when only its features).

``config.engine == "ray"`` hands the run to ``ray_engine.extract_ray``. Both engines share
``plan_run`` (here) and ``video_chunks``, ``BatchForward``, ``VideoSink`` (``_engine``):
one decode, one forward and one store writer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vidseq.backbones import Backbone, BackboneSpec, create_backbone
from vidseq.config import BackboneConfig, ExtractConfig, IOConfig, MotionConfig, SamplingConfig
from vidseq.datasets import Dataset, VideoItem
from vidseq.features._engine import (
    BatchForward,
    RunProgress,
    VideoSink,
    _progress_bar,
    decode_size,
    fit_frames,
    flow_pooler,
    put_motion,
    video_chunks,
)
from vidseq.features.store import FeatureStore
from vidseq.motion import motion_dim, motion_key

__all__ = [
    "BatchForward", "ExtractResult", "ExtractionPlan", "ExtractionRun", "VideoSink", "build_backbone", "decode_size",
    "extract", "fit_frames", "motion_store_key", "plan_extraction", "plan_run", "recipe_of", "resolve_device",
    "store_key", "video_chunks",
]  # fmt: skip

FEATURE_KEY_VERSION = 2  # bump when this loop changes which features a config gives (2: opencv upscaling)


@dataclass
class ExtractResult:
    """What a run did: counts, the store, and the rows of videos that failed.

    ``motion``: the same for the motion stream's store when the run made it (else None); ``ok``
    is about this store's videos only (a video too short for the motion stream is a failed row
    there, not here).
    """

    store: FeatureStore
    extracted: int = 0
    reused: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    motion: ExtractResult | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        text = (
            f"{self.extracted} extracted, {self.reused} already done, {len(self.failed)} failed "
            f"({self.frames} frames in {self.seconds:.1f} s, {rate:.0f} frames/s) -> {self.store.directory}"
        )
        if self.motion is not None:
            motion = self.motion
            text += (f"\nmotion stream: {motion.extracted} extracted, {motion.reused} already done, "
                     f"{len(motion.failed)} failed -> {motion.store.directory}")
        return text


def store_key(spec: BackboneSpec, sampling: SamplingConfig) -> dict[str, Any]:
    """Everything that changes the stored features: backbone spec, sampling, loop version."""
    return {
        "backbone": spec.key(),
        "sampling": sampling.model_dump(mode="json"),
        "extract_version": FEATURE_KEY_VERSION,
    }


def motion_store_key(spec: BackboneSpec, sampling: SamplingConfig, motion: MotionConfig) -> dict[str, Any]:
    """Everything that changes the motion stream: flow settings, the geometry of the fitted frames
    the flow sees (the backbone's resize, input size and fit), sampling, loop version."""
    geometry = {"resize": spec.resize, "input_size": spec.input_size, "fit": spec.fit}
    return {
        "motion": motion_key(motion, geometry),
        "sampling": sampling.model_dump(mode="json"),
        "extract_version": FEATURE_KEY_VERSION,
    }


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
) -> ExtractResult:
    """Extract features of ``items`` into the store under ``out`` for this backbone and sampling.

    Finished videos are reused unless ``force``; failures are recorded, not raised. Given a
    ``Dataset``, its missing and skipped files get manifest rows too (nothing is lost silently).
    ``reuse_from``: other roots whose store for the same key may already hold a video's entry
    (it is hard-linked, or copied, instead of extracted again). ``motion`` (when enabled): the
    motion stream too, in its own linked store under ``out`` (``result.motion``), from the same
    decode. ``on_video_done``: called once per video done in every stream it needed.
    ``config.engine == "ray"``: the same run on a Ray cluster (``ray_engine.extract_ray``;
    ``config.ray_address`` picks it).
    """
    config = config or ExtractConfig()
    if config.engine == "ray":
        # ray is an optional extra: its engine (and ray) are imported only when asked for
        from vidseq.features.ray_engine import extract_ray

        return extract_ray(items, out=out, backbone=backbone, sampling=sampling, config=config, io=io, force=force,
                           progress=progress, on_video_done=on_video_done, reuse_from=reuse_from, motion=motion)
    sampling = sampling or SamplingConfig()
    device = resolve_device(config.device)
    model = backbone if isinstance(backbone, Backbone) else build_backbone(backbone or BackboneConfig(), device)
    run = plan_run(items, out=out, spec=model.spec, sampling=sampling, recipe=recipe_of(backbone, sampling, io),
                   motion=motion, force=force, reuse_from=reuse_from, on_video_done=on_video_done)
    start = time.perf_counter()
    runner = _Runner(model, config, device, run.sink, run.motion_sink)
    loader = _loader(run.jobs(), model.spec, sampling, config, (io or IOConfig()).backend, device,
                     motion=run.motion_config)
    with _progress_bar(len(run.todo), progress) as bar:
        run.progress.bar = bar
        for chunk in loader:
            runner.add(chunk)
        runner.flush()
    run.close()
    return run.finish(time.perf_counter() - start)


# -- what both engines share: the plan, decoding, the forward, the sink --------------------


@dataclass
class ExtractionPlan:
    """The store of a run, its manifest rows (by path), the videos still to do, and the result so far."""

    store: FeatureStore
    rows: dict[str, dict[str, Any]]
    todo: list[VideoItem]
    result: ExtractResult

    def finish(self, seconds: float) -> ExtractResult:
        """Record the run's time and write the manifest: the end of a run of either engine."""
        self.result.seconds = seconds
        self.store.write_manifest(self.rows.values())
        return self.result


@dataclass
class ExtractionRun:
    """One run's streams over one list of videos: each stream's plan and sink (the motion ones
    None when the run does not make it), and the videos any stream still needs (``todo``: what
    the engines decode; job numbers index it)."""

    appearance: ExtractionPlan
    sink: VideoSink
    todo: list[VideoItem]
    progress: RunProgress
    motion: ExtractionPlan | None = None
    motion_sink: VideoSink | None = None
    motion_config: MotionConfig | None = None

    def jobs(self) -> list[tuple[int, str, bool, bool]]:
        """``(job, path, wants appearance, wants motion)`` of each video to do."""
        sinks = (self.sink, self.motion_sink)
        return [(job, str(item.path), *(s is not None and job not in s.closed for s in sinks))
                for job, item in enumerate(self.todo)]

    def close(self) -> None:
        """The end of the engine's stream: videos still incomplete fail (``VideoSink.close``)."""
        for sink in (self.sink, self.motion_sink):
            if sink is not None:
                sink.close()

    def discard(self) -> None:
        """Drop the unfinished videos' temporaries (a run that stops on an exception)."""
        for sink in (self.sink, self.motion_sink):
            if sink is not None:
                sink.discard()

    def finish(self, seconds: float) -> ExtractResult:
        """Both streams' manifests written; the appearance result, with the motion one in it."""
        result = self.appearance.finish(seconds)
        if self.motion is not None:
            result.motion = self.motion.finish(seconds)
        return result


def plan_run(items: list[VideoItem] | Dataset, *, out: str | Path, spec: BackboneSpec, sampling: SamplingConfig,
             recipe: dict[str, Any], motion: MotionConfig | None = None, force: bool = False,
             reuse_from: list[str | Path] | tuple[str | Path, ...] = (),
             on_video_done: Callable[[dict[str, Any]], None] | None = None) -> ExtractionRun:
    """Plan every stream of a run (the motion stream when ``motion`` is enabled; its store linked
    to the appearance store both ways) and the union of the videos they still need."""
    items = items if isinstance(items, Dataset) else list(items)
    plans = [plan_extraction(items, out=out, spec=spec, sampling=sampling, recipe=recipe, force=force,
                             reuse_from=reuse_from)]
    motion = motion if motion is not None and motion.enabled else None
    if motion is not None:
        plans.append(plan_extraction(items, out=out, spec=spec, sampling=sampling, recipe=recipe, force=force,
                                     reuse_from=reuse_from, motion=motion))
        plans[0].store.link_streams([plans[1].store])
        plans[1].store.link_streams([plans[0].store])
    wanted = [{str(item.path) for item in plan.todo} for plan in plans]
    todo = [item for item in items if any(str(item.path) in paths for paths in wanted)]
    progress = RunProgress([sum(str(item.path) in paths for paths in wanted) for item in todo],
                           on_video_done=on_video_done)
    dims = [spec.feature_dim] + ([motion_dim(motion)] if motion is not None else [])
    sinks = [VideoSink(plan, dim, items=todo, progress=progress,
                       jobs=[job for job, item in enumerate(todo) if str(item.path) in paths])
             for plan, dim, paths in zip(plans, dims, wanted)]
    if motion is None:
        return ExtractionRun(plans[0], sinks[0], todo, progress)
    return ExtractionRun(plans[0], sinks[0], todo, progress, plans[1], sinks[1], motion)


def plan_extraction(items: list[VideoItem] | Dataset, *, out: str | Path, spec: BackboneSpec,
                    sampling: SamplingConfig, recipe: dict[str, Any], force: bool = False,
                    reuse_from: list[str | Path] | tuple[str | Path, ...] = (),
                    motion: MotionConfig | None = None) -> ExtractionPlan:
    """Open the store for ``spec`` + ``sampling`` (with ``motion``: the motion stream's store made
    beside it), give every video a manifest row, skip done ones."""
    dataset = items if isinstance(items, Dataset) else None
    items = list(items)
    if motion is None:
        store = FeatureStore.open(out, store_key(spec, sampling), name=spec.name, recipe=recipe)
    else:
        store = FeatureStore.open(out, motion_store_key(spec, sampling, motion), name=f"motion-{motion.method}",
                                  recipe={**recipe, "motion": motion.model_dump(mode="json")}, stream="motion")
    store.remove_stale_temporaries()
    # The manifest covers every video this store has seen: rows of earlier runs are kept.
    rows = {row["path"]: row for row in store.read_manifest()}
    rows.update({row["path"]: row for row in _note_rows(dataset)})
    rows.update({str(item.path): _row(item) for item in items})
    if dataset is not None and dataset.labels:
        store.add_labels(dataset.labels)
    todo = [item for item in items if force or not _reuse(store, item, rows, reuse_from)]
    return ExtractionPlan(store, rows, todo, ExtractResult(store, reused=len(items) - len(todo)))


def recipe_of(backbone: BackboneConfig | Backbone | None, sampling: SamplingConfig, io: IOConfig | None) -> dict:
    """The config sections that redo this extraction on new videos (none for a prebuilt model)."""
    if isinstance(backbone, Backbone):
        return {}
    return {
        "backbone": (backbone or BackboneConfig()).model_dump(mode="json"),
        "sampling": sampling.model_dump(mode="json"),
        "io": (io or IOConfig()).model_dump(mode="json"),
    }


def build_backbone(cfg: BackboneConfig, device: torch.device) -> Backbone:
    """The backbone a ``backbone`` config section describes, on ``device``."""
    return create_backbone(cfg.name, weights=cfg.weights, pooling=cfg.pooling, device=device, **cfg.options())


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _note_rows(dataset: Dataset | None) -> list[dict[str, Any]]:
    if dataset is None:
        return []
    missing = [{"path": str(p), "status": "missing", "error": "listed but not found"} for p in dataset.missing]
    skipped = [{"path": str(p), "status": "skipped", "error": "not a video file"} for p in dataset.skipped]
    return missing + skipped


def _row(item: VideoItem) -> dict[str, Any]:
    return {"path": str(item.path), "label": item.label, "split": item.split, "group": item.group, "status": "pending"}


def _reuse(store: FeatureStore, item: VideoItem, rows: dict[str, dict], reuse_from=()) -> bool:
    if not store.is_done(item.path) and not any(store.adopt(item.path, root) for root in reuse_from):
        return False
    entry = store.entry_path(item.path)
    frames = len(store.read(entry).frame_indices)
    rows[str(item.path)].update(status="done", frames=frames, file=entry.relative_to(store.directory))
    return True


# -- decode workers ------------------------------------------------------------------------


class _VideoChunks(IterableDataset):
    """The local engine's decode workers: ``video_chunks`` of their share of the videos, as tensors.

    ``jobs``: ``ExtractionRun.jobs()``; ``motion``: the run's motion settings (None: no motion
    stream). Each worker builds its ``FlowPooler`` once. (``cv2.setNumThreads`` is never called
    here: in a forked worker it frees the parent's OpenCV thread pool and hangs.)
    """

    def __init__(self, jobs, spec: BackboneSpec, sampling: SamplingConfig, backend: str, chunk: int,
                 motion: MotionConfig | None = None):
        self.jobs, self.spec, self.sampling, self.backend, self.chunk = jobs, spec, sampling, backend, chunk
        self.motion = motion

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        torch.set_num_threads(1)
        flow = flow_pooler(self.motion) if self.motion is not None else None
        jobs = self.jobs if worker is None else self.jobs[worker.id :: worker.num_workers]
        for job, path, appearance, motion in jobs:
            for part in video_chunks(job, path, spec=self.spec, sampling=self.sampling, backend=self.backend,
                                     chunk=self.chunk, appearance=appearance, flow=flow if motion else None):
                if not part["error"]:
                    part["frames"] = torch.from_numpy(part["frames"])
                yield part


def _loader(jobs, spec, sampling, config: ExtractConfig, backend: str, device, *,
            motion: MotionConfig | None = None) -> DataLoader:
    """Decode workers over ``jobs``: ``(job, path, wants appearance, wants motion)`` each."""
    workers = min(config.num_workers, len(jobs))
    return DataLoader(
        _VideoChunks(jobs, spec, sampling, backend, config.chunk_frames, motion),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


class _Runner:
    """The local engine's model side: packs chunks of several videos into batches for the sink;
    hands each chunk's motion stream to the motion sink as it comes."""

    def __init__(self, model: Backbone, config: ExtractConfig, device: torch.device, sink: VideoSink,
                 motion_sink: VideoSink | None = None) -> None:
        self.forward, self.sink, self.batch_size = BatchForward(model, config, device), sink, config.batch_size
        self.motion_sink = motion_sink
        self.frames: list[torch.Tensor] = []
        self.chunks: list[dict[str, Any]] = []

    def add(self, chunk: dict[str, Any]) -> None:
        put_motion(self.motion_sink, chunk)
        if chunk["error"]:
            self.sink.fail(chunk["job"], chunk["error"])
            return
        frames = chunk.pop("frames")
        if not len(frames):
            return  # this video's features are done: only its motion was wanted
        self.frames.append(frames)
        self.chunks.append(chunk)
        if sum(len(f) for f in self.frames) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.frames:
            return
        features = self._forward(torch.cat(self.frames))
        offset = 0
        for chunk in self.chunks:
            count, start = len(chunk["indices"]), chunk["start"]
            self.sink.put(chunk["job"], slice(start, start + count), chunk["indices"],
                          features[offset : offset + count], total=chunk["total"], fps=chunk["fps"])
            offset += count
        self.frames, self.chunks = [], []

    def _forward(self, frames: torch.Tensor) -> np.ndarray:
        return self.forward(frames)
