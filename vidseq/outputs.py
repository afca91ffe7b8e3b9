"""Output locations: checked before a command's work starts, and named when a write fails later.

Place in the data flow: beside ``errors`` at the bottom (imports nothing else of vidseq). Every
command that writes (synth, extract, train, predict --out, run) calls ``check_writable`` on its
output folder first, so an unwritable, read-only or misspelt location is one clear error before
any decoding or training, not a traceback after it. A write that fails mid-run (a full disk, a
quota, permissions changed under it) reaches the CLI as an ``OSError``; ``os_error_line`` turns
the operational ones into one line that says what was kept and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from vidseq.errors import VidseqError

NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


class OutputError(VidseqError):
    """An output location cannot be written (permissions, a read-only file system, a file in the way)."""


def check_writable(folder: str | Path, *, what: str) -> Path:
    """Create ``folder`` if needed and prove it writable (a temporary file made and removed);
    OutputError naming it, ``what`` it is for, the reason and the fix otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-writable-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        if isinstance(exc, FileExistsError):  # mkdir met a file where a folder must be
            reason = f"{exc.filename} is a file, not a folder"
        raise OutputError(
            f"cannot write to {folder} ({what}): {reason}; choose another location or make this one writable"
        ) from None
    return folder


def os_error_line(exc: OSError) -> str | None:
    """One line for an operational write failure (no space, quota, permissions, read-only), with
    what was kept and what to do; None for any other OSError (a bug keeps its traceback)."""
    path = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in NO_SPACE:
        return (
            f"{path}{NO_SPACE[exc.errno]}; the work finished before it is kept (stored features, "
            "checkpoints, rows written): free some space and run the same command again to continue "
            "(train: with --resume)"
        )
    if exc.errno in NOT_WRITABLE:
        return (
            f"{path}cannot write ({exc.strerror}); the work finished before it is kept: make the "
            "location writable or choose another, and run the command again"
        )
    return None
