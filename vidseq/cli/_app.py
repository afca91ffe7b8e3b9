"""The ``vidseq`` app: the typer application, shared options, and one clear line per failure.

Place in the data flow: the very top; the command modules (``data``, ``model``, ``pipelines``,
``configs``) register their commands on ``app`` and only parse, call one function and print.
Every command turns a vidseq error into one red line and a non-zero exit code (an interrupted
run: 128 + the signal); no Python traceback reaches the user (VIDSEQ_DEBUG=1 shows one).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from vidseq import __version__
from vidseq.config import VidseqConfig, load_config
from vidseq.errors import Interrupted, VidseqError
from vidseq.outputs import os_error_line

app = typer.Typer(
    help="vidseq: action recognition in video with per-frame CNN/YOLO features and LSTM/GRU "
    "heads.\n\nvideos -> frames -> backbone features -> sequences -> LSTM/GRU -> labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show and check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML config file (see configs/); defaults apply where it is silent."
)
OVERRIDE_OPTION = typer.Option(
    [], "--override", "-o", help="Override one config key: -o section.key=value (repeatable)."
)


def friendly(func: Callable) -> Callable:
    """Run a command; report a VidseqError, or an OSError of a full disk or an unwritable output
    (``vidseq.outputs.os_error_line``), as one line and exit 2 (an interrupted run: 128 + its
    signal), never a traceback (VIDSEQ_DEBUG=1 shows one). Other OSErrors keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VidseqError as exc:
            if os.environ.get("VIDSEQ_DEBUG"):
                raise
            stopped = isinstance(exc, Interrupted)
            err_console.print(
                f"[bold red]{'stopped' if stopped else 'error'}:[/] {escape(str(exc))}", markup=True, highlight=False
            )
            raise typer.Exit(128 + exc.signum if stopped else 2) from None
        except OSError as exc:
            line = os_error_line(exc)
            if line is None or os.environ.get("VIDSEQ_DEBUG"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(line)}", markup=True, highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def load(config: Path | None, override: list[str], flags: dict[str, Any] | None = None) -> VidseqConfig:
    """The resolved config: defaults < ``config`` file < ``-o`` overrides < the command's own flags
    (``{"section.key": value}``, None where the flag was not given)."""
    given = [f"{key}={value}" for key, value in (flags or {}).items() if value is not None]
    return load_config(config, [*override, *given])


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"vidseq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Cores vidseq may use, in all (decode workers + torch threads; sets VIDSEQ_THREADS); "
        "default: the CPU affinity and cgroup quota. Before the command: vidseq --threads 4 extract ...",
    ),
) -> None:
    """vidseq: action recognition in video."""
    if threads is not None:  # read by vidseq.threads here and in child processes (torchrun, workers)
        os.environ["VIDSEQ_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)


def main() -> None:
    """Console-script entry point. In a process of a torchrun group (``--ddp N``), the command's
    end is the process's end: see ``exit_without_finalizing``."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        app()
        return
    try:
        app()
    except SystemExit as done:
        exit_without_finalizing(done.code)
    exit_without_finalizing(0)


def exit_without_finalizing(code: int | str | None) -> None:
    """Exit with ``code`` as ``sys.exit`` would (non-daemon threads joined, ``atexit`` handlers run:
    MLflow's, logging's; output flushed), then ``os._exit``: no interpreter finalization.

    Why, for a DDP rank: gloo's worker threads (C++) may drop their last reference to a tensor of
    the last collective after the Python side has moved on. If that happens while the interpreter
    is being finalized, the thread's GIL request ends it (``pthread_exit``) inside C++ code that
    may not unwind: ``terminate called without an active exception``, SIGABRT, and torchrun
    reports the whole training as failed after it had finished (seen once in CI, on the rank that
    left first). Without finalization there is nothing for such a thread to run into.
    """
    import atexit
    import sys
    import threading

    if isinstance(code, str):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)
