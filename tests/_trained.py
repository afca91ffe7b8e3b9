"""A small trained model for tests and benchmarks: synth clips -> features -> a GRU, ``best.pt``.

Place in the data flow: the whole chain ``synth -> extract -> train`` on a toy dataset (two
classes, 8 clips of 16 frames at 64 px, 8 sampled frames, 3 epochs; about 15 s on 2 cores),
so prediction tests have a real checkpoint with a recorded extraction recipe. Not a test module:
import it as ``from _trained import train_small_model`` (the tests folder is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

CLASSES = ["grow", "shrink"]


def train_small_model(root: Path, *, classes: list[str] | None = None, epochs: int = 3) -> Path:
    """Generate, extract and train under ``root``; return the path of ``best.pt``."""
    from vidseq.config import ExtractConfig, SamplingConfig, SynthConfig, TrainConfig
    from vidseq.datasets import discover
    from vidseq.features import extract
    from vidseq.synth import generate_dataset
    from vidseq.training.train import train

    root = Path(root)
    synth = SynthConfig(classes=classes or CLASSES, videos_per_class=8, num_frames=16, size=64)
    generate_dataset(root / "synth", synth)
    result = extract(
        discover(root / "synth" / "labels.csv"),
        out=root / "features",
        sampling=SamplingConfig(count=8),
        config=ExtractConfig(num_workers=0),
        progress=False,
    )
    if not result.ok:
        raise RuntimeError(f"extraction of the small dataset failed: {result.failed}")
    run = train(
        config=TrainConfig(features=str(result.store.directory), epochs=epochs, seed=0),
        out=root / "train",
        overwrite=True,
        progress=False,
    )
    return run.best_checkpoint


_TRAINED: dict[str, Path] = {}


def small_model(tmp_path_factory) -> Path:
    """``best.pt`` of the small model, trained once per test session (pass pytest's
    ``tmp_path_factory``); test modules share it through this cache."""
    if "best" not in _TRAINED:
        _TRAINED["best"] = train_small_model(tmp_path_factory.mktemp("small-model"))
    return _TRAINED["best"]
