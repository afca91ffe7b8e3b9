"""Thread budgets (vidseq.threads): the cores a process may use (affinity, cgroup quota,
--threads / VIDSEQ_THREADS), their split between decode workers and torch threads, the decode
workers' own threads, and a real `vidseq extract` run within its budget."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidseq.errors import ConfigError
from vidseq.threads import (
    ThreadBudget,
    available_cores,
    cgroup_cpu_limit,
    requested_threads,
    thread_budget,
)

REPO = Path(__file__).resolve().parents[1]
HAS_AFFINITY = hasattr(os, "sched_setaffinity")


def _one_core_preexec() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIDSEQ_THREADS", "OMP_NUM_THREADS")}
    return {**env, **extra}


# -- the cores ------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs os.sched_setaffinity (Linux)")
def test_cores_honour_the_affinity_of_a_process_on_one_core():
    code = "import json; from vidseq.threads import thread_budget as b; t = b(); print(json.dumps([t.cores, t.source]))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(),
        preexec_fn=_one_core_preexec,
        capture_output=True,
        text=True,
        check=True,
    )
    cores, source = json.loads(out.stdout)
    assert cores == 1 and source == "CPU affinity"


def _cgroup_v2(tmp_path: Path, path: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for folder, text in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def test_cgroup_v2_quota_of_the_process_or_a_parent_is_read(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "/jobs/mine", {"jobs": "250000 100000\n", "jobs/mine": "max 100000\n"})
    assert cgroup_cpu_limit(root, proc) == pytest.approx(2.5)  # the parent's quota bounds the child
    cores, source = available_cores({}, root=root, proc_cgroup=proc)
    assert cores == min(3, len(os.sched_getaffinity(0)))  # 2.5 cores of time: 3 threads, never above affinity
    if len(os.sched_getaffinity(0)) > 3:
        assert source == "cgroup CPU quota 2.5"


def test_cgroup_v2_quota_below_the_affinity_lowers_the_cores(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "/", {".": "50000 100000"})
    assert cgroup_cpu_limit(root, proc) == pytest.approx(0.5)
    assert available_cores({}, root=root, proc_cgroup=proc) == (1, "cgroup CPU quota 0.5")
    root, proc = _cgroup_v2(tmp_path / "none", "/a", {"a": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_cfs_quota_is_read_and_minus_one_is_no_quota(tmp_path):
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (cpu.parent / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu.parent / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup-file"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_limit(root, proc) == pytest.approx(1.0)
    assert available_cores({}, root=root, proc_cgroup=proc)[0] == 1
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_threads_setting_wins_and_bad_values_are_one_clear_error(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "/", {".": "100000 100000"})
    budget = thread_budget({"VIDSEQ_THREADS": "3"}, root=root, proc_cgroup=proc)
    assert (budget.cores, budget.explicit) == (3, True)
    assert requested_threads({"VIDSEQ_THREADS": "auto"}) is None
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="VIDSEQ_THREADS"):
            requested_threads({"VIDSEQ_THREADS": bad})


# -- the split ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16, 64])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_extraction_split_never_exceeds_the_cores(cores, device):
    budget = ThreadBudget(cores, "test")
    plan = budget.extraction("auto", device=device)
    assert plan.workers + plan.torch == cores and plan.torch >= 1
    assert plan.workers == (0 if cores == 1 else (cores // 2 if device == "cpu" else cores - 1))
    few = budget.extraction("auto", device=device, videos=1)  # no more workers than videos
    assert few.workers <= 1 and few.workers + few.torch <= cores
    given = budget.extraction(1, device=device)  # a set number of workers is kept; torch gets the rest
    assert (given.workers, given.torch) == (1, max(1, cores - 1))
    assert 1 <= budget.training() <= cores and budget.training(processes=cores) == 1
    assert ThreadBudget(cores, "test", explicit=True).training() == cores


def test_threads_option_sets_the_budget_of_the_command(tmp_path):
    """`vidseq --threads 3 ...` reaches the library through VIDSEQ_THREADS (config check: no torch)."""
    code = (
        "import sys, os; from vidseq.cli import app; "
        "sys.argv = ['vidseq', '--threads', '3', 'config', 'check', sys.argv[1]]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "from vidseq.threads import thread_budget\n"
        "print('budget', thread_budget().cores, os.environ['OMP_NUM_THREADS'])"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extract: {num_workers: auto}\n")
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg)], env=_env(), capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert "budget 3 3" in out.stdout, out.stdout + out.stderr


# -- applied ---------------------------------------------------------------------------------------


def _worker_threads(job):
    import cv2
    import torch

    yield {"job": job[0], "torch": torch.get_num_threads(), "cv2": cv2.getNumThreads(), "error": ""}


def test_decode_workers_run_torch_and_opencv_on_one_thread():
    """A forked decode worker is one thread of the budget; the parent's OpenCV keeps its threads
    (set to 1 only around the fork, never in the child: that hangs once the parent's pool ran)."""
    import cv2
    import numpy as np

    from vidseq.features.workers import DecodeLimits, DecodePool

    cv2.setNumThreads(2)
    cv2.GaussianBlur(np.zeros((512, 512), np.uint8), (9, 9), 0)  # the parent's pool has run
    with DecodePool(_worker_threads, workers=2, limits=DecodeLimits(seconds=30)) as pool:
        seen = list(pool.imap([(0, "a", True, False), (1, "b", True, False)]))
    assert [(s["torch"], s["cv2"]) for s in seen] == [(1, 1), (1, 1)]
    assert cv2.getNumThreads() == 2


def _forked(parent: int, child: str) -> bool:
    """A child that is a fork of ``parent`` (a decode worker runs the same program), not a short
    helper program a library starts (ctypes' find_library runs ldconfig, for one)."""
    try:
        with open(f"/proc/{parent}/comm") as mine, open(f"/proc/{child}/comm") as theirs:
            return mine.read() == theirs.read()
    except OSError:  # it ended meanwhile
        return False


def _watch(process: subprocess.Popen) -> tuple[int, int]:
    """The most forked child processes and the most threads of the main process seen while it ran."""
    kids = tasks = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/task/{process.pid}/children") as fh:
                kids = max(kids, sum(_forked(process.pid, child) for child in fh.read().split()))
            tasks = max(tasks, len(os.listdir(f"/proc/{process.pid}/task")))
        except OSError:  # it ended between the poll and the read
            break
        time.sleep(0.05)
    return kids, tasks


@pytest.mark.slow
@pytest.mark.skipif(not HAS_AFFINITY, reason="needs os.sched_setaffinity (Linux)")
def test_vidseq_extract_on_one_core_decodes_in_process_on_one_torch_thread(clip_paths, tmp_path):
    """A real `vidseq extract` pinned to one core: no decode workers, torch on 1 thread (its log line,
    what torch reported in the run), and no worker process seen while it ran."""
    clip = next(p for p in clip_paths if p.name.startswith("ucf101_") and p.suffix == ".avi")
    small = ["sampling.count=4", "backbone.input_size=64", "extract.batch_size=4", "extract.num_workers=auto"]
    command = [sys.executable, "-m", "vidseq", "extract", str(clip), "--out", str(tmp_path / "f")]
    for item in small:
        command += ["-o", item]
    process = subprocess.Popen(
        command,
        env=_env(YOLO_OFFLINE="1"),
        preexec_fn=_one_core_preexec,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    kids, _ = _watch(process)
    out, err = process.communicate()
    assert process.returncode == 0, err
    line = re.search(r"extract \[(\d+) cores \((.*?)\): (\d+) decode worker\(s\) x 1 thread, (\d+) torch thread", err)
    assert line, err
    cores, source, workers, torch_threads = int(line[1]), line[2], int(line[3]), int(line[4])
    assert (cores, source, workers, torch_threads) == (1, "CPU affinity", 0, 1)
    assert kids == 0
    assert "1 extracted" in out
