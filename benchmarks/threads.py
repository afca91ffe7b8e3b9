"""Thread budgets: training and extraction with torch's default threads ("before") against vidseq's
thread budget ("after", ``vidseq.threads``), on a quiet machine and beside competing busy processes.

Every measurement runs in a fresh child process (torch's threads are set once per process), and
times only the work (not the imports): training is ``vidseq.training.train.train`` of a GRU on a
store of random sequences (as benchmarks/train.py); extraction is ``vidseq.features.extract`` of
the shared clips with the default backbone. "before" is what vidseq did without a budget:
training on torch's default threads (every core) and extraction with 2 decode workers beside
torch's default threads; "after" is the budget (``extract.num_workers: auto``). Runs alternate
before/after; the best of ``--repeats`` counts (on a shared machine the slow runs measure the
neighbours). "load": ``--load`` busy Python loops run beside the measured process.

Run by hand:  python benchmarks/threads.py [--repeats 2] [--load 1] [--part train|extract|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "action-clips"


# -- the measured work (in a child process) -------------------------------------------------------


def child_train(args: argparse.Namespace) -> dict:
    import torch

    from vidseq.config import ModelConfig, TrainConfig
    from vidseq.training.train import train

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import fake_store  # benchmarks/train.py

    with tempfile.TemporaryDirectory() as tmp:
        store = fake_store(Path(tmp), videos=args.videos, steps=16, dim=1280, classes=8)
        cfg = TrainConfig(
            features=str(store.directory), epochs=args.epochs, batch_size=32, patience=args.epochs, device="cpu"
        )
        start = time.perf_counter()
        result = train(model_config=ModelConfig(name="gru"), config=cfg, out=Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "torch_threads": torch.get_num_threads(), "val_accuracy": result.val["accuracy"]}


def child_extract(args: argparse.Namespace) -> dict:
    import torch

    from vidseq.config import ExtractConfig, SamplingConfig
    from vidseq.datasets import discover_videos
    from vidseq.features import extract
    from vidseq.threads import thread_budget

    items = discover_videos(args.videos_dir).items
    config = ExtractConfig(num_workers=args.workers if args.workers != "auto" else "auto", batch_size=32)
    plan = thread_budget().extraction(config.num_workers, device="cpu", videos=len(items))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = extract(items, out=tmp, sampling=SamplingConfig(count=args.count), config=config, progress=False)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "frames": result.frames,
        "workers": plan.workers,
        "torch_threads": plan.torch,
        "after_torch_threads": torch.get_num_threads(),
    }


# -- the driver -------------------------------------------------------------------------------------


def run_child(part: str, setting: str, args: argparse.Namespace, cores: int) -> dict:
    """One measurement in a fresh process: ``setting`` "before" (torch's default threads, old
    defaults) or "after" (the budget)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIDSEQ_THREADS", "OMP_NUM_THREADS")}
    command = [sys.executable, __file__, "--child", part, "--videos", str(args.videos), "--epochs", str(args.epochs)]
    command += ["--videos-dir", str(args.videos_dir), "--count", str(args.count)]
    if setting == "before":
        if part == "train":
            env["VIDSEQ_THREADS"] = str(cores)  # explicit: training on every core, torch's default
        else:  # 2 workers (the old default) beside torch's default threads (every core)
            env["VIDSEQ_THREADS"] = str(cores + 2)
            command += ["--workers", "2"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"child {part}/{setting} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(part: str, args: argparse.Namespace, cores: int, load: int) -> dict[str, dict]:
    best: dict[str, dict] = {}
    hogs = busy(load)
    try:
        time.sleep(0.5 if load else 0)
        for _ in range(args.repeats):
            for setting in ("before", "after"):
                got = run_child(part, setting, args, cores)
                if setting not in best or got["seconds"] < best[setting]["seconds"]:
                    best[setting] = got
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return best


def settings(part: str, r: dict) -> str:
    if part == "train":
        return f"{r['torch_threads']} thread(s), val acc {r['val_accuracy']:.2f}"
    return f"{r['workers']} worker(s) + {r['torch_threads']} thread(s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["train", "extract", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting (alternating); best counts")
    parser.add_argument("--load", type=int, default=1, help="busy processes beside the measured one in 'load'")
    parser.add_argument("--videos", type=int, default=256, help="train: sequences in the random store")
    parser.add_argument("--epochs", type=int, default=2, help="train: epochs")
    parser.add_argument("--videos-dir", type=Path, default=DEFAULT_VIDEOS, help="extract: a folder of videos")
    parser.add_argument("--count", type=int, default=16, help="extract: frames sampled per video")
    parser.add_argument("--child", choices=["train", "extract"], help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.workers != "auto":
            args.workers = int(args.workers)
        print(json.dumps((child_train if args.child == "train" else child_extract)(args)))
        return

    from vidseq.threads import thread_budget

    budget = thread_budget()
    print(f"{budget.cores} cores ({budget.source}); load average {os.getloadavg()[0]:.1f} at the start")
    print(f"train: GRU 256 on {args.videos} random sequences of 16x1280, {args.epochs} epochs, batch 32")
    print(f"extract: {args.videos_dir} ({args.count} frames per video, efficientnet_lite0)")
    print(f"best of {args.repeats}, before/after alternating; load: {args.load} busy process(es) beside\n")
    print(f"{'part':8} {'condition':9} {'before s':>9} {'after s':>8} {'before/after':>12}   settings (before | after)")
    for part in ["train", "extract"] if args.part == "all" else [args.part]:
        for load in (0, args.load):
            best = measure(part, args, budget.cores, load)
            before, after = best["before"], best["after"]

            print(
                f"{part:8} {'load' if load else 'quiet':9} {before['seconds']:9.1f} {after['seconds']:8.1f} "
                f"{before['seconds'] / after['seconds']:11.2f}x   {settings(part, before)} | {settings(part, after)}",
                flush=True,
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
