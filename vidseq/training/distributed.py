"""Process groups for distributed data-parallel (DDP) training under ``torchrun``.

Place in the data flow: beside the models; ``vidseq.training.train`` uses it to train one model in
several processes (``python -m torch.distributed.run --nproc-per-node N -m vidseq train ...``).
torchrun describes the job in the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); everything here reads it from there. Where ``WORLD_SIZE`` is
unset or 1 nothing happens: every function is a no-op (or the identity) in a single process, so
callers need no ``if`` of their own. Backends: gloo on the CPU, nccl on CUDA (one GPU per
process, chosen by ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from vidseq.errors import VidseqError

T = TypeVar("T")


class DistributedError(VidseqError):
    """The torchrun environment is incomplete or the process group cannot start."""


def world() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` of this process, from torchrun's environment.

    ``(0, 0, 1)`` in a plain single process.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers: start vidseq with "
            "`python -m torch.distributed.run` (or unset them for one process)"
        ) from None
    return rank, local_rank, world_size


def is_distributed() -> bool:
    """True when this process is one of several (``WORLD_SIZE`` > 1)."""
    return world()[2] > 1


def rank() -> int:
    """This process's rank (the process group's when it exists, else ``RANK``; 0 alone)."""
    return dist.get_rank() if _active() else world()[0]


def world_size() -> int:
    """How many processes train together (1 alone)."""
    return dist.get_world_size() if _active() else world()[2]


def is_main() -> bool:
    """True on rank 0 and in a single process: the one process that writes files and logs.

    Reads ``RANK`` from the environment, so it answers before the process group exists (a
    caller can decide to start MLflow logging before ``vidseq.training.train.train`` runs).
    """
    return rank() == 0


is_main_process = is_main  # the name the CLI uses for "log to MLflow here"


def init_process_group(device: torch.device | str) -> torch.device:
    """Join the process group (gloo on the CPU, nccl on CUDA); returns this process's device.

    On CUDA each process takes the GPU ``LOCAL_RANK`` (an index in ``device`` is ignored). A no-op
    that returns ``device`` alone or when the group already exists.
    """
    device = torch.device(device)
    _, local_rank, size = world()
    if size <= 1:
        return device
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPUs are visible: "
                "start at most one process per GPU (--nproc-per-node) or train on the CPU (train.device=cpu)"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not _active():
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if name not in os.environ:
                raise DistributedError(
                    f"WORLD_SIZE is {size} but {name} is not set: start vidseq with "
                    "`python -m torch.distributed.run --nproc-per-node N -m vidseq ...`"
                )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def cleanup() -> None:
    """Leave the process group (if this process is in one)."""
    if _active():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device | str) -> Iterator[torch.device]:
    """``init_process_group(device)`` for the ``with`` block; the group is always destroyed after.

    A group that existed before the block (a caller started it) is left to that caller.
    """
    started = is_distributed() and not _active()
    device = init_process_group(device)
    try:
        yield device
        if started:
            # every rank past its last collective before any leaves: a rank that destroys the group
            # while a peer still receives its broadcast aborts that peer (gloo: std::terminate).
            # Not on an exception: a crashed peer would never arrive.
            barrier()
    finally:
        if started:
            cleanup()


def barrier() -> None:
    """Wait until every process gets here."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (in place; returned for chaining)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(obj: T, *, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (anything picklable) on every process: one decision everywhere."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when several processes train it, else itself.

    DDP copies rank 0's parameters to every rank now and averages the gradients in ``backward``.
    """
    if not _active():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a ``DistributedDataParallel`` wrapper (what checkpoints hold)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


__all__ = [
    "DistributedError",
    "all_reduce_sum",
    "barrier",
    "broadcast",
    "cleanup",
    "init_process_group",
    "is_distributed",
    "is_main",
    "is_main_process",
    "process_group",
    "rank",
    "unwrap",
    "world",
    "world_size",
    "wrap",
]


def relaunch_under_torchrun(nproc: int, argv: list[str] | None = None) -> int:
    """Run this same ``vidseq train`` command (``argv``, default ``sys.argv``; without ``--ddp``)
    in ``nproc`` processes under torchrun on this machine; its exit code."""
    import subprocess
    import sys

    args, skip = [], False
    argv = sys.argv if argv is None else argv  # [vidseq, (root options: --threads N, inherited as env), train, ...]
    for arg in argv[argv.index("train") + 1 if "train" in argv else 2 :]:
        if skip:
            skip = False
        elif arg == "--ddp":
            skip = True
        elif not arg.startswith("--ddp="):
            args.append(arg)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "vidseq",
        "train",
        *args,
    ]
    env = {"PYTHONFAULTHANDLER": "1", **os.environ}  # a rank that crashes prints where (all its threads)
    return subprocess.run(command, check=False, env=env).returncode
