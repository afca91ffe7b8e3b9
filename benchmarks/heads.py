"""LSTM, GRU, bidirectional GRU, transformer, TCN or mean-pool? Every head on the same stored
features, in one run, with ratios against the GRU measured in that run.

Tasks (real EfficientNet-Lite0 features of vidseq's order-dependent synthetic datasets; stores
cached under ``--work``, a folder in the system temp dir by default, never the repo):
  shapes  ``vidseq synth`` shapes, all 8 classes (move_left/right, grow/shrink, ... time-reversed
          pairs), appearance features (2x2 grid), 8 frames per clip
  camera  ``vidseq synth --kind camera`` (pan/zoom/rotate over real photos, split by photo) with
          the motion stream (DIS optical flow), early fusion: appearance + motion per frame
  probe   the memory probe of benchmarks/memory_probe.py at one tail length (``--probe-tail``)
Per head: test accuracy (mean and min-max over ``--seeds``; each seed a new split and init),
parameters, training sequences/s, inference latency for one sequence and a batch of 256 (T =
16), peak training memory as the bytes autograd saves for backward (batch 32 x T = 256; counted
with saved_tensors_hooks, exact, where RSS on a shared machine is noise), and
how the time of one forward + backward (batch 32) grows with T = 16..1024 (ratio to T = 16). The
training recipe is the same for every head (benchmarks/memory_probe.train_head: AdamW, warm-up +
cosine, clip 1.0, fixed epochs, the last model). The memory probe's own table (every L):
benchmarks/memory_probe.py. Run by hand:  python benchmarks/heads.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory_probe import DEFAULT_WORK, HEADS, accuracy, load_clips, make_probe, probe_store, train_head  # noqa: E402

from vidseq.config import BackboneConfig, ExtractConfig, MotionConfig, SamplingConfig, SynthConfig  # noqa: E402
from vidseq.datasets import discover  # noqa: E402
from vidseq.features import FeatureStore, extract  # noqa: E402
from vidseq.models import build_model  # noqa: E402
from vidseq.synth import generate_dataset  # noqa: E402
from vidseq.training.sequences import assign_splits, load_sequences, stream_stores  # noqa: E402


def task_store(work: Path, kind: str, *, per_class: int) -> Path:
    """The appearance store of a synth kind (with the motion stream for camera), cached."""
    root = work / f"heads-{kind}-{per_class}"
    features = root / "features"
    if (root / "store.txt").is_file():
        return Path((root / "store.txt").read_text().strip())
    generate_dataset(
        root / "synth", SynthConfig(kind=kind, videos_per_class=per_class, num_frames=16, size=96), overwrite=True
    )
    result = extract(
        discover(root / "synth" / "labels.csv"),
        out=features,
        backbone=BackboneConfig(pooling="grid2" if kind == "shapes" else "avg", input_size=128),
        sampling=SamplingConfig(count=8),
        motion=MotionConfig(enabled=kind == "camera"),
        config=ExtractConfig(num_workers=1, batch_size=64),
        progress=False,
    )
    (root / "store.txt").write_text(str(result.store.directory))
    return result.store.directory


def task_data(store: Path, kind: str, seed: int) -> tuple[dict, int, dict]:
    """Train/test sequences of a task (vidseq's split, by photo for camera) and the head options
    its streams need (the declared layout: only the appearance dims are centred and LayerNorm'd)."""
    streams = ["appearance", "motion"] if kind == "camera" else ["appearance"]
    data = load_sequences(stream_stores(FeatureStore.load_existing(store), streams))
    data = assign_splits(data, val_fraction=0.0, test_fraction=0.3, seed=seed)
    out = {}
    for split in ("train", "test"):
        keep = [i for i, s in enumerate(data.splits) if s == split]
        out[split] = ([data.features[i].astype(np.float32) for i in keep], data.targets[keep])
    return out, len(data.labels), {"streams": [[name, dims] for name, dims in data.streams]}


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(head: str, dims: int, lengths: list[int]) -> dict:
    """Parameters, latency of one sequence and of 256, and forward+backward time per T."""
    table, options = HEADS[head]
    torch.manual_seed(0)
    model = build_model(table, input_dim=dims, num_classes=8, **options).eval()
    row = {"params": sum(p.numel() for p in model.parameters())}
    one, batch = torch.randn(1, 16, dims), torch.randn(256, 16, dims)
    with torch.inference_mode():
        row["latency_1_ms"] = 1e3 * timed(lambda: model(one), 20)
        row["latency_256_ms"] = 1e3 * timed(lambda: model(batch), 3)
    model.train()
    for steps in lengths:
        x, y = torch.randn(32, steps, dims), torch.randint(0, 8, (32,))

        def step(x=x, y=y):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()

        row[f"fb_{steps}_ms"] = 1e3 * timed(step, 2 if steps >= 512 else 3)
    if table in ("lstm", "gru", "transformer") and not options.get("bidirectional"):
        row.update(stream_latency(head, dims))
    return row


def stream_latency(head: str, dims: int) -> dict:
    """ms per ``step`` of one frame, at prefix 16 and 1024 (transformer: causal, KV cache)."""
    table, options = HEADS[head]
    options = {**options, "center": False}
    if table == "transformer":
        options["causal"] = True
    model = build_model(table, input_dim=dims, num_classes=8, **options).eval()
    frames, out = torch.randn(1, 1040, dims), {}
    with torch.inference_mode():
        state, times = None, {}
        for t in range(1040):
            start = time.perf_counter()
            _, state = model.step(frames[:, t : t + 1], state)
            times[t] = time.perf_counter() - start
    for prefix in (16, 1024):
        out[f"step_{prefix}_ms"] = 1e3 * statistics.median(times[t] for t in range(prefix, prefix + 16))
    return out


def activation_memory(head: str, dims: int, steps: int = 256) -> float:
    """MB of the tensors autograd saves for backward in one training step (batch 32 x ``steps``):
    the memory that grows with batch and length (counted exactly, unlike a noisy RSS)."""
    table, options = HEADS[head]
    torch.manual_seed(0)
    model = build_model(table, input_dim=dims, num_classes=8, **options).train()
    x, y = torch.randn(32, steps, dims), torch.randint(0, 8, (32,))
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()  # a storage saved twice counts once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return sum(seen.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--tasks", default="shapes,camera,probe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=16, help="synth clips per class (shapes, camera)")
    parser.add_argument("--epochs", type=int, default=25, help="epochs on shapes/camera")
    parser.add_argument("--probe-tail", type=int, default=64, help="distractor steps of the probe")
    parser.add_argument("--probe-epochs", type=int, default=12)
    parser.add_argument("--lengths", default="16,64,256,1024", help="T for the time-vs-length rows")
    parser.add_argument("--no-speed", action="store_true", help="accuracy only")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heads, tasks, seeds = args.heads.split(","), args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    lengths = [int(t) for t in args.lengths.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
    acc: dict[tuple[str, str], list[float]] = {}
    rates: dict[str, list[float]] = {h: [] for h in heads}
    for task in tasks:
        start = time.perf_counter()
        if task == "probe":
            splits, labels = load_clips(probe_store(args.work), dims=64, seed=0)
        else:
            store = task_store(args.work, task, per_class=args.per_class)
        print(f"{task}: store ready in {time.perf_counter() - start:.0f} s", flush=True)
        for seed in seeds:
            if task == "probe":
                rng = np.random.default_rng([seed, args.probe_tail])
                train = make_probe(splits["train"], tail=args.probe_tail, count=256, rng=rng)
                test = make_probe(splits["test"], tail=args.probe_tail, count=256, rng=rng)
                classes, extra, epochs = len(labels), {}, args.probe_epochs
            else:
                data, classes, extra = task_data(store, task, seed)
                train, test, epochs = data["train"], data["test"], args.epochs
            for head in heads:
                model, rate = train_head(head, *train, num_classes=classes, epochs=epochs, seed=seed, options=extra)
                acc.setdefault((task, head), []).append(accuracy(model, *test))
                rates[head].append(rate)
                print(
                    f"  {task} seed {seed} {head:12s} test {acc[(task, head)][-1]:.3f} ({rate:.0f} seq/s)", flush=True
                )
    speed_rows = {}
    if not args.no_speed:
        for head in heads:
            speed_rows[head] = {**speed(head, 64, lengths), "peak_mb": activation_memory(head, 64)}
            print(f"  speed {head}: {json.dumps({k: round(v, 2) for k, v in speed_rows[head].items()})}", flush=True)
    print_tables(heads, tasks, acc, rates, speed_rows, lengths, seeds)
    if args.json:
        args.json.write_text(json.dumps({"acc": {f"{t}/{h}": v for (t, h), v in acc.items()}, "speed": speed_rows}))


def print_tables(heads, tasks, acc, rates, speed_rows, lengths, seeds) -> None:
    ref = "gru" if "gru" in heads else heads[0]
    print(f"\ntest accuracy, mean (min-max) over seeds {seeds}:")
    print("| head | " + " | ".join(tasks) + " | params | train seq/s (x GRU) |")
    print("|---" * (len(tasks) + 3) + "|")
    for head in heads:
        cells = []
        for task in tasks:
            v = acc[(task, head)]
            cells.append(f"{np.mean(v):.3f} ({min(v):.2f}-{max(v):.2f})")
        params = speed_rows.get(head, {}).get("params", "")
        rate = np.mean(rates[head])
        cells += [f"{params:,}" if params != "" else "-", f"{rate:.0f} ({rate / np.mean(rates[ref]):.2f}x)"]
        print(f"| {head} | " + " | ".join(cells) + " |")
    if not speed_rows:
        return
    print(f"\nspeed on CPU (D = 64 inputs; ratios against {ref} measured in this run):")
    header = "| head | 1 seq ms (x) | 256 seqs ms (x) | saved activations MB, 32 x 256 (x) | "
    header += (
        " | ".join(f"fwd+bwd T={t} ms" for t in lengths)
        + f" | T={lengths[-1]} / T={lengths[0]} | step ms @16 / @1024 |"
    )
    print(header)
    print("|---" * (6 + len(lengths)) + "|")
    base = speed_rows[ref]
    for head in heads:
        r = speed_rows[head]
        cells = [
            f"{r['latency_1_ms']:.2f} ({r['latency_1_ms'] / base['latency_1_ms']:.2f}x)",
            f"{r['latency_256_ms']:.1f} ({r['latency_256_ms'] / base['latency_256_ms']:.2f}x)",
            f"{r['peak_mb']:.0f} ({r['peak_mb'] / max(base['peak_mb'], 1e-9):.2f}x)",
        ]
        cells += [f"{r[f'fb_{t}_ms']:.1f}" for t in lengths]
        cells.append(f"{r[f'fb_{lengths[-1]}_ms'] / r[f'fb_{lengths[0]}_ms']:.0f}x")
        cells.append(f"{r['step_16_ms']:.2f} / {r['step_1024_ms']:.2f}" if "step_16_ms" in r else "-")
        print(f"| {head} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
