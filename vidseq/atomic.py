"""Atomic file writes: a file appears whole or not at all, with the permissions the umask gives.

Place in the data flow: the bottom layer (imports nothing of vidseq); every module that writes a
file a reader may open at any moment (feature entries and records, manifests, checkpoints,
reports, bundles) writes it through here. The data goes to a temporary file in the same folder
(``.tmp-<pid>-...``: a killed writer's leftovers are recognisable), is flushed and fsynced, gets
mode ``0o666 & ~umask`` (``mkstemp`` alone gives 0600, which made a team's shared store unreadable
to the others), and is renamed over the target with ``os.replace`` (atomic on POSIX file systems,
NFS included). On any error the temporary file is removed and the error propagates (an
``OSError`` that names no file, as a full disk's does, is raised again naming the target).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_UMASK: int | None = None


def file_mode() -> int:
    """The mode a new file gets here: ``0o666`` less this process's umask (read once)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def write_with(
    path: str | Path, write: Callable[[IO[bytes]], None], *, fsync: bool = True, mode: int | None = None
) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it over ``path``.
    ``mode``: the new file's permissions (default ``file_mode()``; e.g. an older file's, to keep them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a full disk's write()/fsync() names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_with(path, lambda fh: fh.write(data), fsync=fsync, mode=mode)


def write_text(path: str | Path, text: str, *, fsync: bool = True, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync, mode=mode)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (a video encoder,
    ``torch.save``): renamed over ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a full disk's write() names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
