"""SIGTERM delivered like Ctrl-C, while work that knows how to stop cleanly is running.

Place in the data flow: the bottom layer (imports nothing of vidseq). Extraction
(``features.plan.extract_rounds``) and MLflow runs (``tracking._lifecycle``) both stop cleanly on
a ``KeyboardInterrupt``; inside ``sigterm_raises()`` (or between ``hold()`` and ``release()``)
SIGTERM raises ``Terminated``, a KeyboardInterrupt that carries the signal, in the main thread.
Holds nest (one handler for all of them); the handler is installed only where SIGTERM still has
its default action (a host program's own handler is left alone) and restored by the outermost
release. A second SIGTERM while the first is being handled is ignored (the clean-up finishes;
kill -9 still stops it); a forked child that inherited the handler dies as by default.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_depth = 0  # holds open in the main thread
_previous: Any = None
_owner_pid = os.getpid()
_stopping = False


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a hold: raised in the main thread, like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.signal_name = int(signum), signal.Signals(signum).name


def hold() -> None:
    """Start a hold: the outermost installs the handler (main thread, SIGTERM at its default)."""
    global _depth, _previous, _owner_pid, _stopping
    if threading.current_thread() is not threading.main_thread():
        return
    _depth += 1
    if _depth == 1 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        _owner_pid, _stopping = os.getpid(), False
        _previous = signal.signal(signal.SIGTERM, _on_sigterm)


def release() -> None:
    """End a hold: the outermost restores SIGTERM's previous handler."""
    global _depth, _previous
    if threading.current_thread() is not threading.main_thread():
        return
    _depth = max(0, _depth - 1)
    if _depth == 0 and _previous is not None:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _previous)
        _previous = None


def stopping() -> None:
    """Say that the process is cleaning up after an interrupt: later SIGTERMs are ignored."""
    global _stopping
    _stopping = True


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """A hold for the duration of the block."""
    hold()
    try:
        yield
    finally:
        release()


def _on_sigterm(signum: int, frame: Any) -> None:  # the signal-handler signature
    if os.getpid() != _owner_pid:  # a forked worker inherited this: die as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _stopping:  # the clean-up of the first one is running: let it finish
        return
    stopping()
    raise Terminated(signum)
