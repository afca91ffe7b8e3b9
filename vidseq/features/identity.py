"""What identifies a feature store's entry and its record: a video's content id, the entry key
(video and subject), the record of a path with no content (a note), the manifest's columns, and
reading the manifest of a store of the first layout.

Place in the data flow: the bottom of ``features`` (imports nothing else of vidseq); ``store``,
``plan`` and ``claims`` name entries with it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

WHOLE_FRAME = "frame"
MANIFEST_FIELDS = (
    "path",
    "label",
    "split",
    "status",
    "error",
    "frames",
    "file",
    "group",
    "video",
    "subject",
    "resolved",
)
FINGERPRINT_BYTES = 1 << 20
_ID_CACHE: dict[tuple, str] = {}


def key_digest(key: dict[str, Any]) -> str:
    """A short stable digest of a JSON-able key (sorted keys, so order never matters)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def video_id(path: str | Path) -> str:
    """A content digest of a video: its size and its first and last MiB (cheap, path-free).
    Cached per process by (inode, size, mtime): a file changed in place gets a new id."""
    path = Path(path)
    stat = path.stat()
    cache_key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if cache_key in _ID_CACHE:
        return _ID_CACHE[cache_key]
    size = stat.st_size
    digest = hashlib.sha1(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            fh.seek(size - FINGERPRINT_BYTES)
            digest.update(fh.read())
    _ID_CACHE[cache_key] = digest.hexdigest()[:16]
    return _ID_CACHE[cache_key]


def entry_key(video: str, subject: str = WHOLE_FRAME) -> str:
    """The name of an entry's record and claim: the video id, plus ``~subject`` for a part of it."""
    return video if subject == WHOLE_FRAME else f"{video}~{slug(subject)}"


def note_key(path: str | Path) -> str:
    """The record name of a path with no content to identify (missing, or not a video)."""
    return "path-" + hashlib.sha1(resolved(path).encode()).hexdigest()[:16]


def resolved(path: str | Path) -> str:
    """``path`` absolute, with symlinks resolved (the same for every spelling of one file)."""
    return str(Path(path).expanduser().resolve())


def identify_row(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row with its identity filled in: subject, content id (from the row, its entry
    ``file`` name ``<stem>-<id>.npz``, or the file's content; blank when unreadable), resolved path
    and record ``key``."""
    row["subject"] = row.get("subject") or WHOLE_FRAME
    stem = Path(row["file"]).stem if row.get("file") else ""
    row["video"] = row.get("video") or (stem[-16:] if len(stem) > 17 else _identify_or_blank(row["path"]))
    row["resolved"] = row.get("resolved") or (resolved(row["path"]) if Path(row["path"]).exists() else "")
    row["key"] = entry_key(row["video"], row["subject"]) if row["video"] else note_key(row["path"])
    return row


def legacy_rows(manifest: Path) -> list[dict[str, Any]]:
    """The rows of a first-layout store's ``manifest.csv`` (missing columns blank), identified."""
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as fh:
        rows = [{**dict.fromkeys(MANIFEST_FIELDS, ""), **row} for row in csv.DictReader(fh, restval="")]
    return [identify_row(row) for row in rows]


def _identify_or_blank(path: str) -> str:
    try:
        return video_id(path)
    except OSError:
        return ""


def slug(text: str) -> str:
    """``text`` with anything but letters, digits and ``-_.`` replaced by ``_`` (a file-name part)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "video"
