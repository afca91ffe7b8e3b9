"""Learning where the body's motion is the class and the scene is not: playback of real clips.

synth --kind playback (windows of the shared real clips played forward and reversed, or also
faster, slower, frozen; every window under every class, so the scene says nothing; split by
source clip, so val and test clips are never seen in training) -> extract the streams asked for
(appearance always; motion; pose where extraction has it) -> train GRU and mean-pool on each
stream alone and late fusion over all of them -> test accuracy, mean and spread over seeds,
per (model, streams), beside chance. Each seed splits the source clips anew (the windows and
their features stay the same: later seeds reuse the first seed's entries) and seeds the models.
Run by hand (a few minutes per seed on 2 busy cores):

    python benchmarks/playback.py --streams appearance,motion
    python benchmarks/playback.py --streams appearance,motion,pose --classes forward,reversed,faster,slower
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path("/work/shared/data/action-clips")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SHARED, help="folder of real videos (split by video)")
    parser.add_argument("--work", type=Path, default=Path("runs/playback"))
    parser.add_argument("--classes", default="forward,reversed", help="from forward,reversed,faster,slower,frozen")
    parser.add_argument("--streams", default="appearance,motion", help="from appearance,motion,pose")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--fps", type=float, default=16.0, help="clip frame rate (--frames / --fps s a clip)")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the clips")
    parser.add_argument("--windows", type=int, default=6, help="windows per source clip")
    parser.add_argument("--count", type=int, default=16, help="frames sampled per clip (uniform)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--models", default="gru,meanpool")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2, help="thread budget (vidseq --threads)")
    return parser.parse_args()


def make_store(args: argparse.Namespace, seed: int, streams: list[str], first: Path | None) -> tuple[Path, list[str]]:
    """Write the dataset of ``seed``, extract its streams (reusing ``first``'s entries); the
    appearance store and the streams it has (pose is dropped, with a message, where unavailable)."""
    from vidseq.config import MotionConfig, PoseConfig, SynthConfig
    from vidseq.errors import VidseqError
    from vidseq.synth import generate_dataset

    work = args.work / f"seed{seed}"
    synth = SynthConfig(
        kind="playback", source=str(args.source), classes=args.classes.split(","), num_frames=args.frames,
        fps=args.fps, size=args.size, windows_per_source=args.windows, seed=seed,
    )  # fmt: skip
    generate_dataset(work / "synth", synth, overwrite=True)
    options = {"motion": MotionConfig(enabled=True)} if "motion" in streams else {}
    if "pose" in streams:
        options["pose"] = PoseConfig(enabled=True)
    start = time.perf_counter()
    try:
        result = _extract(work, args, options, first)
    except (TypeError, VidseqError) as exc:  # TypeError: this extract() has no pose argument yet
        if "pose" not in options:
            raise
        print(f"  pose: skipped, extraction cannot make it here ({str(exc).splitlines()[0]})", flush=True)
        options.pop("pose")
        streams = [s for s in streams if s != "pose"]
        result = _extract(work, args, options, first)
    print(f"  extracted {', '.join(streams)} in {time.perf_counter() - start:.0f} s -> {result.store.directory}")
    return Path(result.store.directory), streams


def _extract(work: Path, args: argparse.Namespace, options: dict, first: Path | None):  # noqa: ANN202 - ExtractResult
    from vidseq.config import SamplingConfig
    from vidseq.datasets import discover
    from vidseq.features import extract

    return extract(
        discover(work / "synth" / "labels.csv"),
        out=work / "features",
        sampling=SamplingConfig(count=args.count),
        reuse_from=[first] if first is not None else (),
        progress=False,
        **options,
    )


def run(store: Path, args: argparse.Namespace, model: str, streams: list[str], seed: int) -> dict:
    from vidseq.config import ModelConfig, TrainConfig
    from vidseq.training.train import train

    name = "+".join(streams)
    config = TrainConfig(
        epochs=args.epochs, seed=seed, lr=args.lr, streams=streams, fusion="late",
        out=str(args.work / f"seed{seed}" / "runs" / f"{model}-{name}"),
    )  # fmt: skip
    start = time.perf_counter()
    result = train(model_config=ModelConfig(name=model), config=config, features=store, overwrite=True, progress=False)
    fit = [row["train_accuracy"] for row in result.history if "train_accuracy" in row]  # single stream only
    return {
        "model": model,
        "streams": name,
        "seed": seed,
        "val": result.val["accuracy"],
        "test": result.test["accuracy"] if result.test else float("nan"),
        "n_test": result.test["num_samples"] if result.test else 0,
        "train_max": max(fit) if fit else float("nan"),
        "weights": (result.extra.get("fusion") or {}).get("weights"),
        "seconds": time.perf_counter() - start,
    }


def table(rows: list[dict], classes: list[str]) -> None:
    print(f"\ntest accuracy on unseen source clips, mean ± std over seeds (chance {1 / len(classes):.2f}):")
    print(f"{'model':9s} {'streams':28s} {'test':>13s} {'val':>13s} {'train max':>9s}  per seed")
    for key in dict.fromkeys((r["model"], r["streams"]) for r in rows):
        group = [r for r in rows if (r["model"], r["streams"]) == key]
        test, val = np.array([r["test"] for r in group]), np.array([r["val"] for r in group])
        fit = f"{np.mean([r['train_max'] for r in group]):9.2f}" if len(key[1].split("+")) == 1 else f"{'-':>9s}"
        seeds = " ".join(f"{t:.2f}" for t in test)
        print(
            f"{key[0]:9s} {key[1]:28s} {test.mean():.3f} ± {test.std():.3f} {val.mean():.3f} ± {val.std():.3f} "
            f"{fit}  {seeds}"
        )


def main() -> None:
    args = parse_args()
    os.environ["VIDSEQ_THREADS"] = str(args.threads)  # before vidseq sets any library's threads
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's (pose) per-frame log lines
    classes, asked = args.classes.split(","), args.streams.split(",")
    rows, first = [], None
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"seed {seed}: {args.classes} windows of {args.source}", flush=True)
        store, streams = make_store(args, seed, asked, first)
        first = first or store.parent
        variants = [[s] for s in streams] + ([streams] if len(streams) > 1 else [])
        for model in args.models.split(","):
            for chosen in variants:
                row = run(store, args, model, chosen, seed)
                rows.append(row)
                weights = f"  weights {[round(float(w), 2) for w in row['weights']]}" if row["weights"] else ""
                print(
                    f"  {model:9s} {row['streams']:28s} val {row['val']:.3f} test {row['test']:.3f} "
                    f"(N={row['n_test']}, train max {row['train_max']:.2f}, {row['seconds']:.0f} s){weights}".replace(
                        "train max nan, ", ""
                    ),
                    flush=True,
                )
    table(rows, classes)


if __name__ == "__main__":
    main()
