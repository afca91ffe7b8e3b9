"""How vidseq's MLflow runs end truthfully: the process that owns a run, SIGTERM and Ctrl-C.

Every run carries the tags ``vidseq.host``, ``vidseq.pid`` and (on Linux) ``vidseq.pid_start``,
the start time of the owning process, so a later process can tell whether the owner is gone (the
same host, and no process with that pid and start time) even after the pid was reused.

While a vidseq run is active in the main thread, SIGTERM raises ``vidseq.interrupts.Terminated`` (like
Ctrl-C: a KeyboardInterrupt, so code that stops cleanly on Ctrl-C does so on SIGTERM too), and the
runs unwind and end KILLED. An error that carries a ``signum`` (``vidseq.errors.Interrupted``:
work stopped cleanly by a signal) also ends them KILLED. A second SIGTERM while they end is
ignored; kill -9 cannot be handled: the next run closes what it left (``Tracker.close_stale_runs``).
``exit_on_interrupt`` wraps a CLI command: after SIGTERM or Ctrl-C it ends any run still active,
prints one line and exits 128 + the signal (143, 130). mlflow is imported only to end runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from vidseq import interrupts

HOST_TAG, PID_TAG, PID_START_TAG = "vidseq.host", "vidseq.pid", "vidseq.pid_start"
END_REASON_TAG = "vidseq.end_reason"


def interruption(error: BaseException) -> int | None:
    """The signal that stopped the work when ``error`` says so (Ctrl-C: SIGINT), else None."""
    if isinstance(error, KeyboardInterrupt):
        return int(getattr(error, "signum", signal.SIGINT))
    signum = getattr(error, "signum", None)  # vidseq.errors.Interrupted: stopped cleanly by a signal
    return int(signum) if isinstance(signum, int) else None


def signal_name(error: BaseException) -> str:
    """'SIGTERM', 'SIGINT (Ctrl-C)', ...: the signal that ``error`` reports (see ``interruption``)."""
    signum = interruption(error) or signal.SIGINT
    return "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name


# ------------------------------------------------------------------------- who owns a run


def owner_tags() -> dict[str, str]:
    """The tags naming this process as the owner of a run."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    if (start := _process_start(os.getpid())) is not None:
        tags[PID_START_TAG] = start
    return tags


def owner_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's owner tags is certainly gone: it ran on this host and
    no live process has its pid (and, where recorded, its start time). Unknown owners (no tags,
    another host) are never gone: their runs may still be running."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this process: its runs end with it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    state = _process_state(pid)
    if state is not None and state[0] in "ZX":  # a zombie: killed, not yet reaped
        return True
    recorded = tags.get(PID_START_TAG)
    return recorded is not None and state is not None and state[1] != recorded  # the pid was reused


def _process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) from /proc; None where there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc_pid_stat(5)


def _process_start(pid: int) -> str | None:
    state = _process_state(pid)
    return None if state is None else state[1]


# ------------------------------------------------------------------------- this process's runs


@dataclass
class _ActiveRun:
    run_id: str
    name: str
    uri: str


_LOCK = threading.Lock()
_ACTIVE: dict[str, _ActiveRun] = {}  # runs started and not yet ended by this process
_KILLED: list[_ActiveRun] = []  # runs this process ended KILLED
_OWNER_PID = os.getpid()


def run_started(run_id: str, name: str, uri: str) -> None:
    """Register an active run and hold SIGTERM as an interrupt while it runs (``vidseq.interrupts``)."""
    global _OWNER_PID
    with _LOCK:
        if os.getpid() != _OWNER_PID:  # a forked child: the parent's runs are not its own
            _OWNER_PID = os.getpid()
            _ACTIVE.clear()
            _KILLED.clear()
        _ACTIVE[run_id] = _ActiveRun(run_id, name, uri)
    interrupts.hold()


def run_ended(run_id: str, status: str, *, ended: bool) -> None:
    """Forget a run once it ended (kept when ending failed: ``end_active_runs`` tries again) and
    release its hold on SIGTERM."""
    with _LOCK:
        record = _ACTIVE.pop(run_id, None) if ended else _ACTIVE.get(run_id)
        if record is not None and ended and status == "KILLED":
            _KILLED.append(record)
    interrupts.release()


def end_active_runs(status: str = "KILLED", *, reason: str | None = None) -> list[_ActiveRun]:
    """End every run this process still holds (innermost first) as ``status``; returns them."""
    if os.getpid() != _OWNER_PID:
        return []
    with _LOCK:
        pending = list(reversed(_ACTIVE.values()))
    ended = []
    for record in pending:
        with contextlib.suppress(Exception):
            _terminate(record, status, reason)
            with _LOCK:
                _ACTIVE.pop(record.run_id, None)
                if status == "KILLED":
                    _KILLED.append(record)
            ended.append(record)
    return ended


def _terminate(record: _ActiveRun, status: str, reason: str | None) -> None:
    import mlflow

    client = mlflow.MlflowClient(record.uri)
    if reason:
        with contextlib.suppress(Exception):
            client.set_tag(record.run_id, END_REASON_TAG, reason)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == record.run_id:
        with _quiet_end():
            mlflow.end_run(status)
    else:
        client.set_terminated(record.run_id, status)


@contextlib.contextmanager
def _quiet_end() -> Iterator[None]:
    before = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
        else:
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = before


# ------------------------------------------------------------------------- the CLI's exit


def exit_on_interrupt(func: Callable) -> Callable:
    """Wrap a CLI command: on SIGTERM (while a run is active) or Ctrl-C, end the runs still
    active KILLED, print one line to stderr and exit 143 (SIGTERM) or 130 (SIGINT)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            before = len(_KILLED)
        try:
            return func(*args, **kwargs)
        except BaseException as error:
            if (signum := interruption(error)) is None:
                raise
            interrupts.stopping()  # a repeated signal must not stop the runs from ending
            end_active_runs("KILLED", reason=f"stopped by {signal_name(error)}")
            if not isinstance(error, KeyboardInterrupt):
                raise  # an error of its own (vidseq.errors.Interrupted): the CLI prints it and exits
            with _LOCK:
                killed = _KILLED[before:]
            print(interrupted_line(error, killed), file=sys.stderr, flush=True)
            raise SystemExit(128 + signum) from None

    return wrapper


def interrupted_line(error: BaseException, killed: list[_ActiveRun]) -> str:
    line = f"vidseq: stopped by {signal_name(error)}"
    if not killed:
        return line + " (no MLflow run was active)"
    runs = ", ".join(f"{r.name} {r.run_id}" for r in killed)
    return f"{line}; MLflow run{'s' if len(killed) > 1 else ''} marked KILLED: {runs}"
