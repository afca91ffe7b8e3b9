"""The table of decoding backends, imported lazily, and opening a file with fallback.

Place in the data flow: between the public ``vidseq.io`` functions and the backend modules.
A backend module provides ``NAME``, ``PIP_HINT``, ``load()`` (imports its library) and
``open_decoder(index) -> Decoder``; nothing is imported until a backend is first used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vidseq.errors import BackendUnavailableError, VideoDecodeError
from vidseq.io._base import Decoder
from vidseq.io._scan import StreamIndex, check_file, scan

_MODULES = {
    "pyav": "vidseq.io._pyav",
    "opencv": "vidseq.io._opencv",
    "decord": "vidseq.io._decord",
    "torchcodec": "vidseq.io._torchcodec",
}
DEFAULT_BACKENDS: tuple[str, ...] = ("pyav", "opencv", "decord", "torchcodec")
"""The order 'auto' tries; chosen by measurement (see the ``vidseq.io`` docstring)."""

_loaded: dict[str, ModuleType | str] = {}  # name -> module, or why it cannot be imported


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name``, its library imported; raises BackendUnavailableError."""
    if name not in _MODULES:
        choices = ", ".join(["auto", *_MODULES])
        raise BackendUnavailableError(f"unknown video backend {name!r}; choose one of: {choices}")
    if name not in _loaded:
        _loaded[name] = _import(name)
    found = _loaded[name]
    if isinstance(found, str):
        raise BackendUnavailableError(
            f"video backend {name!r} is not available ({found}); install it with: {_hint(name)}"
        )
    return found


def available_backends() -> list[str]:
    """Backends whose library imports here, in the 'auto' order."""
    names = []
    for name in DEFAULT_BACKENDS:
        try:
            backend_module(name)
            names.append(name)
        except BackendUnavailableError:
            continue
    return names


def candidates(backend: str) -> list[str]:
    """The backends to try for ``backend``: the installed defaults for 'auto', else just it."""
    if backend == "auto":
        names = available_backends()
        if not names:
            raise BackendUnavailableError(f"no video backend is installed; try: {_hint('pyav')}")
        return names
    backend_module(backend)
    return [backend]


def open_first(path: str, names: list[str], failures: list[tuple[str, str]]) -> Decoder:
    """Open ``path`` with the first backend of ``names`` that can.

    The file is checked and its packets scanned once, for all backends. Each failure is added
    to ``failures``; if every backend fails, raises VideoDecodeError naming the file, every
    backend tried and why each failed.
    """
    check_file(path)
    index: StreamIndex | str | None = None
    for name in names:
        index = _scan_or_reason(path) if index is None else index
        if isinstance(index, str):
            failures.append((name, index))
            continue
        try:
            return backend_module(name).open_decoder(index)
        except VideoDecodeError as exc:
            failures.append((name, exc.reason))
    raise failure_error(path, failures)


def failure_error(path: str, failures: list[tuple[str, str]]) -> VideoDecodeError:
    """One error for every backend that failed, grouping backends that gave the same reason."""
    grouped: dict[str, list[str]] = {}
    for name, reason in failures:
        grouped.setdefault(reason, []).append(name)
    if len(grouped) == 1:
        reason, names = next(iter(grouped.items()))
        return VideoDecodeError(path, f"{reason} (backends tried: {', '.join(names)})")
    parts = [f"{', '.join(names)}: {reason}" for reason, names in grouped.items()]
    return VideoDecodeError(path, "no backend could decode it: " + "; ".join(parts))


def _import(name: str) -> ModuleType | str:
    module = importlib.import_module(_MODULES[name])
    try:
        module.load()
    except ImportError as exc:
        return str(exc) or type(exc).__name__  # a string: no traceback kept alive
    return module


def _scan_or_reason(path: str) -> StreamIndex | str:
    """The scan, or why it failed (a string, so no traceback holding decoders stays alive)."""
    try:
        return scan(path)
    except VideoDecodeError as exc:
        return exc.reason


def _hint(name: str) -> str:
    return importlib.import_module(_MODULES[name]).PIP_HINT
