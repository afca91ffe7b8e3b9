"""The feature store: one entry per (video, subject, stream), each with its own record, keyed by content.

Sits after the backbones in the data flow (videos -> frames -> **features** -> sequences).
A store holds one stream (appearance: a backbone's vectors; motion: pooled flow) and is a folder
named by a digest of everything that changes its vectors, so two configs never mix. Inside it:

    store.json              the key (checked on every open), the recipe, the stream, the linked
                            stores of the other streams, and the layout ``format`` (2)
    features/<stem>-<video>[~<subject>].npz   features (T, D) float32, frame_indices (T,),
                            timestamps (T,), meta
    records/<entry key>.json  one per entry, written atomically right after it (or alone for a
                            failure): path as given, resolved path, video, subject, label, split,
                            group, status, error, frames, file
    claims/<entry key>.claim  who is extracting that entry right now (``claims.Claims``)
    manifest.csv            a view of the records for people and spreadsheets, rebuilt at the end
                            of each run; vidseq itself reads the records, never this file
    labels.json             the label map (index -> name) of the datasets extracted here

Identity is content: a video is known by its ``video_id`` (its size and first and last MiB),
so one file reached by a relative path, an absolute path, a symlink or a hard link is one video
with one record (and one split), and two videos that share a name never overwrite each other.
An entry is one ``subject`` of a video: ``"frame"`` (the whole frame) today; a tracked person
("person-3") adds a subject, not a store. Any number of processes may write one store at once:
each entry and record is its own file written atomically (``vidseq.atomic``), nothing is ever
rewritten whole by whoever ends last, and claims keep two writers off the same entry.

Stores of format 1 (a manifest.csv rewritten by each run, no records) are converted on first
open: their rows become records, their entry files stay where they are.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import atomic
from vidseq.errors import VidseqError
from vidseq.features.claims import Claims, pid_alive
from vidseq.features.identity import (
    MANIFEST_FIELDS,
    WHOLE_FRAME,
    entry_key,
    identify_row,
    key_digest,
    legacy_rows,
    slug,
    video_id,
)

FORMAT = 2


class FeatureStoreError(VidseqError):
    """The store folder is unusable (another config's key, an unreadable entry)."""


@dataclass(frozen=True)
class VideoFeatures:
    """What the store holds for one entry."""

    features: np.ndarray  # (T, D) float32
    frame_indices: np.ndarray  # (T,) int64, indices into the source video
    timestamps: np.ndarray  # (T,) float64 seconds
    meta: dict = field(default_factory=dict)


class FeatureStore:
    """A folder of entries and their records for one extraction key."""

    def __init__(
        self,
        directory: Path,
        key: dict[str, Any],
        recipe: dict[str, Any] | None = None,
        *,
        stream: str = "appearance",
        links: dict[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.key = key
        self.recipe = recipe or {}
        self.stream = stream  # what its vectors are: "appearance" (a backbone) or "motion" (flow)
        self.links = dict(links or {})  # stream -> folder name (a sibling) of the same videos
        self.features_dir = self.directory / "features"
        self.records_dir = self.directory / "records"
        self.claims = Claims(self.directory / "claims")
        self._legacy: list[dict[str, str]] | None = None  # a format-1 store that could not be converted

    @classmethod
    def open(
        cls,
        root: str | Path,
        key: dict[str, Any],
        *,
        name: str = "features",
        recipe: dict[str, Any] | None = None,
        stream: str = "appearance",
    ) -> FeatureStore:
        """Open (or create) the store for ``key`` under ``root``; its folder is ``<name>-<digest>``.

        ``recipe`` is the config that rebuilds the extraction (backbone, sampling and io
        sections): not part of the key, recorded so a trained model can extract new videos the
        same way (``vidseq.predict``). ``stream`` names what the vectors are.
        """
        directory = Path(root) / f"{slug(name)}-{key_digest(key)}"
        store = cls(directory, key, recipe, stream=stream)
        store.features_dir.mkdir(parents=True, exist_ok=True)
        recorded = store._read_record_file()
        if recorded is not None:
            if _plain(recorded.get("key")) != _plain(key):
                raise FeatureStoreError(f"{directory}: made for another config (store.json differs)")
            store.recipe = recorded.get("recipe") or store.recipe
            store.links = recorded.get("streams") or {}
            store._convert(recorded)
        if recorded is None or (recipe and not recorded.get("recipe")):
            store.records_dir.mkdir(exist_ok=True)
            store._write_record()
        return store

    @classmethod
    def load_existing(cls, directory: str | Path) -> FeatureStore:
        """Open a store folder that an extraction wrote (reads its key from store.json)."""
        directory = Path(directory)
        if not (directory / "store.json").is_file():
            raise FeatureStoreError(f"{directory}: not a feature store (no store.json); run `vidseq extract` first")
        recorded = cls(directory, {})._read_record_file() or {}
        store = cls(
            directory,
            recorded.get("key") or {},
            recorded.get("recipe"),
            stream=recorded.get("stream") or "appearance",
            links=recorded.get("streams"),
        )
        store._convert(recorded)
        return store

    def _read_record_file(self) -> dict[str, Any] | None:
        path = self.directory / "store.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FeatureStoreError(f"{path}: unreadable store record ({exc})") from None

    def _write_record(self) -> None:
        record = {
            "key": self.key,
            "recipe": self.recipe,
            "stream": self.stream,
            "streams": self.links,
            "format": FORMAT,
        }
        atomic.write_text(self.directory / "store.json", json.dumps(record, indent=2, sort_keys=True, default=str))

    def _convert(self, recorded: dict[str, Any]) -> None:
        """A format-1 store: its manifest rows become records (kept in memory if it is read-only)."""
        if recorded.get("format", 1) >= FORMAT:
            return
        rows = legacy_rows(self.directory / "manifest.csv")
        try:
            for row in rows:
                if not self.record_path(row["key"]).exists():
                    self.put_record(row)
            self._write_record()
        except OSError:
            self._legacy = rows

    # -- streams ---------------------------------------------------------------------------

    def link_streams(self, stores: Iterable[FeatureStore]) -> None:
        """Record the stores of the other streams extracted with this one (siblings under one root)."""
        links = {**self.links, **{s.stream: s.directory.name for s in stores if s.directory != self.directory}}
        if links != self.links:
            self.links = links
            self._write_record()

    def stream_store(self, stream: str) -> FeatureStore:
        """The store of ``stream`` for the same videos: this one, or a linked sibling."""
        if stream == self.stream:
            return self
        name = self.links.get(stream)
        if not name or not (self.directory.parent / name / "store.json").is_file():
            hint = f" (vidseq extract --{stream}, or -o {stream}.enabled=true)" if stream in ("motion", "pose") else ""
            raise FeatureStoreError(
                f"{self.directory}: no {stream} stream was extracted with this store; extract it{hint}"
            )
        return FeatureStore.load_existing(self.directory.parent / name)

    # -- entries ---------------------------------------------------------------------------

    def entry_path(self, video: str | Path, subject: str = WHOLE_FRAME, *, vid: str | None = None) -> Path:
        """Where an entry of ``video`` lives (named by stem for people, by content id for safety)."""
        video = Path(video)
        suffix = "" if subject == WHOLE_FRAME else f"~{slug(subject)}"
        return self.features_dir / f"{slug(video.stem)[:40]}-{vid or video_id(video)}{suffix}.npz"

    def find_entry(self, video: str | Path, vid: str, subject: str = WHOLE_FRAME) -> tuple[Path, VideoFeatures] | None:
        """The entry of content ``vid`` that loads, and what it holds, whatever path spelling wrote
        it: the one its record names, the one ``video``'s name gives, or any ``*-<vid>`` file (a
        writer killed before its record); None when there is none."""
        suffix = "" if subject == WHOLE_FRAME else f"~{slug(subject)}"
        record = self.get_record(entry_key(vid, subject)) or {}
        named = [self.directory / record["file"]] if record.get("file") else []
        named.append(self.entry_path(video, subject, vid=vid))
        for entry in [*named, *sorted(self.features_dir.glob(f"*-{vid}{suffix}.npz"))]:
            if (item := self.try_read(entry)) is not None:
                return entry, item
        return None

    def is_done(self, video: str | Path, subject: str = WHOLE_FRAME) -> bool:
        """True when the entry of ``video`` exists and loads."""
        try:
            entry = self.entry_path(video, subject)
        except OSError:
            return False
        return self.try_read(entry) is not None

    def try_read(self, entry: Path) -> VideoFeatures | None:
        """What ``entry`` holds, or None when it is not there or does not load."""
        if not entry.is_file():
            return None
        try:
            return self.read(entry)
        except FeatureStoreError:
            return None

    def write(self, video: str | Path, item: VideoFeatures, subject: str = WHOLE_FRAME) -> Path:
        """Write one entry atomically; returns its path."""
        entry = self.entry_path(video, subject)
        write_entry(entry, item)
        return entry

    @staticmethod
    def read(entry: str | Path) -> VideoFeatures:
        """Load one entry; a damaged file is a FeatureStoreError naming it."""
        try:
            with np.load(entry, allow_pickle=False) as data:
                return VideoFeatures(
                    features=data["features"],
                    frame_indices=data["frame_indices"],
                    timestamps=data["timestamps"],
                    meta=json.loads(str(data["meta"])),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise FeatureStoreError(f"{entry}: unreadable feature file ({exc})") from None

    def load(self, video: str | Path, subject: str = WHOLE_FRAME) -> VideoFeatures:
        """The stored features of a video (by its path)."""
        return self.read(self.entry_path(video, subject))

    def adopt(
        self, video: str | Path, root: str | Path, subject: str = WHOLE_FRAME, *, vid: str | None = None
    ) -> tuple[Path, VideoFeatures] | None:
        """Take ``video``'s finished entry from the store of the same key under another ``root``.

        Found by content (``find_entry``: any path spelling that wrote it there); hard-linked where
        the file system allows (no copy, no extra space), else copied; only an entry that loads is
        taken. Returns this store's entry and what it holds, or None."""
        try:
            vid = vid or video_id(video)
        except OSError:
            return None
        other_dir = Path(root) / self.directory.name
        if not other_dir.is_dir() or other_dir.resolve() == self.directory.resolve():
            return None
        found = FeatureStore(other_dir, self.key).find_entry(video, vid, subject)
        if found is None:
            return None
        other, item = found
        entry = self.entry_path(video, subject, vid=vid)
        tmp = entry.with_name(f".tmp-{os.getpid()}-{entry.name}")
        try:
            tmp.unlink(missing_ok=True)
            try:
                os.link(other, tmp)
            except OSError:
                shutil.copyfile(other, tmp)
            os.replace(tmp, entry)
        except OSError:
            tmp.unlink(missing_ok=True)
            return None
        return entry, item

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files and claims left by writers that were killed (their process is gone)."""
        removed = self.claims.remove_stale()
        for folder in (self.features_dir, self.records_dir, self.directory):
            for tmp in folder.glob(".tmp-*") if folder.is_dir() else ():
                pid = tmp.name.split("-")[1]
                if pid.isdigit() and not pid_alive(int(pid)):
                    tmp.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- labels ----------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """The label map (index -> name) of the datasets extracted here, in their own order."""
        path = self.directory / "labels.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def add_labels(self, labels: list[str]) -> None:
        """Extend the label map with new names (existing indices never move).

        Concurrent writers may each add names; a name lost to a race is re-added by the next
        writer that needs it, and ``load_sequences`` appends any label a record has that the map
        lacks, so a lost name never loses a video."""
        known = self.labels
        merged = known + [name for name in labels if name not in known]
        if merged != known:
            atomic.write_text(self.directory / "labels.json", json.dumps(merged, indent=1))

    # -- records and the manifest view ---------------------------------------------------------

    def record_path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def put_record(self, row: dict[str, Any]) -> None:
        """Write one entry's record (or a note about a path) atomically; ``row["key"]`` names it."""
        record = {name: _cell(row.get(name)) for name in MANIFEST_FIELDS}
        atomic.write_text(self.record_path(row["key"]), json.dumps(record, sort_keys=True))

    def get_record(self, key: str) -> dict[str, str] | None:
        """The record ``key``, or None when there is none (or it cannot be read)."""
        try:
            return json.loads(self.record_path(key).read_text())
        except (OSError, ValueError):
            return None

    def read_manifest(self) -> list[dict[str, str]]:
        """Every record, sorted by path: entries, failures, and notes about missing or skipped
        files; one per file and subject (the newest; a note whose file has since been read, or the
        record of a file's earlier content, is left out)."""
        if self._legacy is not None:
            return [{k: str(row.get(k, "")) for k in MANIFEST_FIELDS} for row in self._legacy]
        latest: dict[tuple[str, str], tuple[int, dict[str, str]]] = {}
        for path in sorted(self.records_dir.glob("*.json")) if self.records_dir.is_dir() else ():
            try:
                written = path.stat().st_mtime_ns
                row = {**dict.fromkeys(MANIFEST_FIELDS, ""), **json.loads(path.read_text())}
            except (OSError, ValueError) as exc:
                warnings.warn(f"{path}: unreadable record, left out ({exc})", stacklevel=2)
                continue
            # one row per file and subject: the newest record wins (a file whose content changed,
            # or a missing file that has since been extracted, leaves its older record behind)
            slot = (row["resolved"] or row["path"], row["subject"] or WHOLE_FRAME)
            if slot not in latest or (bool(row["video"]), written) > (bool(latest[slot][1]["video"]), latest[slot][0]):
                latest[slot] = (written, row)
        return sorted((row for _, row in latest.values()), key=lambda row: (row["path"], row["subject"]))

    def write_manifest(self, rows: Iterable[dict[str, Any]]) -> None:
        """Record ``rows`` (each identified by its ``video``, its entry ``file`` or its path's
        content) and rebuild the manifest view. For stores built by hand (tests, converters)."""
        for row in rows:
            self.put_record(identify_row({key: _cell(value) for key, value in row.items()}))
        self.write_manifest_view()

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.csv"

    def write_manifest_view(self) -> Path:
        """Rebuild manifest.csv from the records (atomically; any writer may, at any time)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.read_manifest())
        return atomic.write_text(self.manifest_path, buffer.getvalue(), fsync=False)


def write_entry(entry: Path, item: VideoFeatures) -> None:
    """Write an .npz atomically: to a temporary file beside it, then rename over."""
    atomic.write_with(
        entry,
        lambda fh: np.savez(
            fh,
            features=np.asarray(item.features, dtype=np.float32),
            frame_indices=np.asarray(item.frame_indices, dtype=np.int64),
            timestamps=np.asarray(item.timestamps, dtype=np.float64),
            meta=np.array(json.dumps(item.meta, default=str)),
        ),
    )


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists, paths -> strings), for comparisons."""
    return json.loads(json.dumps(obj, default=str))
