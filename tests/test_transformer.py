"""Tests of the temporal transformer head and of training that holds on a small dataset.

Model checks run on tiny inputs (D = 6, width 8): padding (even NaN/inf) never changes a
prediction, a causal model's ``step`` equals a full read of every prefix, lengths far beyond
training are read, checkpoints load with ``weights_only=True``, late fusion takes it as a member.
Training checks run on real EfficientNet-Lite0 features of the synthetic direction pairs (the
store of tests/test_train.py, smaller): the transformer learns the pairs with the GRU's
threshold, ``vidseq train -o model.name=transformer`` runs end to end, and early stopping counts
optimiser steps on a dataset of 3 steps per epoch and says why it stopped.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseq.config import BackboneConfig, ExtractConfig, ModelConfig, SamplingConfig, SynthConfig, TrainConfig
from vidseq.datasets import discover
from vidseq.errors import ConfigError
from vidseq.features import extract
from vidseq.models import (
    LateFusion,
    Member,
    ModelError,
    TransformerClassifier,
    build_model,
    load_model,
    make_checkpoint,
    pad_sequences,
)
from vidseq.synth import generate_dataset
from vidseq.training.train import train

DIM, CLASSES = 6, 3
LENGTHS = (7, 3, 5, 1)
CONFIGS = [
    {"pooling": "mean"},
    {"pooling": "cls"},
    {"pooling": "last"},
    {"pooling": "attention", "num_layers": 1},
    {"causal": True, "pooling": "last"},
    {"causal": True, "pooling": "mean", "num_layers": 3},
    {"center": True, "streams": [["appearance", 4], ["motion", 2]]},
]


def _model(seed: int = 0, **options) -> TransformerClassifier:
    torch.manual_seed(seed)
    options.setdefault("hidden_size", 8)
    options.setdefault("num_heads", 2)
    return build_model("transformer", input_dim=DIM, num_classes=CLASSES, **options).eval()


def _sequences(lengths=LENGTHS, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(length, DIM, generator=gen) for length in lengths]


@pytest.mark.parametrize("options", CONFIGS, ids=str)
@pytest.mark.parametrize("fill", [0.0, 1e6, float("nan"), float("inf")])
def test_padding_never_changes_a_prediction(options, fill):
    model, sequences = _model(**options), _sequences()
    padded, lengths = pad_sequences(sequences, padding_value=fill)
    with torch.no_grad():
        batch = model(padded, lengths)
        alone = torch.cat([model(s[None]) for s in sequences])
        clean = model(*pad_sequences(sequences))
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch, clean, atol=0, rtol=0)  # the padding's values: no effect at all
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)  # a batch reads like one video at a time


def test_order_matters_and_centring_removes_the_scene():
    model, seq = _model(center=True), _sequences((6,))[0]
    with torch.no_grad():
        plain, shifted, flipped = model(seq[None]), model((seq + 3.0)[None]), model(seq.flip(0)[None])
    torch.testing.assert_close(plain, shifted, atol=1e-5, rtol=0)
    assert not torch.allclose(plain, flipped, atol=1e-4)
    assert not model.supports_streaming


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_causal_steps_equal_full_reads_of_every_prefix(pooling, chunk):
    model = _model(causal=True, pooling=pooling, num_layers=2)
    assert model.supports_streaming
    features = torch.randn(2, 10, DIM, generator=torch.Generator().manual_seed(1))
    state = None
    with torch.no_grad():
        for start in range(0, 10, chunk):
            logits, state = model.step(features[:, start : start + chunk], state)
            prefix = model(features[:, : min(start + chunk, 10)])
            torch.testing.assert_close(logits, prefix, atol=1e-5, rtol=0)
        # the future never reaches the past: a causal read of a prefix ignores later frames
        changed = features.clone()
        changed[:, 5:] = 100.0
        assert torch.equal(model(features[:, :5]), model(changed[:, :5]))


def test_a_last_chunk_shorter_for_some_videos():
    model = _model(causal=True, pooling="mean")
    features = torch.randn(2, 7, DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, state = model.step(features[:, :4])
        tail = features[:, 4:].clone()
        tail[1, 1:] = float("nan")  # video 1 ends after 5 frames
        logits, _ = model.step(tail, state, lengths=torch.tensor([3, 1]))
        whole = model(features, torch.tensor([7, 5]))
    torch.testing.assert_close(logits, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [{}, {"pooling": "cls"}, {"center": True, "causal": True}])
def test_streaming_is_refused_where_it_cannot_be_exact(options):
    model = _model(**options)
    assert not model.supports_streaming
    with pytest.raises(ModelError, match="streaming \\(step\\) needs a transformer with causal=true"):
        model.step(torch.randn(1, 2, DIM))


def test_a_bad_state_is_refused():
    model = _model(causal=True, pooling="last")
    _, state = model.step(torch.randn(1, 2, DIM))
    with pytest.raises(ModelError, match="state must be the tuple of 7 tensors"):
        model.step(torch.randn(1, 2, DIM), state[:-1])
    with pytest.raises(ModelError, match="state does not fit a batch of 2"):
        model.step(torch.randn(2, 2, DIM), state)


def test_lengths_far_beyond_training_are_read():
    """Sinusoidal positions: 1024 steps need no rule of their own, and a long read is finite."""
    model = _model(causal=True, pooling="last")
    long = torch.randn(1, 1024, DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(long)
        logits, _ = model.step(long[:, 1000:], model.step(long[:, :1000])[1])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(logits, out, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"hidden_size": 10, "num_heads": 4}, "hidden_size must be a multiple of num_heads=4, got 10"),
        ({"causal": True, "pooling": "cls"}, "pooling 'cls' reads a class token"),
        ({"pooling": "max"}, "pooling must be one of last, mean, attention, cls; got 'max'"),
        ({"num_heads": 0}, "num_heads must be an integer >= 1, got 0"),
        ({"causal": "yes"}, "causal must be true or false"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("transformer", input_dim=DIM, num_classes=CLASSES, **options)


@pytest.mark.parametrize(
    "options",
    [{"pooling": "cls"}, {"causal": True, "pooling": "mean", "streams": [["appearance", 4], ["motion", 2]]}],
    ids=str,
)
def test_checkpoint_round_trip_with_weights_only(options, tmp_path):
    model = _model(seed=3, **options)
    torch.save(make_checkpoint("transformer", model), tmp_path / "model.pt")
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    json.dumps(checkpoint["hparams"])  # plain JSON types only
    rebuilt = load_model(checkpoint)
    assert isinstance(rebuilt, TransformerClassifier) and rebuilt.hparams == model.hparams and not rebuilt.training
    padded, lengths = pad_sequences(_sequences())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(padded, lengths), model(padded, lengths), atol=0, rtol=0)


def test_a_late_fusion_member_and_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    members = [
        Member("appearance", "transformer", build_model("transformer", input_dim=4, num_classes=CLASSES), 0, 4),
        Member("motion", "gru", build_model("gru", input_dim=2, num_classes=CLASSES, hidden_size=4), 4, 6),
    ]
    fused = LateFusion(members, [0.6, 0.4]).eval()
    torch.save(make_checkpoint("late_fusion", fused), tmp_path / "fused.pt")
    rebuilt = load_model(torch.load(tmp_path / "fused.pt", weights_only=True))
    padded, lengths = pad_sequences(_sequences())
    with torch.no_grad():
        expected = 0.6 * members[0].model.eval()(padded[..., :4], lengths).softmax(1)
        expected += 0.4 * members[1].model.eval()(padded[..., 4:], lengths).softmax(1)
        torch.testing.assert_close(rebuilt(padded, lengths).exp(), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ training on real features

PAIRS = (("move_left", "move_right"), ("grow", "shrink"))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """4 classes (two time-reversed pairs) x 14 videos, real features with 2x2 grid pooling."""
    work = tmp_path_factory.mktemp("pairs")
    classes = [name for pair in PAIRS for name in pair]
    generate_dataset(work / "synth", SynthConfig(classes=classes, videos_per_class=14, num_frames=12, size=96, seed=3))
    result = extract(
        discover(work / "synth" / "labels.csv"),
        out=work / "features",
        backbone=BackboneConfig(pooling="grid2", input_size=128),
        sampling=SamplingConfig(count=8),
        config=ExtractConfig(num_workers=1, batch_size=32),
        progress=False,
    )
    assert result.ok
    return result.store.directory


def _pair_accuracy(run: Path, store_dir: Path) -> float:
    """Accuracy between the two classes of each pair on the val+test videos (order decides)."""
    from vidseq.training.evaluate import predict_proba
    from vidseq.training.sequences import load_sequences

    state = torch.load(run / "best.pt", weights_only=True)
    model, data, labels = load_model(state["model"]), load_sequences(store_dir), state["labels"]
    held = [i for i, p in enumerate(data.paths) if state["splits"][p] in ("val", "test")]
    probs = predict_proba(model, [data.features[i] for i in held])
    correct = []
    for a, b in PAIRS:
        ia, ib = labels.index(a), labels.index(b)
        correct += [(ia if p[ia] >= p[ib] else ib) == t for p, t in zip(probs, data.targets[held]) if t in (ia, ib)]
    return sum(correct) / len(correct)


@pytest.mark.slow
def test_the_transformer_learns_the_order_pairs(tmp_path, store_dir):
    """The GRU's threshold in tests/test_train.py (0.85). 40 training clips, 2 optimiser steps per
    epoch, the default early stopping (patience 10 epochs and 100 steps: it cannot stop early in 30
    epochs of 2 steps, where patience in epochs alone could stop at epoch 11)."""
    result = train(
        model_config=ModelConfig(name="transformer", hidden_size=128),  # pooling last, centred: the defaults
        config=TrainConfig(features=str(store_dir), epochs=30, seed=0),
        out=tmp_path / "run",
        overwrite=True,
        progress=False,
    )
    assert not result.stopped_early and result.stop_reason.startswith("ran all 30 epochs (60 optimiser steps")
    assert _pair_accuracy(result.out, store_dir) >= 0.85


def test_small_data_early_stopping_counts_optimiser_steps_and_says_why(tmp_path, store_dir):
    """40 training clips in batches of 14: 3 optimiser steps per epoch, like 75 clips in 32s.

    A learning rate too small to change anything: val never improves after epoch 1, so early
    stopping fires where the rule says: after the warm-up (10 steps: epochs 2-3 do not count),
    ``patience`` epochs that hold ``patience_steps`` steps (2 epochs alone would be 6 steps).
    """
    config = TrainConfig(features=str(store_dir), epochs=40, batch_size=14, lr=1e-12, patience=2, patience_steps=12)
    result = train(model_config=ModelConfig(hidden_size=16), config=config, out=tmp_path / "run", progress=False)
    assert result.stopped_early and result.best_epoch == 1
    assert len(result.history) == 3 + math.ceil(12 / 3)  # the warm-up's epochs, then 4 epochs of 3 steps
    assert result.stop_reason.startswith("early stopping after epoch 7 of 40: val accuracy did not improve for 4")
    assert "(12 optimiser steps; patience 2 epochs and 12 steps); best val accuracy at epoch 1" in result.stop_reason


@pytest.mark.slow
def test_vidseq_train_with_a_transformer_end_to_end(tmp_path, store_dir):
    """``vidseq train -o model.name=transformer``: a causal transformer in best.pt (weights_only),
    and the summary says how the run ended."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vidseq", "train", str(store_dir), "--out", str(out), "-q"]
    overrides = ["model.name=transformer", "model.causal=true", "model.hidden_size=32", "train.batch_size=14"]
    overrides.append("train.epochs=3")
    done = subprocess.run(
        command + [arg for o in overrides for arg in ("-o", o)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "ran all 3 epochs (9 optimiser steps, 3 per epoch); best val accuracy at epoch" in done.stdout
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["model"]["name"] == "transformer" and state["model"]["hparams"]["causal"] is True
    model = load_model(state["model"])
    assert isinstance(model, TransformerClassifier) and model.hparams["hidden_size"] == 32
