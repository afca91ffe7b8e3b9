"""What both extraction engines share before and after the work: store keys, the plan of a run,
its rounds (waiting for other writers), its result, and a clean stop on SIGTERM or Ctrl-C.

Place in the data flow: datasets -> **plan** -> an engine (``extraction``: local, ``ray_engine``:
Ray) -> ``FeatureStore``. ``plan_run`` opens each stream's store (appearance, and motion and pose
where asked for: linked siblings under one root), identifies every video by its
content (one record per video however its path is spelled), reuses entries that load, claims the
rest (``claims.Claims``) and leaves videos that another live writer holds for a later round.
``extract_rounds`` runs an engine over what this process claimed, then waits for the videos other
writers hold and takes over those whose writer died, until every video has a record.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseq import interrupts
from vidseq.backbones import BackboneSpec
from vidseq.config import MotionConfig, PoseConfig, SamplingConfig
from vidseq.datasets import Dataset, VideoItem
from vidseq.errors import Interrupted
from vidseq.features._engine import RunProgress, VideoSink
from vidseq.features.identity import WHOLE_FRAME, entry_key, note_key, resolved, video_id
from vidseq.features.keys import motion_store_key, pose_store_key, store_key
from vidseq.features.motion import motion_dim
from vidseq.features.pose import pose_dim
from vidseq.features.store import FeatureStore
from vidseq.outputs import check_writable

WAIT_POLL_SECONDS = 0.5

ItemsLike = list[VideoItem] | Dataset
Roots = list[str | Path] | tuple[str | Path, ...]
EXTRA_STREAMS = ("motion", "pose")  # streams a run may make beside appearance, in ``config.STREAMS`` order


@dataclass
class ExtractResult:
    """What a run did: counts, the store, and the rows of videos that failed.

    ``motion``, ``pose``: the same for those streams' stores when the run made them (else None);
    ``ok`` is about this store's videos only (a video too short for the motion stream is a failed
    row there, not here). ``duplicates``: items that were another item's content under another
    path. ``present`` (a pose stream's result; else None): of its ``frames``, those where a
    person was found.
    """

    store: FeatureStore
    extracted: int = 0
    reused: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    motion: ExtractResult | None = None
    duplicates: int = 0
    pose: ExtractResult | None = None
    present: int | None = None

    @property
    def extras(self) -> dict[str, ExtractResult]:
        """The results of the other streams this run made (motion, pose), by name."""
        return {name: made for name in EXTRA_STREAMS if (made := getattr(self, name)) is not None}

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, later: ExtractResult) -> ExtractResult:
        """This round's result followed by a later round's (videos that waited for other writers)."""
        self.extracted += later.extracted
        self.reused += later.reused
        self.failed = [*self.failed, *later.failed]
        self.frames += later.frames
        self.seconds += later.seconds
        if self.present is not None and later.present is not None:
            self.present += later.present
        for name in EXTRA_STREAMS:
            mine, theirs = getattr(self, name), getattr(later, name)
            if mine is not None and theirs is not None:
                mine.merge(theirs)
        return self

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        text = (
            f"{self.extracted} extracted, {self.reused} already done, {len(self.failed)} failed "
            f"({self.frames} frames in {self.seconds:.1f} s, {rate:.0f} frames/s) -> {self.store.directory}"
        )
        if self.duplicates:
            text += f"\n{self.duplicates} paths were the same content as another path (one video each)"
        for name, stream in self.extras.items():
            found = ""
            if stream.present is not None and stream.frames:
                found = f" (a person found in {stream.present} of the {stream.frames} frames extracted)"
            text += (
                f"\n{name} stream: {stream.extracted} extracted, {stream.reused} already done, "
                f"{len(stream.failed)} failed{found} -> {stream.store.directory}"
            )
        return text


# -- one stream's plan ----------------------------------------------------------------------


@dataclass
class ExtractionPlan:
    """One stream's store in a run: its rows (by entry key), each item path's key, the videos this
    process claimed (``todo``), the ones another live writer holds (``waiting``), and the result."""

    store: FeatureStore
    rows: dict[str, dict[str, Any]]
    todo: list[VideoItem]
    result: ExtractResult
    keys: dict[str, str] = field(default_factory=dict)
    waiting: list[VideoItem] = field(default_factory=list)
    items: list[VideoItem] = field(default_factory=list)

    def row_of(self, item: VideoItem) -> dict[str, Any]:
        return self.rows[self.keys[str(item.path)]]

    def finish(self, seconds: float) -> ExtractResult:
        """Record the run's time, drop its claims, rebuild the manifest view: the end of a run."""
        self.result.seconds = seconds
        self.stop()
        return self.result

    def stop(self) -> None:
        """Drop this process's claims and rebuild the manifest view (also on an interrupted run)."""
        self.store.claims.release_all()
        self.store.write_manifest_view()


def plan_extraction(
    items: ItemsLike,
    *,
    out: str | Path,
    spec: BackboneSpec,
    sampling: SamplingConfig,
    recipe: dict[str, Any],
    force: bool = False,
    reuse_from: Roots = (),
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
) -> ExtractionPlan:
    """Open the store for ``spec`` + ``sampling`` (with ``motion`` or ``pose``: that stream's store
    made beside it), give every video a record, reuse done ones, claim the rest where no one holds them."""
    dataset = items if isinstance(items, Dataset) else None
    store = _open_store(out, spec=spec, sampling=sampling, recipe=recipe, motion=motion, pose=pose)
    store.remove_stale_temporaries()
    for row in _note_rows(dataset):
        store.put_record(row)
    if dataset is not None and dataset.labels:
        store.add_labels(dataset.labels)
    result = ExtractResult(store, present=None if pose is None else 0)
    plan = ExtractionPlan(store, {}, [], result, items=list(items))
    for item in items:
        row = _row(item)
        plan.keys[str(item.path)] = row["key"]
        if row["key"] in plan.rows:
            plan.result.duplicates += 1  # the same content under another path: one video
        elif not row["video"]:
            plan.rows[row["key"]] = row  # cannot be read: a failure now, no decode
            store.put_record(row)
            plan.result.failed.append(row)
        else:
            plan.rows[row["key"]] = row
            if not force and _reuse(store, item, row, reuse_from):
                plan.result.reused += 1
            elif store.claims.acquire(row["key"]):
                plan.todo.append(item)
            else:
                plan.waiting.append(item)
    return plan


def _open_store(
    out: str | Path,
    *,
    spec: BackboneSpec,
    sampling: SamplingConfig,
    recipe: dict[str, Any],
    motion: MotionConfig | None,
    pose: PoseConfig | None,
) -> FeatureStore:
    """The appearance stream's store under ``out``, or the motion or pose stream's (the one whose
    config is given): ``motion-<method>-<digest>``, ``pose-mediapipe-<digest>``."""
    if motion is not None:
        stream, settings, name = "motion", motion, f"motion-{motion.method}"
        key = motion_store_key(spec, sampling, motion)
    elif pose is not None:
        stream, settings, name = "pose", pose, "pose-mediapipe"
        key = pose_store_key(spec, sampling, pose)
    else:
        return FeatureStore.open(out, store_key(spec, sampling), name=spec.name, recipe=recipe)
    recipe = {**recipe, stream: settings.model_dump(mode="json")}
    return FeatureStore.open(out, key, name=name, recipe=recipe, stream=stream)


def _note_rows(dataset: Dataset | None) -> list[dict[str, Any]]:
    """Records of the files a dataset lists but lacks, and of those that are not videos."""
    if dataset is None:
        return []
    notes = [(p, "missing", "listed but not found") for p in dataset.missing]
    notes += [(p, "skipped", "not a video file") for p in dataset.skipped]
    return [
        {
            "key": note_key(p),
            "path": str(p),
            "resolved": resolved(p),
            "status": status,
            "error": error,
            "subject": WHOLE_FRAME,
        }
        for p, status, error in notes
    ]


def _row(item: VideoItem) -> dict[str, Any]:
    """An item's row: its path as given and resolved, its content id (blank, and failed, when the
    file cannot be read), label, split, group."""
    row = {
        "path": str(item.path),
        "resolved": resolved(item.path),
        "label": item.label,
        "split": item.split,
        "group": item.group,
        "subject": WHOLE_FRAME,
        "status": "pending",
    }
    try:
        row["video"] = video_id(item.path)
    except OSError as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else f"cannot read it ({exc.strerror})"
        return {**row, "video": "", "key": note_key(item.path), "status": "failed", "error": reason}
    return {**row, "key": entry_key(row["video"])}


def _reuse(store: FeatureStore, item: VideoItem, row: dict[str, Any], reuse_from: Roots = ()) -> bool:
    """Whether the video's entry is already there (or adopted from another root); its record is
    then brought up to date (a new path spelling, label, split or group is recorded)."""
    found = store.find_entry(item.path, row["video"])
    for root in reuse_from if found is None else ():
        found = found or store.adopt(item.path, root, vid=row["video"])
    if found is None:
        return False
    entry, features = found
    row.update(status="done", error="", frames=len(features.frame_indices), file=entry.relative_to(store.directory))
    recorded = store.get_record(row["key"])
    if recorded is None or any(
        str(recorded.get(k, "")) != ("" if v is None else str(v)) for k, v in row.items() if k != "key"
    ):
        store.put_record(row)
    return True


# -- a run: every stream, in rounds -----------------------------------------------------------


@dataclass
class StreamRun:
    """A stream a run makes beside appearance (motion, pose): its plan, its sink, its settings."""

    plan: ExtractionPlan
    sink: VideoSink
    config: MotionConfig | PoseConfig


@dataclass
class ExtractionRun:
    """One run's streams over one list of videos: the appearance plan and sink, those of each
    other stream the run makes (``extras``, by name), and the videos any stream still needs
    (``todo``: what the engines decode; job numbers index it)."""

    appearance: ExtractionPlan
    sink: VideoSink
    todo: list[VideoItem]
    progress: RunProgress
    extras: dict[str, StreamRun] = field(default_factory=dict)

    @property
    def plans(self) -> list[ExtractionPlan]:
        return [self.appearance, *(extra.plan for extra in self.extras.values())]

    @property
    def sinks(self) -> list[VideoSink]:
        return [self.sink, *self.extra_sinks.values()]

    @property
    def extra_sinks(self) -> dict[str, VideoSink]:
        """The sinks of the other streams the run makes (motion, pose), by name: what the engines
        hand each chunk's or row's vectors of those streams to."""
        return {name: extra.sink for name, extra in self.extras.items()}

    def sink_of(self, stream: str) -> VideoSink | None:
        """The sink of ``stream`` (``motion``, ``pose``); None where the run does not make it."""
        return self.extra_sinks.get(stream)

    def config_of(self, stream: str) -> MotionConfig | PoseConfig | None:
        return self.extras[stream].config if stream in self.extras else None

    @property
    def waiting(self) -> list[VideoItem]:
        """Videos another live writer holds in some stream (this run leaves them to it for now)."""
        paths = {str(item.path) for plan in self.plans for item in plan.waiting}
        return [item for item in self.appearance.items if str(item.path) in paths]

    def jobs(self) -> list[tuple[int, str, bool, bool] | tuple[int, str, bool, bool, bool]]:
        """``(job, path, wants appearance, wants motion)`` of each video to do, and ``wants pose``
        after them where the run makes the pose stream (``workers.DecodeJob``)."""
        sinks = [self.sink, self.sink_of("motion")] + ([self.sink_of("pose")] if "pose" in self.extras else [])
        return [
            (job, str(item.path), *(s is not None and job not in s.closed for s in sinks))
            for job, item in enumerate(self.todo)
        ]

    def close(self) -> None:
        """The end of the engine's stream: videos still incomplete fail (``VideoSink.close``)."""
        for sink in self.sinks:
            sink.close()

    def discard(self) -> None:
        """Drop the unfinished videos' temporaries and this process's claims (a run that stops)."""
        for sink in self.sinks:
            sink.discard()
        for plan in self.plans:
            plan.stop()

    def finish(self, seconds: float) -> ExtractResult:
        """Every stream's manifest written; the appearance result, with the others' in it."""
        result = self.appearance.finish(seconds)
        for name, extra in self.extras.items():
            setattr(result, name, extra.plan.finish(seconds))
        return result


def plan_run(
    items: ItemsLike,
    *,
    out: str | Path,
    spec: BackboneSpec,
    sampling: SamplingConfig,
    recipe: dict[str, Any],
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
    force: bool = False,
    reuse_from: Roots = (),
    on_video_done: Callable[[dict[str, Any]], None] | None = None,
) -> ExtractionRun:
    """Plan every stream of a run (the motion and pose streams where ``motion``, ``pose`` are
    enabled; the stores of one run link each other both ways) and the union of the videos they claimed."""
    check_writable(out, what="extract --out, the root of the feature stores")
    items = items if isinstance(items, Dataset) else list(items)
    common = dict(out=out, spec=spec, sampling=sampling, recipe=recipe, force=force, reuse_from=reuse_from)
    configs = {name: cfg for name, cfg in (("motion", motion), ("pose", pose)) if cfg is not None and cfg.enabled}
    plans = [plan_extraction(items, **common)]
    plans += [plan_extraction(items, **common, **{name: cfg}) for name, cfg in configs.items()]
    if configs:
        for plan in plans:
            plan.store.link_streams([other.store for other in plans])
    wanted = [{str(item.path) for item in plan.todo} for plan in plans]
    todo = [item for item in items if any(str(item.path) in paths for paths in wanted)]
    progress = RunProgress(
        [sum(str(item.path) in paths for paths in wanted) for item in todo], on_video_done=on_video_done
    )
    dims = [spec.feature_dim, *(motion_dim(c) if name == "motion" else pose_dim(c) for name, c in configs.items())]
    sinks = [
        VideoSink(
            plan,
            dim,
            items=todo,
            progress=progress,
            jobs=[job for job, item in enumerate(todo) if str(item.path) in paths],
        )
        for plan, dim, paths in zip(plans, dims, wanted)
    ]
    parts = zip(configs.items(), plans[1:], sinks[1:])
    extras = {name: StreamRun(plan, sink, cfg) for (name, cfg), plan, sink in parts}
    return ExtractionRun(plans[0], sinks[0], todo, progress, extras)


def extract_rounds(
    items: ItemsLike,
    plan: Callable[..., ExtractionRun],
    engine: Callable[[ExtractionRun], ExtractResult],
    *,
    force: bool = False,
) -> ExtractResult:
    """Run ``engine`` over what this process claimed; then, while other writers hold some videos,
    wait until each is recorded or its writer is gone, plan those again (reusing what the others
    wrote, claiming what they left) and run again. SIGTERM and Ctrl-C stop it cleanly: claims
    dropped, the manifest view rebuilt, ``Interrupted`` raised with what is kept."""
    run = None
    with interrupts.sigterm_raises():
        try:
            run = plan(items, force=force)
            result = engine(run)
            while waiting := run.waiting:
                _wait_for_others(run)
                run = plan(waiting, force=False)
                result.merge(engine(run))
            return result
        except KeyboardInterrupt as exc:
            if run is not None:
                run.discard()
            done = sum(1 for row in run.appearance.rows.values() if row.get("status") == "done") if run else 0
            raise Interrupted(
                f"extraction stopped by {getattr(exc, 'signal_name', 'Ctrl-C')}: the store is consistent "
                f"({done} videos of this round recorded as done); run the same command again to finish",
                signum=getattr(exc, "signum", signal.SIGINT),
            ) from None
        except BaseException:
            if run is not None:
                run.discard()  # temporaries of unfinished videos, this process's claims
            raise


def _wait_for_others(run: ExtractionRun) -> None:
    """Block until no live writer holds any of the run's waiting videos."""
    keys = [(plan.store, plan.keys[str(item.path)]) for plan in run.plans for item in plan.waiting]
    while any(not store.claims.is_free(key) for store, key in keys):
        time.sleep(WAIT_POLL_SECONDS)
