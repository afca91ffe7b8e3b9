"""Decode workers with limits: child processes that decode videos for both engines, each video
watched for time and memory.

Place in the data flow: ``ExtractionRun.jobs()`` -> **decode_videos** (``video_chunks`` in
worker processes) -> chunks, in order within each video -> the local engine's model loop
(``extraction``) or the Ray engine's decode task (``ray_engine``, which makes them rows) ->
``VideoSink``.

A native decoder can loop forever (decord, on a header that over-counts frames, holding the GIL:
dmlc/decord#373) or leak gigabytes (decord#208, #157), and nothing inside its process can stop
it. So videos are decoded in forked worker processes (no import cost; what the parent set up,
a test's stand-in decoder included, is there) that a thread of the parent watches:

- **a deadline per video** (``extract.video_timeout``): the seconds the worker has spent on the
  video, not counting the time it waited for the parent to take a chunk (a slow model on a long
  video is no hang). The worker keeps that clock in one shared double, so the parent reads it
  without asking a worker that may be stuck.
- **a memory cap** (``extract.worker_memory_gb``): the worker's own memory, its USS (pages it
  does not share with the parent it was forked from; its RSS counts the parent's too).

A worker past either limit is killed (SIGKILL), as is one that died by itself (a decoder's
segfault); its video becomes a failure ``{"job", "error"}``, as ``video_chunks`` reports one,
and a fresh worker takes the next video. Each worker has its own pipe, so a kill corrupts
nothing shared. A worker decodes one video at a time and hands over a chunk at a time: it waits
in ``send`` until the parent takes the chunk, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from vidseq.backbones import BackboneSpec
from vidseq.config import ExtractConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.features._engine import flow_pooler, pose_estimator, video_chunks
from vidseq.features.pose import mediapipe_ran_here
from vidseq.threads import single_threaded_children

POLL_SECONDS = 0.2  # how often the limits are checked (and the longest a kill waits to be seen)
_GB = 1e9

# ``ExtractionRun.jobs()``: (job, path, wants appearance, wants motion[, wants pose]); the pose
# flag is there where the run makes the pose stream (a job without it wants no pose)
DecodeJob = tuple[int, str, bool, bool] | tuple[int, str, bool, bool, bool]
Work = Callable[[DecodeJob], Iterable[dict[str, Any]]]


@dataclass(frozen=True)
class DecodeSettings:
    """What decoding any video of a run takes (``video_chunks``' options); ``motion``, ``pose``:
    the run's settings of those streams (None: no such stream)."""

    spec: BackboneSpec
    sampling: SamplingConfig
    backend: str
    chunk: int
    motion: MotionConfig | None = None
    pose: PoseConfig | None = None


@dataclass(frozen=True)
class DecodeLimits:
    """A decode worker's limits per video: ``seconds`` of decoding, ``memory_gb`` of its own memory
    (None: no limit)."""

    seconds: float | None = None
    memory_gb: float | None = None

    @classmethod
    def of(cls, config: ExtractConfig) -> DecodeLimits:
        return cls(config.video_timeout, config.worker_memory_gb)

    @property
    def any(self) -> bool:
        return self.seconds is not None or self.memory_gb is not None

    def broken(self, pid: int, elapsed: float) -> str:
        """Why the worker ``pid``, ``elapsed`` seconds into its video, broke a limit ("": it did not).
        Memory first: a worker past both (a leak that outran the clock) was not "just long"."""
        if self.memory_gb is not None and _own_memory(pid, self.memory_gb * _GB) > self.memory_gb * _GB:
            return (
                f"decode worker used more than {self.memory_gb:g} GB of memory "
                "(extract.worker_memory_gb; the worker was replaced)"
            )
        if self.seconds is not None and elapsed > self.seconds:
            return (
                f"decoder did not finish in {self.seconds:g} s (extract.video_timeout; the worker was "
                "replaced: raise the limit if the video is just long)"
            )
        return ""


def decode_video(job: DecodeJob, settings: DecodeSettings) -> Iterator[dict[str, Any]]:
    """One video's ``video_chunks`` (with its pooled flow, its pose vectors where it wants those
    streams; this process's flow and pose objects, built here on first use)."""
    index, path, appearance, motion, *pose = job
    flow = flow_pooler(settings.motion) if settings.motion is not None and motion else None
    estimator = pose_estimator(settings.pose) if settings.pose is not None and any(pose) else None
    return video_chunks(
        index,
        path,
        spec=settings.spec,
        sampling=settings.sampling,
        backend=settings.backend,
        chunk=settings.chunk,
        appearance=appearance,
        flow=flow,
        pose=estimator,
    )


def decode_videos(
    jobs: list[DecodeJob], settings: DecodeSettings, *, workers: int, limits: DecodeLimits
) -> Iterator[dict[str, Any]]:
    """Every job's chunks (one video's in order, videos interleaved), decoded by ``workers``
    watched processes; 0: in this process, where no limit can be kept. With the pose stream in a
    process that has run MediaPipe (a run with 0 workers before, or a ``PoseEstimator`` of its
    own), in this process too: a forked worker cannot start MediaPipe (``pose.mediapipe_ran_here``)."""
    if settings.pose is not None and any(any(job[4:]) for job in jobs) and mediapipe_ran_here():
        workers = 0
    if workers < 1:  # decoding and the forward take turns here: torch keeps the caller's threads
        for job in jobs:
            yield from decode_video(job, settings)
        return
    with DecodePool(partial(decode_video, settings=settings), workers=workers, limits=limits) as pool:
        yield from pool.imap(jobs)


class DecodePool:
    """Up to ``workers`` forked processes, each running ``work`` on one job at a time; ``imap``
    yields what they yield, and a failure ``{"job", "error"}`` for a job whose worker broke a
    limit or died. A context manager: leaving it kills what is left."""

    def __init__(self, work: Work, *, workers: int, limits: DecodeLimits) -> None:
        self.work, self.size, self.limits = work, max(1, workers), limits
        self.workers: list[_Worker] = []
        self._context = multiprocessing.get_context("fork")
        self._lock = threading.Lock()  # the watcher's checks vs. starting workers and handing out jobs
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> DecodePool:  # noqa: PYI034 - no subclasses
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def imap(self, jobs: Iterable[DecodeJob]) -> Iterator[dict[str, Any]]:
        queue = deque(jobs)
        if self.limits.any and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="vidseq-decode-watch", daemon=True)
            self._watcher.start()
        while True:
            self._hand_out(queue)
            busy = {worker.conn: worker for worker in self.workers if worker.job is not None}
            if not busy:
                return
            for conn in wait(list(busy), timeout=POLL_SECONDS):
                yield from self._take(busy[conn])

    def close(self) -> None:
        """Stop the watcher and every worker (idle ones are asked; busy ones are killed)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        for worker in list(self.workers):
            self._retire(worker)

    def _hand_out(self, queue: deque[DecodeJob]) -> None:
        """Start workers up to the pool size (no more than there are videos) and give idle ones a job."""
        with self._lock:
            for worker in self.workers:
                if queue and worker.job is None:
                    worker.start(queue.popleft())
            while queue and len(self.workers) < self.size:
                self.workers.append(_Worker(self._context, self.work, [w.conn for w in self.workers]))
                self.workers[-1].start(queue.popleft())

    def _take(self, worker: _Worker) -> Iterator[dict[str, Any]]:
        """One message of a busy worker: an item, the end of its job, or its death."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):  # killed, or died by itself
            job, why = worker.job, worker.why or worker.death()
            self._retire(worker)
            yield {"job": job[0], "error": why}
            return
        if kind == "item":
            yield payload
            return
        with self._lock:
            job, worker.job = worker.job, None
        if kind == "raised":
            yield {"job": job[0], "error": payload}
        if worker.why:  # its job ended as it was killed: the job counts, the worker goes
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self.workers.remove(worker)
        worker.stop()

    def _watch(self) -> None:
        """The watcher thread: every ``POLL_SECONDS``, kill a worker past a limit (its reason kept)."""
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                for worker in self.workers:
                    if worker.job is not None and not worker.why:
                        worker.why = self.limits.broken(worker.process.pid, worker.elapsed())
                        if worker.why:
                            worker.process.kill()


class _Worker:
    """One decode process: its pipe, its clock (in shared memory), the job it is on, and why it
    was killed ("" while it was not)."""

    def __init__(self, context, work: Work, inherited: list[Connection]) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.clock = context.RawValue("d", 0.0)
        self.job: DecodeJob | None = None
        self.why = ""
        self.process = context.Process(
            target=_serve, args=(child, work, self.clock, inherited), name="vidseq-decode", daemon=True
        )
        with single_threaded_children():  # OpenCV on 1 thread in the worker (set here: see there)
            self.process.start()
        child.close()

    def start(self, job: DecodeJob) -> None:
        self.clock.value = 0.0  # the last video's time is not this one's
        self.job = job
        with contextlib.suppress(OSError):  # died while idle: its pipe says so (EOF) and the job fails
            self.conn.send(job)

    def elapsed(self) -> float:
        """Seconds spent on the current video (see ``_serve`` for how the clock is kept)."""
        value = self.clock.value
        return time.monotonic() - value if value > 0 else -value

    def death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code == -signal.SIGKILL:
            return "decode worker was killed (SIGKILL: did the machine run out of memory?)"
        if code is not None and code < 0:
            return f"decode worker died on {signal.Signals(-code).name} (a crash in the decoder)"
        return f"decode worker died (exit code {code})"

    def stop(self) -> None:
        if self.job is None and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)  # idle: asked to leave
            self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _serve(conn: Connection, work: Work, clock, inherited: list[Connection]) -> None:
    """A worker's life: take a job, send its items, then ``("done", None)`` (or ``("raised", why)``).

    The clock, one shared double (one word: always read whole): while the worker decodes it
    holds the monotonic time the video would have started at had it never waited (elapsed =
    now - value); while it waits for the parent to take an item, minus the elapsed seconds.
    A worker is one thread of the run's budget (``vidseq.threads``): torch on one thread here,
    OpenCV on one from before the fork (``cv2.setNumThreads`` is never called here: in a forked
    worker it frees the parent's OpenCV thread pool and hangs).
    """
    for other in inherited:  # the parent's ends of other workers' pipes
        other.close()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited through fork
    torch.set_num_threads(1)
    while (job := _next_job(conn)) is not None:
        clock.value = time.monotonic()
        try:
            for item in work(job):
                clock.value = -(time.monotonic() - clock.value)
                conn.send(("item", item))
                clock.value = time.monotonic() + clock.value
            clock.value = 0.0
            conn.send(("done", None))
        except (BrokenPipeError, EOFError):
            return  # the parent is gone
        except Exception as exc:  # noqa: BLE001 - the job's failure, reported as its row
            clock.value = 0.0
            conn.send(("raised", f"{type(exc).__name__}: {exc}"))


def _next_job(conn: Connection) -> DecodeJob | None:
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent dies (a hung decoder would outlive it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _own_memory(pid: int, threshold: float) -> float:
    """Bytes of memory the process ``pid`` does not share (its USS); its RSS where that is below
    ``threshold`` (cheap to read, and the USS is never more). 0 when it is gone."""
    import psutil  # a dependency of ultralytics (and of Ray); imported where it is needed

    try:
        process = psutil.Process(pid)
        rss = process.memory_info().rss
        return rss if rss <= threshold else process.memory_full_info().uss
    except psutil.Error:
        return 0.0
