"""The per-video feature store: one file per video, a manifest per run, keyed by config.

Sits after the backbones in the data flow (videos -> frames -> **features** -> sequences).
A store is a folder named by a digest of everything that changes the features (backbone spec,
weights, preprocessing, sampling, decode size), so two configs never mix. Inside it:

    store.json              the key the folder was made for (checked on every open), the
                            recipe, the store's stream (appearance or motion) and the
                            folders of the other streams extracted in the same runs
    manifest.csv            one row per video: path, label, split, status, error, frames, file,
                            group (the video's source; manifests written before it read as "")
    labels.json             the label map (index -> name) of the datasets extracted here
    features/<stem>-<id>.npz   features (T, D) float32, frame_indices (T,), timestamps (T,)

A video's id is a digest of its content (size plus its first and last MiB), not its file stem,
so two videos that share a name never overwrite each other. Every write is atomic (temporary
file, then ``os.replace``): an entry exists completely or not at all, and it counts as done only
if it loads.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vidseq.errors import VidseqError

MANIFEST_FIELDS = ("path", "label", "split", "status", "error", "frames", "file", "group")
_FINGERPRINT_BYTES = 1 << 20


class FeatureStoreError(VidseqError):
    """The store folder is unusable (another config's key, an unreadable entry)."""


@dataclass(frozen=True)
class VideoFeatures:
    """What the store holds for one video."""

    features: np.ndarray  # (T, D) float32
    frame_indices: np.ndarray  # (T,) int64, indices into the source video
    timestamps: np.ndarray  # (T,) float64 seconds
    meta: dict = field(default_factory=dict)


def key_digest(key: dict[str, Any]) -> str:
    """A short stable digest of a JSON-able key (sorted keys, so order never matters)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def video_id(path: str | Path) -> str:
    """A content digest of a video: its size and its first and last MiB (cheap, path-free)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if size > 2 * _FINGERPRINT_BYTES:
            fh.seek(size - _FINGERPRINT_BYTES)
            digest.update(fh.read())
    return digest.hexdigest()[:16]


class FeatureStore:
    """A folder of per-video feature files for one extraction key."""

    def __init__(self, directory: Path, key: dict[str, Any], recipe: dict[str, Any] | None = None, *,
                 stream: str = "appearance", links: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.key = key
        self.recipe = recipe or {}
        self.stream = stream  # what its vectors are: "appearance" (a backbone) or "motion" (flow)
        self.links = dict(links or {})  # stream -> folder name (a sibling) of the same videos
        self.features_dir = self.directory / "features"

    @classmethod
    def open(
        cls, root: str | Path, key: dict[str, Any], *, name: str = "features", recipe: dict[str, Any] | None = None,
        stream: str = "appearance",
    ) -> "FeatureStore":
        """Open (or create) the store for ``key`` under ``root``; its folder is ``<name>-<digest>``.

        ``recipe`` is the config that rebuilds the extraction (backbone, sampling and io
        sections): not part of the key, recorded so a trained model can extract new videos the
        same way (``vidseq.predict``). A store made before recipes were recorded gets one.
        ``stream`` names what the vectors are (appearance: a backbone's; motion: optical flow).
        """
        directory = Path(root) / f"{_slug(name)}-{key_digest(key)}"
        store = cls(directory, key, recipe, stream=stream)
        store.features_dir.mkdir(parents=True, exist_ok=True)
        key_file = directory / "store.json"
        recorded = json.loads(key_file.read_text()) if key_file.exists() else None
        if recorded is not None:
            if _plain(recorded.get("key")) != _plain(key):
                raise FeatureStoreError(f"{directory}: made for another config (store.json differs)")
            store.recipe = recorded.get("recipe") or store.recipe
            store.links = recorded.get("streams") or {}
        if recorded is None or (recipe and not recorded.get("recipe")):
            store._write_record()
        return store

    def _write_record(self) -> None:
        record = {"key": self.key, "recipe": self.recipe, "stream": self.stream, "streams": self.links}
        atomic_write_text(self.directory / "store.json", json.dumps(record, indent=2, sort_keys=True, default=str))

    def link_streams(self, stores: Iterable["FeatureStore"]) -> None:
        """Record the stores of the other streams extracted with this one (siblings under one root)."""
        links = {**self.links, **{s.stream: s.directory.name for s in stores if s.directory != self.directory}}
        if links != self.links:
            self.links = links
            self._write_record()

    def stream_store(self, stream: str) -> "FeatureStore":
        """The store of ``stream`` for the same videos: this one, or a linked sibling."""
        if stream == self.stream:
            return self
        name = self.links.get(stream)
        if not name or not (self.directory.parent / name / "store.json").is_file():
            hint = " (vidseq extract --motion, or -o motion.enabled=true)" if stream == "motion" else ""
            raise FeatureStoreError(
                f"{self.directory}: no {stream} stream was extracted with this store; extract it{hint}"
            )
        return FeatureStore.load_existing(self.directory.parent / name)

    @classmethod
    def load_existing(cls, directory: str | Path) -> "FeatureStore":
        """Open a store folder that an extraction wrote (reads its key from store.json)."""
        directory = Path(directory)
        key_file = directory / "store.json"
        if not key_file.is_file():
            raise FeatureStoreError(f"{directory}: not a feature store (no store.json); run `vidseq extract` first")
        recorded = json.loads(key_file.read_text())
        return cls(directory, recorded["key"], recorded.get("recipe"), stream=recorded.get("stream") or "appearance",
                   links=recorded.get("streams"))

    def entry_path(self, video: str | Path) -> Path:
        """Where the features of ``video`` live (named by stem for people, by content id for safety)."""
        video = Path(video)
        return self.features_dir / f"{_slug(video.stem)[:40]}-{video_id(video)}.npz"

    def is_done(self, video: str | Path) -> bool:
        """True when the video's entry exists and loads."""
        try:
            entry = self.entry_path(video)
        except OSError:
            return False
        if not entry.is_file():
            return False
        try:
            self.read(entry)
        except FeatureStoreError:
            return False
        return True

    def write(self, video: str | Path, item: VideoFeatures) -> Path:
        """Write one video's features atomically; returns the entry path."""
        entry = self.entry_path(video)
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

    def load(self, video: str | Path) -> VideoFeatures:
        """The stored features of a video (by its path)."""
        return self.read(self.entry_path(video))

    def adopt(self, video: str | Path, root: str | Path) -> bool:
        """Take ``video``'s finished entry from the store of the same key under another ``root``.

        Hard-linked where the file system allows (no copy, no extra space), else copied; only
        an entry that loads is taken. True when this store now has the video.
        """
        try:
            entry = self.entry_path(video)
        except OSError:
            return False
        other = Path(root) / self.directory.name / "features" / entry.name
        if other.resolve() == entry.resolve() or not other.is_file():
            return False
        try:
            self.read(other)
            tmp = entry.with_name(f".tmp-{os.getpid()}-{entry.name}")
            tmp.unlink(missing_ok=True)
            try:
                os.link(other, tmp)
            except OSError:
                shutil.copyfile(other, tmp)
            os.replace(tmp, entry)
        except (FeatureStoreError, OSError):
            return False
        return True

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by runs that were killed (their process is gone)."""
        removed = 0
        for tmp in self.features_dir.glob(".tmp-*"):
            pid = tmp.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    @property
    def labels(self) -> list[str]:
        """The label map (index -> name) of the datasets extracted here, in their own order."""
        path = self.directory / "labels.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def add_labels(self, labels: list[str]) -> None:
        """Extend the label map with new names (existing indices never move)."""
        known = self.labels
        merged = known + [name for name in labels if name not in known]
        if merged != known:
            atomic_write_text(self.directory / "labels.json", json.dumps(merged, indent=1))

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.csv"

    def read_manifest(self) -> list[dict[str, str]]:
        """The manifest rows, or an empty list before the first run; a field the file lacks
        (an older manifest: no ``group``) reads as ""."""
        if not self.manifest_path.is_file():
            return []
        with self.manifest_path.open(newline="") as fh:
            return [{**dict.fromkeys(MANIFEST_FIELDS, ""), **row} for row in csv.DictReader(fh, restval="")]

    def write_manifest(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the manifest atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in MANIFEST_FIELDS})
        atomic_write_text(self.manifest_path, buffer.getvalue())


def write_entry(entry: Path, item: VideoFeatures) -> None:
    """Write an .npz atomically: to a temporary file beside it, then rename over."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".npz", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                features=np.asarray(item.features, dtype=np.float32),
                frame_indices=np.asarray(item.frame_indices, dtype=np.int64),
                timestamps=np.asarray(item.timestamps, dtype=np.float64),
                meta=np.array(json.dumps(item.meta, default=str)),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists, paths -> strings), for comparisons."""
    return json.loads(json.dumps(obj, default=str))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "video"
