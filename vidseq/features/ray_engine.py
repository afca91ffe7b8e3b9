"""The Ray engine of the extraction loop: the local engine's decode, forward and store, on a Ray cluster.

Place in the data flow: datasets + io + sampling -> **extract (engine ray)** -> ``FeatureStore`` ->
training. ``vidseq.features.extract`` comes here when ``extract.engine`` is ``ray``.

    videos still to do          one row and one block each (a task per video)
      -> map_batches(_decode)   CPU tasks: ``video_chunks`` (the local engine's decode + sample +
                                fit), chunk by chunk, one row per sampled frame
      -> map_batches(actor)     a fixed pool of ``_BackboneActor``s (one GPU each where the cluster
                                has GPUs); each builds the backbone once and runs ``BatchForward``
                                on ``batch_size`` frames, packed across videos by Ray Data
      -> iter_batches           on the driver: ``VideoSink`` assembles each video's features and
                                writes the local engine's store, entries, manifest and labels

With the motion stream (``motion`` enabled) the decode tasks also compute each chunk's pooled
flow (``video_chunks``, as in the local engine: one decode) and put it in a ``motion`` column
that passes the actors by; the driver's second ``VideoSink`` writes the motion store. The pose
stream (``pose`` enabled) likewise: the decode tasks run MediaPipe (one graph per worker
process) and a ``pose`` column carries the vectors to the pose store's sink. A video that needs
only its motion or pose entry still sends rows (blank frames the actors do not forward: every
row has one schema), a video that needs only its features gets no flow or pose computed.

A row per frame, not per chunk: Ray Data then packs frames of several videos into one forward
(what the local engine's ``_Runner`` does by hand) and the frame column has one fixed shape
``uint8 (S, S, 3)``; batches are columnar numpy, so rows cost nothing each. Decoding yields a
chunk of ``chunk_frames`` at a time into Ray's streaming executor, which backpressures on the
object store: memory stays bounded on long videos. Only the driver writes to the store, so
parallel workers never race on one folder; entries are atomic, so a killed run resumes (done
videos are skipped on the next run, like the local engine). A bad video comes back as an error
row and becomes a failed manifest row; so does a video whose decoder hangs or leaks: with
``extract.video_timeout`` or ``worker_memory_gb`` set, a decode task decodes its video in a child
process that it watches and kills past a limit (``workers``, the local engine's decode workers).

Ray is an optional extra (``pip install -e ".[ray]"``): it is imported only when this runs.
Joining a cluster (``address``) ships this vidseq to its workers (``runtime_env`` py_modules), so
they run the driver's code and key. A cluster with token authentication (Ray's default for the
clusters it starts) wants ``RAY_AUTH_MODE=token`` and its token (``RAY_AUTH_TOKEN`` or
``~/.ray/auth_token``) in the environment; without them ``ray.init`` waits, logging InvalidAuthToken.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.backbones import Backbone, BackboneSpec
from vidseq.backbones.onnx import require_onnxruntime
from vidseq.config import BackboneConfig, ExtractConfig, IOConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.datasets import Dataset, VideoItem
from vidseq.errors import VidseqError
from vidseq.features._engine import (
    BatchForward,
    VideoSink,
)
from vidseq.features.keys import build_backbone, recipe_of, resolve_device
from vidseq.features.motion import motion_dim
from vidseq.features.plan import ExtractionRun, ExtractResult, extract_rounds, plan_run
from vidseq.features.pose import pose_dim
from vidseq.features.workers import DecodeJob, DecodeLimits, DecodeSettings, decode_videos
from vidseq.progress import progress_bar

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # vidseq/, shipped to a remote cluster's workers


class RayEngineError(VidseqError):
    """The Ray engine cannot run: Ray is missing, the cluster cannot be joined, or a bad option."""


def extract_ray(
    items: list[VideoItem] | Dataset,
    *,
    out: str | Path,
    backbone: BackboneConfig | Backbone | None = None,
    sampling: SamplingConfig | None = None,
    config: ExtractConfig | None = None,
    io: IOConfig | None = None,
    force: bool = False,
    progress: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    num_actors: int | None = None,
    on_video_done: Callable[[dict[str, Any]], None] | None = None,
    reuse_from: list[str | Path] | tuple[str | Path, ...] = (),
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
) -> ExtractResult:
    """``vidseq.features.extract`` on Ray: the same stores, entries and manifests, done by a Ray Data pipeline.

    ``address`` (default ``config.ray_address``): the cluster to join (``ray://head:10001``,
    ``host:6379`` or ``auto``); none starts a local Ray with ``num_cpus`` (default: all cores)
    and shuts it down at the end. A Ray this process already initialised is used as it is.
    ``num_actors``: backbone actors (default: one per GPU of the cluster; without GPUs, one per
    two CPUs). ``backbone`` may be a built model (shipped to the actors) or a config (each actor
    builds it). Videos done in the store are reused unless ``force``; failures are manifest rows.
    ``motion``, ``pose`` (when enabled): those streams too, as ``extract`` makes them.
    """
    ray = _import_ray()
    config = config or ExtractConfig(engine="ray")
    if config.runtime == "onnxruntime":
        require_onnxruntime()  # here, as one line, before any actor (each actor's BatchForward runs it)
    sampling = sampling or SamplingConfig()
    io = io or IOConfig()
    if isinstance(backbone, Backbone):
        spec, source = backbone.spec, backbone  # a built model is shipped to the actors as it is
    else:
        source = backbone or BackboneConfig()
        spec = build_backbone(source, torch.device("cpu")).spec  # the key needs the spec (weights hash)

    plan = partial(
        plan_run,
        out=out,
        spec=spec,
        sampling=sampling,
        recipe=recipe_of(backbone, sampling, io, config),
        motion=motion,
        pose=pose,
        reuse_from=reuse_from,
        on_video_done=on_video_done,
    )

    started: list[bool] = []
    with ExitStack() as session:

        def engine(run: ExtractionRun) -> ExtractResult:
            if not run.todo:
                return run.finish(0.0)  # nothing to do: no cluster started
            if not started:  # the first round with work starts (or joins) Ray
                started.append(True)
                session.enter_context(_ray_session(ray, address or config.ray_address, num_cpus))
                session.enter_context(_quiet_ray_data(ray))
            dataset = _pipeline(
                ray,
                run.jobs(),
                spec=spec,
                source=source,
                sampling=sampling,
                config=config,
                backend=io.backend,
                num_actors=num_actors,
                motion=run.config_of("motion"),
                pose=run.config_of("pose"),
            )
            start = time.perf_counter()
            with progress_bar(len(run.todo), desc="extract", unit="video", enabled=progress) as bar:
                run.progress.bar = bar
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    _deliver(run.sink, batch, run.extra_sinks)
            run.close()
            return run.finish(time.perf_counter() - start)

        return extract_rounds(items, plan, engine, force=force)


# -- the pipeline --------------------------------------------------------------------------


def _pipeline(
    ray,
    jobs: list[DecodeJob],
    *,
    spec: BackboneSpec,
    source: BackboneConfig | Backbone,
    sampling: SamplingConfig,
    config: ExtractConfig,
    backend: str,
    num_actors: int | None,
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
):
    """videos (``ExtractionRun.jobs()``) -> frames and flow (CPU tasks) -> features (actor pool):
    a lazy Ray Dataset of feature rows."""
    actors, resources, threads = _actor_plan(ray.cluster_resources(), config=config, num_actors=num_actors)
    actors = min(actors, len(jobs))  # one video is one decode task: a second actor would idle
    rows = [
        {"job": job, "path": path, "appearance": appearance, "motion": wanted, "pose": any(extra)}
        for job, path, appearance, wanted, *extra in jobs
    ]
    videos = ray.data.from_items(rows, override_num_blocks=len(rows))
    # max_calls=0 is Ray's default for tasks (workers are reused without limit); saying it makes
    # the decode op's remote args differ from the actors', so Ray Data never fuses decoding into
    # the actors (fused, every video would be decoded serially inside the backbone actors).
    frames = videos.map_batches(
        _decode,
        batch_size=1,
        num_cpus=1,
        max_calls=0,
        fn_kwargs={
            "settings": DecodeSettings(spec, sampling, backend, config.chunk_frames, motion, pose),
            "limits": DecodeLimits.of(config),
        },
    )
    return frames.map_batches(
        _BackboneActor,
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"source": source, "config": config, "threads": threads},
        **resources,
    )


def _actor_plan(
    cluster: dict[str, float], *, config: ExtractConfig, num_actors: int | None
) -> tuple[int, dict[str, float], int]:
    """How many backbone actors, the resources each asks for, and its torch threads.

    With GPUs (and a device other than cpu): one GPU and one CPU per actor, one actor per GPU;
    the other CPUs decode. CPU only: the actors share half the CPUs (rounded down, at least one;
    by default one single-threaded actor per CPU of that half: small CNNs gain more from more
    actors than from more threads, see benchmarks/ray_extract.py) and the decode tasks (one CPU
    each) the rest. An actor pool holding every CPU would starve its own input and stall.
    """
    if num_actors is not None and num_actors < 1:
        raise RayEngineError(f"num_actors must be >= 1, got {num_actors}")
    gpus = int(cluster.get("GPU", 0)) if config.device != "cpu" else 0
    cpus = int(cluster.get("CPU", 0))
    if gpus:
        return num_actors or gpus, {"num_gpus": 1, "num_cpus": 1}, 1
    if cpus < 2:
        raise RayEngineError(
            f"the Ray cluster has {cpus} CPU(s) and no GPU: the ray engine needs at least 2 "
            "(decoding and the backbone run side by side); use extract.engine=local here"
        )
    actors = num_actors or cpus // 2
    share = (cpus // 2) / actors
    return actors, {"num_cpus": share}, max(1, int(share))


def _decode(
    batch: dict[str, np.ndarray], *, settings: DecodeSettings, limits: DecodeLimits
) -> Iterator[dict[str, np.ndarray]]:
    """A Ray task: the videos of a batch (one) -> rows of fitted frames (and flow), chunk by chunk.

    With limits (``extract.video_timeout``, ``worker_memory_gb``) the video is decoded in a child
    process this task forks and watches (``workers.decode_videos``, as the local engine's workers
    are); one past a limit is killed and its video comes back as an error row, so a hung or
    leaking decoder never holds (or grows) a Ray worker. Without limits, decoded in this task.
    """
    torch.set_num_threads(1)
    dims = {
        "motion_dim": motion_dim(settings.motion) if settings.motion is not None else None,
        "pose_dim": pose_dim(settings.pose) if settings.pose is not None else None,
    }
    columns = zip(batch["job"], batch["path"], batch["appearance"], batch["motion"], batch["pose"])
    jobs: list[DecodeJob] = [(int(j), str(path), bool(a), bool(m), bool(p)) for j, path, a, m, p in columns]
    for part in decode_videos(jobs, settings, workers=1 if limits.any else 0, limits=limits):
        yield _frame_rows(part, settings.spec.input_size, **dims)


def _frame_rows(
    part: dict[str, Any], size: int, *, motion_dim: int | None = None, pose_dim: int | None = None
) -> dict[str, np.ndarray]:
    """One row per frame of a chunk; an error (or a chunk without frames: the motion stream's
    error of a video that needs nothing else) is one row with a blank frame (every row one schema).

    ``motion_dim`` (the run makes the motion stream): ``motion`` and ``motion_error`` columns;
    ``pose_dim`` (the pose stream): a ``pose`` column; with either, ``forward`` (False: a blank
    frame of a video whose features are done).
    """
    blank = bool(part["error"]) or not len(part["indices"])
    if blank:
        frames, positions = np.zeros((1, size, size, 3), np.uint8), np.array([-1])
        indices, total, fps = positions, 0, 0.0
    else:
        indices, total, fps = part["indices"], part["total"], part["fps"]
        positions = part["start"] + np.arange(len(indices))
        frames = part["frames"] if len(part["frames"]) else np.zeros((len(indices), size, size, 3), np.uint8)
    count = len(frames)
    rows = {
        "job": np.full(count, part["job"], dtype=np.int64),
        "pos": positions.astype(np.int64),
        "index": np.asarray(indices, dtype=np.int64),
        "total": np.full(count, total, dtype=np.int64),
        "fps": np.full(count, fps, dtype=np.float64),
        "error": np.full(count, part["error"]),
        "frames": frames,
    }
    for stream, dim in (("motion", motion_dim), ("pose", pose_dim)):
        if dim is not None:
            vectors = None if blank else part.get(stream)
            rows[stream] = vectors if vectors is not None else np.zeros((count, dim), np.float32)
            rows[f"{stream}_error"] = np.full(count, part.get(f"{stream}_error", ""))
    if motion_dim is not None or pose_dim is not None:
        rows["forward"] = np.full(count, not blank and bool(len(part["frames"])))
    return rows


class _BackboneActor:
    """A Ray actor: builds the backbone once on its device, then turns frame rows into feature rows."""

    def __init__(self, source: BackboneConfig | Backbone, config: ExtractConfig, threads: int) -> None:
        torch.set_num_threads(threads)
        device = resolve_device(config.device)
        if device.type == "cuda":
            device = torch.device("cuda")  # Ray shows each actor only its own GPU: cuda:0
        model = build_backbone(source, device) if isinstance(source, BackboneConfig) else source.to(device).eval()
        self.forward, self.dim = BatchForward(model, config, device), model.spec.feature_dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = batch["error"] == ""
        if "forward" in batch:
            good &= batch["forward"]  # blank frames of videos that need only their motion entry
        features = np.zeros((len(good), self.dim), dtype=np.float32)
        if good.any():  # boolean indexing copies: a writable array for torch, not the read-only block
            features[good] = self.forward(torch.from_numpy(batch["frames"][good]))
        out = {name: column for name, column in batch.items() if name != "frames"}  # frames stay here
        out["features"] = features
        return out


def _deliver(sink: VideoSink, batch: dict[str, np.ndarray], streams: dict[str, VideoSink] | None = None) -> None:
    """Hand a batch of feature rows (frames of any videos, any order) to the sinks, video by video;
    ``streams``: the sinks of the other streams (``ExtractionRun.extra_sinks``)."""
    streams = streams or {}
    for job in np.unique(batch["job"]):
        mine = np.flatnonzero(batch["job"] == job)
        errors = [str(e) for e in batch["error"][mine] if e]
        if errors:
            for each in (sink, *streams.values()):
                each.fail(int(job), errors[0])
            continue
        first = mine[0]
        total, fps = int(batch["total"][first]), float(batch["fps"][first])
        for name, stream_sink in streams.items():
            _deliver_stream(stream_sink, name, int(job), batch, mine, total=total, fps=fps)
        if "forward" in batch:
            mine = mine[batch["forward"][mine]]
        if len(mine):
            sink.put(int(job), batch["pos"][mine], batch["index"][mine], batch["features"][mine], total=total, fps=fps)


def _deliver_stream(
    sink: VideoSink, stream: str, job: int, batch: dict[str, np.ndarray], mine: np.ndarray, *, total: int, fps: float
) -> None:
    """A video's rows of a batch to the sink of ``stream`` (motion, pose): its vectors, or why it has none."""
    errors = [str(e) for e in batch[f"{stream}_error"][mine] if e]
    if errors:
        sink.fail(job, errors[0])
        return
    mine = mine[batch["pos"][mine] >= 0]
    if len(mine):
        sink.put(job, batch["pos"][mine], batch["index"][mine], batch[stream][mine], total=total, fps=fps)


# -- Ray itself ----------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayEngineError(
            f"extract.engine=ray needs Ray Data ({exc}): install the extra with "
            '`pip install -e ".[ray]"` (or `pip install "ray[data]"`), or set extract.engine=local'
        ) from None
    return ray


@contextmanager
def _ray_session(ray, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Join the cluster at ``address``, or start a local Ray and stop it after; reuse one already up."""
    if ray.is_initialized():
        yield  # the caller's Ray: used as it is and left running
        return
    # Workers' output stays in the session's log files; the driver shows Ray's errors only (its
    # warnings here are notices, e.g. that token authentication is on).
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            # The cluster's workers get this very vidseq (same code, same feature key as the driver).
            ray.init(address=address, runtime_env={"py_modules": [str(_PACKAGE_DIR)]}, **quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"join the Ray cluster at {address!r}" if address else "start a local Ray"
        raise RayEngineError(
            f"could not {where}: {exc}. Check extract.ray_address (ray://head:10001, host:6379 or auto), "
            "or leave it empty to start a local Ray"
        ) from exc
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _quiet_ray_data(ray) -> Iterator[None]:
    """Ray Data without its progress bars and per-run INFO lines (the driver has one bar over videos).

    Its warnings still show (a stalled pipeline says why), except the one saying that the
    progress bars are off.
    """
    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")
    saved = {name: getattr(context, name) for name in names}
    data_log, progress_log = logging.getLogger("ray.data"), logging.getLogger("ray.data._internal.progress")
    level, drop = data_log.level, _DropMessage("Progress bars disabled")
    for name in names:
        setattr(context, name, False)
    data_log.setLevel(logging.WARNING)
    progress_log.addFilter(drop)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        data_log.setLevel(level)
        progress_log.removeFilter(drop)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
