"""Claims: which writer of a shared feature store is extracting which entry right now.

Place in the data flow: inside ``features``, beside the store. Any number of extraction processes
(local or Ray drivers, on one host or several over a shared folder) may write one store; before
one extracts an entry it creates ``claims/<entry key>.claim`` with ``O_CREAT | O_EXCL`` (atomic
on a local disk and on NFSv3+), and removes it once the entry's record is written. Another
writer that finds a live claim leaves that video to its owner and waits for the record, so each
video is extracted once where possible. A claim is stale, and is taken over, when its owner
is gone: same host and the pid no longer runs, or (any host) the claim was not refreshed for
``STALE_SECONDS`` (owners refresh theirs every ``HEARTBEAT_SECONDS`` while they work).

Claims only save work: entries and records are written atomically and are the same bytes
whoever writes them, so a claim that is lost or broken costs a duplicate extraction, never data.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

STALE_SECONDS = 600.0
HEARTBEAT_SECONDS = 60.0


class Claims:
    """The claims folder of one store, and the claims this process holds in it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.held: set[str] = set()
        self._beat = time.monotonic()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.claim"

    def acquire(self, key: str) -> bool:
        """Claim ``key``: True when this process now holds it (a stale claim is broken first)."""
        if key in self.held:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self._owner(key) == (socket.gethostname(), os.getpid()):
                    self.held.add(key)  # this process's own claim, made through another store object
                    return True
                if not self.is_stale(key):
                    return False
                self.path(key).unlink(missing_ok=True)  # its owner is gone: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
            self.held.add(key)
            return True
        return False

    def release(self, key: str) -> None:
        """Drop this process's claim on ``key`` (after its record is written)."""
        if key in self.held:
            self.held.discard(key)
            self.path(key).unlink(missing_ok=True)

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)

    def is_free(self, key: str) -> bool:
        """No live claim on ``key`` (none, or a stale one)."""
        return not self.path(key).exists() or self.is_stale(key)

    def is_stale(self, key: str) -> bool:
        """The claim's owner is gone (same host, dead pid) or it was not refreshed for too long."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
            owner = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            owner = {}  # written but not yet filled in by its owner: only age can tell
            age = time.time() - path.stat().st_mtime if path.exists() else STALE_SECONDS
        if age >= STALE_SECONDS:
            return True
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return not pid_alive(owner["pid"])
        return False

    def _owner(self, key: str) -> tuple[str, int] | None:
        try:
            owner = json.loads(self.path(key).read_text() or "{}")
        except (OSError, ValueError):
            return None
        return owner.get("host"), owner.get("pid")

    def heartbeat(self, *, force: bool = False) -> None:
        """Refresh this process's claims (at most every ``HEARTBEAT_SECONDS`` unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._beat < HEARTBEAT_SECONDS:
            return
        self._beat = now
        for key in self.held:
            try:
                os.utime(self.path(key))
            except OSError:
                pass  # broken by another writer that thought we were gone: it redoes the entry

    def remove_stale(self) -> int:
        """Delete claims whose owners are gone; how many."""
        removed = 0
        for path in self.directory.glob("*.claim") if self.directory.is_dir() else ():
            key = path.name[: -len(".claim")]
            if key not in self.held and self.is_stale(key):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
