"""Progress of long loops (videos extracted or predicted, epochs trained), for a person or a log.

On a terminal: a tqdm bar. Where stderr is a file or a pipe (batch jobs, CI, nohup) a redrawn
bar is one endless line of carriage returns, so there: a plain line at most every ``interval``
seconds and one at the end, e.g. ``extract: 12/40 videos (30%) in 0:04, 3.1 videos/s, 1 failed``.
Both answer ``update``, ``set_postfix_str``, ``format_dict["elapsed"]``, ``close`` and ``with``.

Layer 0: imports nothing of vidseq; extraction, training, prediction and the CLI all use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

INTERVAL_S = 10.0


def progress_bar(
    total: int | None,
    *,
    desc: str,
    unit: str,
    enabled: bool = True,
    initial: int = 0,
    interval: float = INTERVAL_S,
    file: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`.

    ``enabled=False``: prints nothing. ``unit`` is singular (``"video"``); ``interval`` and
    ``clock`` pace the plain lines (tests pass a fake clock).
    """
    file = sys.stderr if file is None else file
    if enabled and _is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=file, dynamic_ncols=True)
    return LineProgress(
        total, desc=desc, unit=unit, enabled=enabled, initial=initial, interval=interval, file=file, clock=clock
    )


class LineProgress:
    """tqdm's counting API, printing whole lines: at most one per ``interval`` seconds, and one
    at ``close`` when anything was counted since the last."""

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        unit: str,
        enabled: bool = True,
        initial: int = 0,
        interval: float = INTERVAL_S,
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.n, self.desc, self.unit, self.postfix = total, initial, desc, unit, ""
        self.enabled, self.interval, self.clock = enabled, interval, clock
        self.file = sys.stderr if file is None else file
        self.initial, self.start = initial, clock()
        self._printed_at: float | None = None
        self._printed_n = initial
        self.closed = False

    @property
    def format_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "total": self.total,
            "elapsed": self.clock() - self.start,
            "unit": self.unit,
            "desc": self.desc,
            "postfix": self.postfix,
            "initial": self.initial,
        }

    def update(self, n: int = 1) -> bool:
        """Count ``n`` more; True when this printed a line."""
        self.n += n
        if self.clock() - (self.start if self._printed_at is None else self._printed_at) < self.interval:
            return False
        return self._print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n != self._printed_n:  # else the last line already says it
            self._print()

    def line(self) -> str:
        """The progress now, as one line."""
        elapsed = self.clock() - self.start
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        text = f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total is not None else "") + f" {units}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f" in {_clock_time(elapsed)}"
        done = self.n - self.initial
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.1f} {units}/s" if rate >= 1 else f", {1 / rate:.1f} s/{self.unit}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _print(self) -> bool:
        if not self.enabled:
            return False
        print(self.line(), file=self.file, flush=True)
        self._printed_at, self._printed_n = self.clock(), self.n
        return True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
