"""Thread budgets: how many cores this process may use, and how extraction, training and
prediction split them so that the threads that run at once never outnumber them.

Place in the data flow: beside ``config`` at the bottom; ``features`` (decode workers + the
backbone's threads), ``training`` (the temporal head's threads) and ``predict`` ask it before
they start work. Imports nothing of vidseq but ``errors``; torch and OpenCV are imported only
inside the functions that set their threads.

The cores (``available_cores``): the CPUs this process may run on (``os.sched_getaffinity``:
``taskset``, ``docker --cpuset-cpus``), lowered to a CPU quota where a cgroup sets one (cgroup v2
``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up: ``docker --cpus 1.5`` gives
2), unless ``VIDSEQ_THREADS`` (``vidseq --threads N``) names the number itself. torch's own
default is every CPU of the machine, which in a container with a quota of 2 on a 64-core host is
64 spinning OpenMP threads on 2 cores' worth of time.

The split (``ThreadBudget``):

- **extraction** (``extraction``): each decode worker is one thread (torch and OpenCV set to 1
  in it; see ``workers``), the backbone gets the rest: ``workers + torch threads <= cores``. On
  CPU half the cores decode (the backbone is the larger cost, but its threads scale worse than
  whole processes), on CUDA all but one (the model runs on the GPU). One core: no workers, the
  one thread decodes and then runs the model.
- **training** (``training``): the temporal heads' operations are small (a GRU step on a batch of
  32 is a few million multiply-adds), so intra-op threads barely pay and, while anything else
  runs, their OpenMP spin-waiting costs a great deal: on 2 shared cores a GRU trained 2x faster on
  1 thread than on 2 with the machine nearly quiet, 16-30x faster beside one busy process
  (``benchmarks/threads.py``). So training takes a quarter of the cores (at least 1) unless
  ``--threads`` says otherwise; torchrun's processes on one machine share them.
- **inference** (``inference``): a model in this process alone, every core of the budget.

Interop threads are set to 1 where torch still allows it (they only serve ``torch.jit.fork``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from vidseq.errors import ConfigError

ENV = "VIDSEQ_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
TRAIN_SHARE = 4  # training: one intra-op thread per this many cores (at least one)


# -- the cores this process may use -----------------------------------------------------------


def affinity_cores() -> int:
    """The CPUs this process may run on (its affinity mask; all CPUs where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroups, in cores (``1.5``: 150 ms per 100 ms), or None.

    Reads cgroup v2 ``cpu.max`` (``"max 100000"``: no quota) and v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1: none) in this process's cgroup (from ``proc_cgroup``) and
    every cgroup above it under ``root``, and at ``root`` itself (a container sees its own
    cgroup there); the smallest quota wins. ``root`` and ``proc_cgroup`` are parameters so that
    tests can point them at a folder of their own.
    """
    limits = [limit for folder in _cgroup_folders(root, proc_cgroup) if (limit := _quota(folder)) is not None]
    return min(limits) if limits else None


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """Folders that may hold this process's CPU quota: its v2 and v1 ``cpu`` cgroups, their parents, the roots."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    bases = {root: "/"}
    for line in lines:  # "0::/a/b" (v2), "4:cpu,cpuacct:/a/b" (v1)
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if not controllers:
            bases[root] = path or "/"
            bases.setdefault(root / "unified", path or "/")  # a hybrid host mounts v2 there
        elif "cpu" in controllers.split(","):
            for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu", controllers):
                bases[root / name] = path or "/"
    folders = []
    for base, path in bases.items():
        parts = [part for part in path.split("/") if part]
        folders += [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return list(dict.fromkeys(folders))


def _quota(folder: Path) -> float | None:
    """The quota in cores set in ``folder`` (cgroup v2 or v1 files), or None."""
    with suppress(OSError, ValueError):
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        if quota != "max" and float(period or 100000) > 0:
            return float(quota) / float(period or 100000)
        return None
    with suppress(OSError, ValueError):
        quota = float((folder / "cpu.cfs_quota_us").read_text())
        period = float((folder / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    return None


def requested_threads(env: Mapping[str, str] | None = None) -> int | None:
    """``VIDSEQ_THREADS`` (what ``vidseq --threads N`` sets) as a number, or None when unset."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    if not raw or raw == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{ENV}={raw!r}: give a whole number of threads, 1 or more (or leave it unset: auto)")
    return value


def available_cores(
    env: Mapping[str, str] | None = None, *, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> tuple[int, str]:
    """The cores this process may use and where that number came from (for messages)."""
    asked = requested_threads(env)
    if asked is not None:
        return asked, f"--threads/{ENV}"
    cores, source = affinity_cores(), "CPU affinity"
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None and math.ceil(quota - 1e-9) < cores:
        cores, source = max(1, math.ceil(quota - 1e-9)), f"cgroup CPU quota {quota:g}"
    return cores, source


# -- the split ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionThreads:
    """How an extraction run uses the budget: ``workers`` decode processes of one thread each and
    ``torch`` intra-op threads for the backbone in this process (``workers + torch <= cores``
    unless the user set more workers than cores)."""

    workers: int
    torch: int
    cores: int
    source: str

    def describe(self, torch_threads: int | None = None) -> str:
        """One line for logs; ``torch_threads``: what torch reports in use (default: the plan's)."""
        return (
            f"{self.cores} cores ({self.source}): {self.workers} decode worker(s) x 1 thread, "
            f"{self.torch if torch_threads is None else torch_threads} torch thread(s)"
        )


@dataclass(frozen=True)
class ThreadBudget:
    """The cores this process may use (``cores``; ``source`` says why) and their split per task."""

    cores: int
    source: str
    explicit: bool = False

    def extraction(
        self, workers: int | str = "auto", *, device: str = "cpu", videos: int | None = None
    ) -> ExtractionThreads:
        """Decode workers and backbone threads for an extraction run on ``device`` ("cpu", "cuda")
        of ``videos`` videos (None: unknown). ``workers`` as configured (``extract.num_workers``):
        "auto" sizes them from the budget; a number is kept and the backbone gets the cores left
        (at least one thread)."""
        cores = self.cores
        if workers == "auto":
            if cores < 2:
                count = 0
            elif device != "cpu":
                count = cores - 1
            else:
                count = cores // 2
        else:
            count = int(workers)
        if videos is not None:
            count = min(count, videos)
        return ExtractionThreads(count, max(1, cores - count), cores, self.source)

    def training(self, *, processes: int = 1) -> int:
        """Intra-op threads for training the temporal head in each of ``processes`` processes
        (torchrun's on this machine): the cores shared out, and of an automatic budget a
        quarter (see the module docstring)."""
        share = max(1, self.cores // max(1, processes))
        return share if self.explicit else max(1, share // TRAIN_SHARE)

    def inference(self) -> int:
        """Intra-op threads for a model that has this process to itself (decoding not beside it)."""
        return self.cores


def thread_budget(
    env: Mapping[str, str] | None = None, *, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> ThreadBudget:
    """This process's budget: ``VIDSEQ_THREADS`` when set, else its affinity and cgroup quota."""
    cores, source = available_cores(env, root=root, proc_cgroup=proc_cgroup)
    return ThreadBudget(cores, source, explicit=requested_threads(env) is not None)


def local_processes(env: Mapping[str, str] | None = None) -> int:
    """How many processes of one torchrun job share this machine (``LOCAL_WORLD_SIZE``; 1 outside one)."""
    try:
        return max(1, int((os.environ if env is None else env).get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


# -- applying it ---------------------------------------------------------------------------------


def set_torch_threads(intra: int) -> int:
    """Set torch's intra-op threads to ``intra`` (and interop to 1 where torch still allows it);
    the previous intra-op count."""
    import torch

    before = torch.get_num_threads()
    if intra != before:
        torch.set_num_threads(max(1, intra))
    with suppress(RuntimeError):  # only before any inter-op work has started
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    return before


@contextmanager
def torch_threads(intra: int) -> Iterator[None]:
    """torch on ``intra`` intra-op threads inside the block, as it was after it."""
    before = set_torch_threads(intra)
    try:
        yield
    finally:
        import torch

        torch.set_num_threads(before)


@contextmanager
def single_threaded_children() -> Iterator[None]:
    """Processes forked inside the block start with OpenCV on one thread.

    ``cv2.setNumThreads`` cannot be called in the forked child: where the parent has used
    OpenCV's thread pool it waits for threads that were not forked and hangs (measured with
    OpenCV 4's pthreads pool). So it is set to 1 here, in the parent, around the fork, and put
    back; the child keeps 1. No-op without OpenCV.
    """
    try:
        import cv2
    except ImportError:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
