"""Prediction overhead and live-stream speed, each against a reference measured in the same run.

  (a) ``Predictor.predict`` over a folder of videos, videos/s, against the bare extraction
      (``vidseq.features.extract`` of the same videos, backbone, sampling and workers into a
      temporary store): the ratio is what prediction adds (bundling, reading back, the head).
  (b) ``stream_labels`` on one file read as a stream: its real-time factor (seconds of video
      processed per wall second; > 1 is faster than real time), against just reading every
      frame of the file with OpenCV as a stream (``read()`` + BGR -> RGB).

Needs a model: ``--model best.pt``, or the small synthetic model of ``tests/_trained.py`` is
trained into a temporary folder (about 15 s). Run by hand:  python benchmarks/predict.py --help
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from vidseq.datasets import VideoItem, discover_videos
from vidseq.features import extract
from vidseq.io import probe
from vidseq.predict import Predictor
from vidseq.predict.stream import stream_labels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = REPO.parent / "shared" / "data" / "action-clips"
DEFAULT_STREAM = DEFAULT_VIDEOS / "opencv_vtest_pedestrians_walking.avi"


def predict_rate(predictor: Predictor, paths: list[Path]) -> float:
    start = time.perf_counter()
    rows = predictor.predict(paths)
    seconds = time.perf_counter() - start
    failed = [row.path for row in rows if row.error]
    if failed:
        print(f"  (predict failed on {len(failed)}: {failed})")
    return len(paths) / seconds


def extract_rate(predictor: Predictor, paths: list[Path]) -> float:
    items = [VideoItem(path, None) for path in paths]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidseq-bench-") as out:
        extract(
            items,
            out=out,
            backbone=predictor.backbone,
            sampling=predictor.sampling,
            config=predictor.extract_config,
            io=predictor.io,
            progress=False,
        )
    return len(items) / (time.perf_counter() - start)


def stream_factor(predictor: Predictor, path: Path, window: float, hop: float) -> tuple[float, int, float]:
    """Real-time factor, labels emitted and mean latency of ``stream_labels`` on ``path``."""
    info = probe(path)
    start = time.perf_counter()
    labels = list(stream_labels(predictor, str(path), window=window, hop=hop))
    seconds = time.perf_counter() - start
    latency = sum(label.latency for label in labels) / max(1, len(labels))
    return info.duration / seconds, len(labels), latency


def read_factor(path: Path) -> float:
    """Real-time factor of reading every frame with OpenCV as a stream (nothing else)."""
    import cv2

    info = probe(path)
    capture = cv2.VideoCapture(str(path))
    start = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    seconds = time.perf_counter() - start
    capture.release()
    return info.duration / seconds


def load_model(model: Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if model is not None:
        return model, None
    sys.path.insert(0, str(REPO / "tests"))
    from _trained import train_small_model

    folder = tempfile.TemporaryDirectory(prefix="vidseq-bench-model-")
    start = time.perf_counter()
    checkpoint = train_small_model(Path(folder.name))
    print(f"trained the small model of tests/_trained.py in {time.perf_counter() - start:.1f} s")
    return checkpoint, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="best.pt of `vidseq train` (default: train a small one)",
    )
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of videos for (a)")
    parser.add_argument("--stream", type=Path, default=DEFAULT_STREAM, help="video file read as a stream for (b)")
    parser.add_argument("--window", type=float, default=2.0, help="(b) window, seconds")
    parser.add_argument("--hop", type=float, default=1.0, help="(b) hop, seconds")
    parser.add_argument("--repeat", type=int, default=2, help="(a) best of this many runs of each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the main process")
    parser.add_argument("--skip", choices=["a", "b"], default=None, help="leave one part out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint, folder = load_model(args.model)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    _ = predictor.backbone  # built once, outside every timing
    print(
        f"model {checkpoint}: {predictor.backbone_config.name}, sampling {predictor.sampling.mode} "
        f"x{predictor.sampling.count}, torch threads {args.threads}"
    )
    if args.skip != "a":
        paths = [item.path for item in discover_videos(args.videos).items]
        rates = {"predict": 0.0, "extract": 0.0}
        for _ in range(args.repeat):  # interleaved, best of each: the same cache state for both
            rates["extract"] = max(rates["extract"], extract_rate(predictor, paths))
            rates["predict"] = max(rates["predict"], predict_rate(predictor, paths))
        print(f"(a) {len(paths)} videos from {args.videos}, workers {predictor.extract_config.num_workers}")
        print(f"    Predictor.predict      {rates['predict']:7.2f} videos/s")
        print(f"    reference: extract     {rates['extract']:7.2f} videos/s")
        print(f"    predict / extract      {rates['predict'] / rates['extract']:7.2f}")
    if args.skip != "b":
        factor, count, latency = stream_factor(predictor, args.stream, args.window, args.hop)
        reference = read_factor(args.stream)
        rate = min(predictor.frame_rate(args.window), probe(args.stream).fps)
        print(f"(b) {args.stream.name}, window {args.window} s, hop {args.hop} s, {rate:g} sampled frames/s")
        print(
            f"    stream_labels          {factor:7.2f} x real time ({count} labels, "
            f"mean latency {latency * 1000:.0f} ms)"
        )
        print(f"    reference: cv2 read    {reference:7.2f} x real time")
        print(f"    stream / read          {factor / reference:7.2f}")
    if folder is not None:
        folder.cleanup()


if __name__ == "__main__":
    main()
