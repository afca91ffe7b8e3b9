"""Per-person extraction: videos -> people tracked on a grid of frames -> one store entry per track.

Place in the data flow: datasets + io -> **extract_actors** (``actor_tracking.track_video``:
``actors.PersonTracker`` on the grid frames, crops of each tracked person through the one
``FrameEncoder``; each track's ``actors.trajectory``) -> two linked ``FeatureStore`` s under
``out``: ``actors-<backbone>-<digest>`` (stream ``appearance``: the crops' features) and
``actors-trajectory-<digest>`` (stream ``trajectory``), with the same entries: subject ``t<id>``
of each video. With ``motion``, a third (``actors-motion-<method>-<digest>``: the flow inside
each crop); with ``pose``, another (``actors-pose-<digest>``, stream ``pose``: MediaPipe Pose
inside a wider crop of each tracked frame, ``actor_pose``).

Every grid frame is decoded once: the detector, the tracker and the crops read the same frames
(no second pass over the video). Crops go through the backbone in batches as they come, so
memory does not grow with video length. The grid is ``actors.fps`` frames per second (every
frame of a slower video); a track's sequence is its frames on that grid (``sampling`` does not
apply: the tracker needs regular frames).

What the store promises holds here too: entries are written atomically before their records, a
rerun skips videos done (their ``frame`` record says ``tracked`` with the number of tracks) and
retries failed ones, and a claim per video lets several processes share one store. A video in
which nobody was tracked gets a row that says so (status ``empty``, ``no person tracked ...``):
not a failure of the run, and not retried. Asking for pose on a store whose videos are done
without it computes the pose alone: their tracks' frames and boxes are read back from the
trajectory stream and only those frames are decoded again (no detector, tracker or backbone);
the other streams are left as they are. Crop motion asked for on videos done without it is
added the same way (the tracked frames and their partners decoded again, ``actor_streams``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import __version__
from vidseq.backbones import Backbone, FrameEncoder
from vidseq.config import ActorsConfig, BackboneConfig, ExtractConfig, IOConfig, MotionConfig, PoseConfig
from vidseq.datasets import Dataset, VideoItem
from vidseq.datasets.people import read_person_labels
from vidseq.features.actor_pose import pose_geometry
from vidseq.features.actor_streams import stored_tracks, streams_of_stored_tracks
from vidseq.features.actor_tracking import MAX_DECODE_SIDE, track_video
from vidseq.features.actors import (
    TRAJECTORY_NAMES,
    PersonTracker,
    assign_labels,
    track_summary,
    trajectory,
)
from vidseq.features.identity import WHOLE_FRAME, entry_key, resolved, video_id
from vidseq.features.keys import FEATURE_KEY_VERSION, build_backbone, resolve_device
from vidseq.features.motion import FlowPooler
from vidseq.features.pose import PoseEstimator, pose_key
from vidseq.features.store import FeatureStore, VideoFeatures, write_entry
from vidseq.outputs import check_writable
from vidseq.progress import progress_bar

TRACKED = "tracked"  # the status of a video's own record once its tracks are written
EMPTY = "empty"  # ... and of a video in which nobody was tracked (not retried: the same frames, the same answer)
WAIT_POLL_SECONDS = 0.5


def actors_key(config: ActorsConfig) -> dict[str, Any]:
    """What changes the tracks: every actors setting but ``enabled``, ``batch`` and ``main``, plus the
    detector file's name and size (a different checkpoint gives other tracks), and the content of a
    per-person labels file (its labels are written into the track records)."""
    settings = config.model_dump(mode="json", exclude={"enabled", "batch", "main", "labels"})
    path = Path(config.weights).expanduser()
    settings["weights_size"] = path.stat().st_size if path.is_file() else None
    settings["weights"] = path.name
    if config.labels:  # per-person labels are in the records: other labels, another store
        labels = Path(config.labels)
        settings["labels"] = hashlib.sha256(labels.read_bytes()).hexdigest()[:16] if labels.is_file() else None
    return {"actors": settings, "max_side": MAX_DECODE_SIDE, "extract_version": FEATURE_KEY_VERSION}


@dataclass
class ActorsResult:
    """What a per-person run did: videos tracked, reused and failed, tracks written, the stores
    (``stores``: stream -> store; appearance and trajectory, motion and pose when asked for).
    ``posed`` / ``motion_added``: videos done before whose pose / crop motion alone was computed now."""

    stores: dict[str, FeatureStore]
    tracked: int = 0
    reused: int = 0
    posed: int = 0
    motion_added: int = 0
    tracks: int = 0
    empty: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # per-person labels that matched no track (file:line)
    frames: int = 0
    seconds: float = 0.0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def store(self) -> FeatureStore:
        return self.stores["appearance"]

    @property
    def trajectory(self) -> FeatureStore:
        return self.stores["trajectory"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.tracked} videos tracked ({self.tracks} person tracks), {len(self.empty)} without a person, "
            f"{self.reused} already done, {len(self.failed)} failed "
            f"({self.frames} grid frames in {self.seconds:.1f} s, {rate:.1f} frames/s) -> {self.store.directory}"
        ]
        if self.posed:
            lines.append(f"pose added to {self.posed} videos tracked before (their tracked frames decoded again)")
        if self.motion_added:
            lines.append(
                f"motion added to {self.motion_added} videos tracked before "
                "(their tracked frames and partners decoded again)"
            )
        lines += [f"{name} stream -> {store.directory}" for name, store in self.stores.items() if name != "appearance"]
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} per-person labels matched no track (e.g. {self.unmatched[0]})")
        return "\n".join(lines)


def open_actor_stores(
    out: str | Path,
    spec_key: dict[str, Any],
    actors: ActorsConfig,
    recipe: dict[str, Any],
    name: str,
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
) -> dict[str, FeatureStore]:
    """The stores of a per-person run under ``out``, linked: ``appearance`` (the crops'
    features), ``trajectory``, ``motion`` (flow inside the crops) when ``motion`` is given and
    ``pose`` (the pose in each tracked frame; not keyed by the backbone) when ``pose`` is."""
    key = actors_key(actors)
    recipe = {**recipe, "actors": actors.model_dump(mode="json")}
    stores = {
        "appearance": FeatureStore.open(out, {**key, "backbone": spec_key}, name=f"actors-{name}", recipe=recipe),
        "trajectory": FeatureStore.open(out, key, name="actors-trajectory", recipe=recipe, stream="trajectory"),
    }
    if motion is not None:
        flow_key = {**key, "motion": motion.model_dump(mode="json", exclude={"enabled"}), "crop": spec_key}
        flow_key["box_decimals"] = 1  # crops cut from boxes rounded as stored (before: unrounded, other vectors)
        recipe = {**recipe, "motion": motion.model_dump(mode="json")}
        stores["motion"] = FeatureStore.open(
            out, flow_key, name=f"actors-motion-{motion.method}", recipe=recipe, stream="motion"
        )
    if pose is not None:
        body_key = {**key, **pose_key(pose, pose_geometry())}
        body_recipe = {name: section for name, section in recipe.items() if name != "motion"}
        body_recipe["pose"] = pose.model_dump(mode="json")
        stores["pose"] = FeatureStore.open(out, body_key, name="actors-pose", recipe=body_recipe, stream="pose")
    for store in stores.values():
        store.link_streams(stores.values())
    return stores


def extract_actors(
    items: list[VideoItem] | Dataset,
    *,
    out: str | Path,
    actors: ActorsConfig,
    backbone: BackboneConfig | Backbone | None = None,
    config: ExtractConfig | None = None,
    io: IOConfig | None = None,
    motion: MotionConfig | None = None,
    pose: PoseConfig | None = None,
    force: bool = False,
    progress: bool = True,
    tracker: PersonTracker | None = None,
    on_video_done: Callable[[dict[str, Any]], None] | None = None,
) -> ActorsResult:
    """Track the people of every video and store a sequence per track (crops and trajectory; with
    ``motion``, the pooled flow inside each crop too; with ``pose``, each person's pose).

    ``tracker``: a ready ``PersonTracker`` (default: built from ``actors``). Finished videos are
    skipped unless ``force``; a video that fails is a failed row, one without a person an empty row.
    A video finished without pose or motion gets them alone (``ActorsResult.posed``,
    ``motion_added``). Without the pose extra, ``pose`` is a ConfigError before anything is
    opened or built.
    """
    if pose is not None:  # static: each crop on its own (MediaPipe's tracking would follow the crop, not a video)
        pose = pose.model_copy(update={"mode": "static"})
    estimator = PoseEstimator(pose) if pose is not None else None  # the extra missing: one line, before any work
    options = dict(backbone=backbone, config=config, io=io, motion=motion, pose=pose, force=force, progress=progress)
    try:
        return _extract_actors(items, out, actors, estimator, tracker, on_video_done, **options)
    finally:
        if estimator is not None:
            estimator.close()


def _extract_actors(
    items: list[VideoItem] | Dataset,
    out: str | Path,
    actors: ActorsConfig,
    estimator: PoseEstimator | None,
    tracker: PersonTracker | None,
    on_video_done: Callable[[dict[str, Any]], None] | None,
    *,
    backbone: BackboneConfig | Backbone | None,
    config: ExtractConfig | None,
    io: IOConfig | None,
    motion: MotionConfig | None,
    pose: PoseConfig | None,
    force: bool,
    progress: bool,
) -> ActorsResult:
    check_writable(out, what="extract.out (feature stores)")
    config = config or ExtractConfig()
    io = io or IOConfig()
    device = resolve_device(config.device)
    backbone_cfg = backbone if isinstance(backbone, BackboneConfig) else None
    model = backbone if isinstance(backbone, Backbone) else build_backbone(backbone_cfg or BackboneConfig(), device)
    encoder = FrameEncoder(
        model,
        precision=config.precision,
        channels_last=config.channels_last,
        device=device,
        batch=config.batch_size,
        runtime=getattr(config, "runtime", "torch"),
    )
    recipe = {}
    if not isinstance(backbone, Backbone):
        recipe = {
            "backbone": (backbone_cfg or BackboneConfig()).model_dump(mode="json"),
            "io": io.model_dump(mode="json"),
            "extract": config.model_dump(mode="json", include={"precision", "channels_last"}),
        }
    stores = open_actor_stores(out, model.spec.key(), actors, recipe, model.spec.name, motion, pose)
    store = stores["appearance"]
    extras = [name for name in ("motion", "pose") if name in stores]  # added alone to videos tracked without them
    done_in = [store] + [stores[name] for name in extras]  # where a video must be settled to be skipped
    dataset = items if isinstance(items, Dataset) else None
    if dataset is not None and dataset.labels:
        store.add_labels(dataset.labels)
    result = ActorsResult(stores)
    people = read_person_labels(actors.labels) if actors.labels else None
    if people is not None:
        store.add_labels(sorted({p.label for rows in people.values() for p in rows}))
    tracker = tracker or PersonTracker(actors, device=str(device))
    flow = FlowPooler(motion) if motion is not None else None
    added = {"pose": estimator, "motion": flow, "size": encoder.spec.input_size}  # what _add_streams computes with
    todo, waiting, seen = [], [], set()
    for item in items:
        vid = video_id(item.path) if Path(item.path).is_file() else ""
        row = _video_row(item, vid)
        if row["key"] in seen:
            continue
        seen.add(row["key"])
        if not vid:
            _put(stores, {**row, "status": "failed", "error": f"cannot read {item.path}"}, result.failed)
        elif not force and all(_settled(each, row["key"]) for each in done_in):
            result.reused += 1
        elif store.claims.acquire(row["key"]):
            todo.append((item, row))
        else:
            waiting.append((item, row))
    start = time.perf_counter()
    try:
        with progress_bar(len(todo) + len(waiting), desc="actors", unit="video", enabled=progress) as bar:
            while todo or waiting:
                for item, row in todo:
                    if not force and _settled(store, row["key"]):
                        missing = [name for name in extras if not _settled(stores[name], row["key"])]
                        _add_streams(item, row, stores, missing, added, actors, io.backend, result)
                    else:
                        _one_video(
                            item, row, stores, tracker, encoder, actors, io.backend, result, people, flow, estimator
                        )
                    store.claims.heartbeat()
                    store.claims.release(row["key"])
                    bar.update(1)
                    if on_video_done is not None:
                        on_video_done(row)
                todo, waiting = _take_over(done_in, waiting, result, bar)
    finally:
        store.claims.release_all()
        for each in stores.values():
            each.write_manifest_view()
    result.seconds = time.perf_counter() - start
    return result


def _settled(store: FeatureStore, key: str) -> bool:
    """The video's own record says it is done (tracked, or nobody in it)."""
    return (store.get_record(key) or {}).get("status") in (TRACKED, EMPTY)


def _take_over(done_in: list[FeatureStore], waiting: list, result: ActorsResult, bar) -> tuple[list, list]:
    """Of the videos another writer held: those it finished (in every store of ``done_in``) count
    as reused, those whose claim went free or stale are claimed here; the rest wait a moment more."""
    if not waiting:
        return [], []
    time.sleep(WAIT_POLL_SECONDS)
    store = done_in[0]
    todo, still = [], []
    for item, row in waiting:
        if all(_settled(each, row["key"]) for each in done_in):
            result.reused += 1
            bar.update(1)
        elif store.claims.is_free(row["key"]) and store.claims.acquire(row["key"]):
            todo.append((item, row))
        else:
            still.append((item, row))
    return todo, still


def _video_row(item: VideoItem, vid: str) -> dict[str, Any]:
    return {
        "key": entry_key(vid, WHOLE_FRAME) if vid else f"unreadable:{resolved(item.path)}",
        "path": str(item.path),
        "resolved": resolved(item.path),
        "label": item.label,
        "split": item.split,
        "group": item.group,
        "video": vid,
        "subject": WHOLE_FRAME,
        "status": "pending",
        "error": "",
        "frames": 0,
        "file": "",
    }


def _put(stores: dict[str, FeatureStore], row: dict[str, Any], into: list | None = None) -> None:
    """The video's own record in every stream's store (the appearance store last: it says done)."""
    for name in reversed(list(stores)):
        stores[name].put_record(row)
    if into is not None:
        into.append(row)


def _one_video(
    item: VideoItem,
    row: dict[str, Any],
    stores: dict[str, FeatureStore],
    tracker: PersonTracker,
    encoder: FrameEncoder,
    actors: ActorsConfig,
    backend: str,
    result: ActorsResult,
    people: dict[str, list] | None = None,
    flow: FlowPooler | None = None,
    estimator: PoseEstimator | None = None,
) -> None:
    """Track one video and write an entry per track in every stream's store, then the video's record.

    ``people`` (per-person labels by resolved path): each matching track gets its own label,
    split and group; the others none (stored, not trained on). None: every track carries the
    clip's label (training then reads the main actor).
    """
    try:
        tracked = track_video(item.path, tracker, encoder, actors, backend, flow=flow, pose=estimator)
    except Exception as exc:  # noqa: BLE001 - one video's failure is its row, the run goes on
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        _put(stores, {**row, "status": "failed", "error": reason}, result.failed)
        return
    info = tracked.geometry
    result.frames += len(tracked.grid)
    if not tracked.tracks:
        where = f"{len(tracked.grid)} frames tracked at {min(actors.fps, info.fps or actors.fps):g} fps"
        error = f"no person tracked ({where}; actors.conf {actors.conf}, classes {actors.classes})"
        _put(stores, {**row, "status": EMPTY, "error": error}, result.empty)
        return
    fps = info.fps or 0.0
    labels = people.get(os.path.realpath(item.path), []) if people else []
    named, unmatched = assign_labels(tracked.tracks, labels, fps=fps) if people else ({}, [])
    result.unmatched.extend(p.where for p in unmatched)
    for track in tracked.tracks:
        person = named.get(track.track_id)
        timestamps = track.frames / fps if fps > 0 else np.arange(len(track), dtype=np.float64)
        label = item.label if people is None else (person.label if person is not None else "")
        meta = {"path": str(item.path), "label": label, "fps": fps, "vidseq": __version__, "video": row["video"]}
        meta.update(subject=track.subject, track=track_summary(track, width=info.width, height=info.height, fps=fps))
        meta["labels"] = "clip" if people is None else "person"
        values = {
            "appearance": (np.concatenate(tracked.crops[track.track_id]), {}),
            "trajectory": (
                trajectory(track.boxes, timestamps, width=info.width, height=info.height),
                {"dims": list(TRAJECTORY_NAMES), "boxes": track.boxes.round(1).tolist()},
            ),
        }
        if tracked.motion is not None:
            values["motion"] = (np.concatenate(tracked.motion[track.track_id]), {})
        if tracked.pose is not None:
            values["pose"] = (np.concatenate(tracked.pose[track.track_id]), {"geometry": pose_geometry()})
        track_row = {**row, "key": entry_key(row["video"], track.subject), "subject": track.subject, "label": label}
        if person is not None:
            track_row.update(split=person.split or row["split"], group=person.group or row["group"])
        for name, (features, extra) in values.items():
            target = stores[name]
            entry = target.entry_path(item.path, track.subject, vid=row["video"])
            write_entry(entry, VideoFeatures(features, track.frames, timestamps, {**meta, **extra}))
            target.put_record(
                {**track_row, "status": "done", "frames": len(track), "file": str(entry.relative_to(target.directory))}
            )
    _put(stores, {**row, "status": TRACKED, "frames": len(tracked.tracks), "error": ""})  # last: done once all are in
    result.tracked += 1
    result.tracks += len(tracked.tracks)


def _add_streams(
    item: VideoItem,
    row: dict[str, Any],
    stores: dict[str, FeatureStore],
    missing: list[str],
    added: dict[str, Any],
    actors: ActorsConfig,
    backend: str,
    result: ActorsResult,
) -> None:
    """The ``missing`` streams (pose, motion) of a video tracked before without them: its tracks'
    frames and boxes from the trajectory store, those frames (and motion's partners) decoded again
    in one pass, an entry per track in each missing store, then the video's own record there (as
    the appearance store has it). ``added``: the pose estimator, the flow pooler, the crop size."""
    if not missing:  # finished by another writer meanwhile
        result.reused += 1
        return
    try:
        tracks = stored_tracks(stores["trajectory"], row["video"])
        found = [track for track, _, _ in tracks]
        vectors = streams_of_stored_tracks(
            item.path, found, backend=backend, max_side=MAX_DECODE_SIDE, batch=actors.batch,
            pose=added["pose"] if "pose" in missing else None, flow=added["motion"] if "motion" in missing else None,
            margin=actors.margin, size=added["size"],
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one video's failure is its row in the stores being added
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        for name in missing:
            failed = {**row, "status": "failed", "error": f"{name}: {reason}"}
            stores[name].put_record(failed)
            result.failed.append(failed)
        return
    done = stores["appearance"].get_record(row["key"]) or {}
    for name in missing:
        target = stores[name]
        for track, stored, record in tracks:
            meta = {k: v for k, v in stored.meta.items() if k not in ("dims", "boxes")}
            if name == "pose":
                meta["geometry"] = pose_geometry()
            entry = target.entry_path(item.path, track.subject, vid=row["video"])
            write_entry(entry, VideoFeatures(vectors[name][track.track_id], track.frames, stored.timestamps, meta))
            key = entry_key(row["video"], track.subject)
            target.put_record({**record, "key": key, "file": str(entry.relative_to(target.directory))})
        target.put_record({**row, **{k: v for k, v in done.items() if k in row}})  # last: done once all are in
    result.posed += "pose" in missing
    result.motion_added += "motion" in missing
