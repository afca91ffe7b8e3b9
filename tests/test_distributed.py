"""Distributed data-parallel training: `vidseq train` under torchrun with 2 CPU processes (gloo).

The feature store is synthetic (no CNN): 2 classes whose frames hold the same values in the
opposite order (a ramp that rises or falls, plus noise), so only a model that reads the order can
tell them apart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.config import BackboneConfig, IOConfig, SamplingConfig
from vidseq.features import FeatureStore, VideoFeatures
from vidseq.models import load_model
from vidseq.training import distributed

SHAPES = {
    "rise": lambda t: t,
    "fall": lambda t: 1 - t,
}
SPLITS = ["train"] * 20 + ["val"] * 6 + ["test"] * 6  # per class
FEATURE_DIM = 8
TRAIN_OPTIONS = [
    "-o",
    "train.batch_size=8",
    "-o",
    "train.lr=0.003",
    "-o",
    "train.patience=50",
    "-o",
    "model.hidden_size=32",
    "-o",
    "evaluate.views=1",
]
TORCHRUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """2 order-only classes x 32 videos (20 train, 6 val, 6 test), 10-20 steps of 8 features."""
    work = tmp_path_factory.mktemp("ddp")
    # a recipe (how new videos would be extracted) is recorded so the CLI can write its model/ bundle
    recipe = {
        name: section().model_dump(mode="json")
        for name, section in (("backbone", BackboneConfig), ("sampling", SamplingConfig), ("io", IOConfig))
    }
    store = FeatureStore.open(
        work / "features", {"synthetic": "order", "dim": FEATURE_DIM}, name="synthetic", recipe=recipe
    )
    store.add_labels(list(SHAPES))
    rng = np.random.default_rng(0)
    rows = []
    for label, shape in SHAPES.items():
        for i, split in enumerate(SPLITS):
            video = work / "videos" / f"{label}_{i:02d}.mp4"
            video.parent.mkdir(exist_ok=True)
            video.write_bytes(f"not a video: {label} {i}".encode())  # the store ids videos by content
            steps = int(rng.integers(10, 21))
            features = rng.normal(0, 0.3, (steps, FEATURE_DIM)).astype(np.float32)
            features[:, :2] += shape(np.linspace(0, 1, steps))[:, None]
            entry = store.write(video, VideoFeatures(features, np.arange(steps), np.arange(steps) / 10.0))
            rows.append(
                {
                    "path": str(video),
                    "label": label,
                    "split": split,
                    "status": "done",
                    "frames": steps,
                    "file": entry.relative_to(store.directory),
                }
            )
    store.write_manifest(rows)
    return store.directory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vidseq_train(
    store_dir: Path, out: Path, *args: str, nproc: int, check: bool = True
) -> subprocess.CompletedProcess:
    """`vidseq train` in one process, or in ``nproc`` under torchrun."""
    command = ["-m", "vidseq", "train", str(store_dir), "--out", str(out), "-q", *TRAIN_OPTIONS, *args]
    return _launch(command, nproc=nproc, marker=str(out), check=check)


def _launch(command: list[str], *, nproc: int, marker: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python *command`` (under torchrun when ``nproc`` > 1); no process of it outlives the call."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
        ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([*launcher, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers (each in a session of its own)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    finally:
        leftover = _kill_processes_mentioning(marker)
    assert not leftover, f"processes outlived the run: {leftover}"
    if check:
        assert proc.returncode == 0, f"{stdout}\n{stderr}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _kill_processes_mentioning(marker: str) -> list[int]:
    """Kill (and name) the processes whose command line holds ``marker``, a run folder unique to
    one test, so a failing run leaves no orphan worker behind (Linux /proc; elsewhere: none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process ended meanwhile
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


def _run_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.is_file())


@pytest.mark.slow
def test_ddp_trains_like_one_process_and_only_rank_0_writes(tmp_path, store_dir):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _vidseq_train(store_dir, single, "--epochs", "8", nproc=1)
    _vidseq_train(store_dir, ddp, "--epochs", "8", nproc=2)
    assert _run_files(ddp) == _run_files(single)  # no per-rank extras, no leftover temporaries
    assert not [p for p in ddp.iterdir() if p.name.startswith(".tmp")]
    accuracy = {
        name: json.loads((out / "test_metrics.json").read_text())["accuracy"]
        for name, out in (("single", single), ("ddp", ddp))
    }
    assert accuracy["single"] >= 0.9 and accuracy["ddp"] >= 0.9, accuracy
    history = json.loads((ddp / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 9))
    state = torch.load(ddp / "best.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"]["state_dict"])
    model = load_model(state["model"])
    assert model(torch.zeros(1, 5, FEATURE_DIM)).shape == (1, len(SHAPES))


CUT_AFTER_EPOCH_2 = """
import os, sys
from vidseq.config import load_config
from vidseq.training.train import train

def crash(row):  # on_epoch_end runs on rank 0 only: rank 0 dies, torchrun stops rank 1
    if row["epoch"] == 2:
        os._exit(3)

store, out, *overrides = sys.argv[1:]
cfg = load_config(None, overrides)
train(model_config=cfg.model, config=cfg.train, evaluate_config=cfg.evaluate, features=store, out=out,
      progress=False, on_epoch_end=crash)
"""


@pytest.mark.slow
def test_ddp_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, store_dir):
    out, script = tmp_path / "run", tmp_path / "cut.py"
    script.write_text(CUT_AFTER_EPOCH_2)
    overrides = [option for option in TRAIN_OPTIONS if option != "-o"]
    crashed = _launch(
        [str(script), str(store_dir), str(out), *overrides, "train.epochs=4"], nproc=2, marker=str(out), check=False
    )
    assert crashed.returncode != 0
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    refused = _vidseq_train(store_dir, out, "--epochs", "4", nproc=2, check=False)
    assert refused.returncode != 0 and "pass --resume" in " ".join(refused.stderr.split())  # on both ranks, no hang
    _vidseq_train(store_dir, out, "--resume", "-o", "train.epochs=4", nproc=2)
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 4
    _vidseq_train(store_dir, tmp_path / "whole", "--epochs", "4", nproc=2)
    assert history == json.loads((tmp_path / "whole" / "history.json").read_text())


def test_alone_every_helper_is_a_no_op(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == (0, 0, 1)
    assert distributed.is_main() and distributed.is_main_process() and not distributed.is_distributed()
    model = torch.nn.Linear(2, 2)
    with distributed.process_group("cpu") as device:
        assert device == torch.device("cpu") and not torch.distributed.is_initialized()
        assert distributed.wrap(model, device) is model and distributed.unwrap(model) is model
        assert distributed.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]
        assert distributed.broadcast({"a": 1}) == {"a": 1}
        distributed.barrier()


def test_rank_is_read_from_the_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world() == (3, 1, 4)
    assert distributed.is_distributed() and not distributed.is_main_process()


def test_an_incomplete_torchrun_environment_says_how_to_start(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(distributed.DistributedError, match="MASTER_ADDR is not set: start vidseq with"):
        distributed.init_process_group("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(distributed.DistributedError, match="must be integers"):
        distributed.world()


@pytest.mark.parametrize("num_batches", [1, 4, 5])
def test_every_rank_takes_the_same_number_of_steps_and_each_batch_counts_once(monkeypatch, num_batches):
    from vidseq.training.train import _shard

    batches = [np.array([i]) for i in range(num_batches)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(_shard(batches))
    assert len(shares[0]) == len(shares[1]) == -(-num_batches // 2)
    counted = sorted(int(b[0]) for share in shares for b, counts in share if counts)
    assert counted == list(range(num_batches))
    assert [int(b[0]) for b, _ in shares[1]] == list(range(1, num_batches, 2)) + [0] * (num_batches % 2)


_ENDING = """
import atexit, sys, threading, time
from vidseq.cli._app import main


class Finalized:
    def __del__(self):  # runs when the interpreter finalizes (module globals cleared)
        print("finalized", flush=True)


keep = Finalized()
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined")), daemon=False).start()
sys.argv = ["vidseq", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["nosuchcommand"], 2)])
def test_a_torchrun_rank_ends_with_its_code_without_finalizing(tmp_path, args, code):
    """A rank's end skips interpreter finalization (where a gloo thread's late GIL request aborts
    the process, SIGABRT) but keeps what an exit promises: its code, atexit handlers, non-daemon
    threads joined, output flushed. Alone (no WORLD_SIZE) the interpreter finalizes as usual."""
    script = tmp_path / "ending.py"
    script.write_text(_ENDING)
    for world, finalized in (("2", False), ("1", True)):
        env = {**os.environ, "WORLD_SIZE": world}
        out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == code, out.stderr[-2000:]
        assert "atexit ran" in out.stdout and "thread joined" in out.stdout
        assert ("finalized" in out.stdout) is finalized, (world, out.stdout)
