"""The models' declared stream layout: each stream's own input treatment, statistics fitted on the
training split and kept in the checkpoint, old ``motion_dims`` checkpoints still loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseq.config import ModelConfig, TrainConfig
from vidseq.errors import ConfigError
from vidseq.models import StreamInput, build_model, fit_stream_stats, load_model, make_checkpoint, pad_sequences
from vidseq.training.optim import build_optimisation
from vidseq.training.sequences import SequenceSet

POSE = 6  # a small pose-like stream: 5 numbers, then the presence flag
LAYOUT = [["appearance", 4], ["motion", 3], ["pose", POSE]]
DIM = 4 + 3 + POSE


def _frames(n: int, rng: np.random.Generator, *, motion_scale: float = 1.0, present: float = 0.8) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x[:, 4:7] = x[:, 4:7] * 0.05 * motion_scale + 0.3 * motion_scale  # small flow, far from zero mean
    x[:, 7:12] = x[:, 7:12] * 2.0 + 1.5
    flag = (rng.random(n) < present).astype(np.float32)
    x[:, 12] = flag
    x[flag == 0, 7:12] = 0.0  # nobody: zeros, as vidseq.features.pose writes them
    return x


def test_the_layout_is_checked_and_defaults_to_one_appearance_stream():
    assert build_model("gru", input_dim=5, num_classes=2).hparams["streams"] == [["appearance", 5]]
    for bad, match in [
        ([["appearance", 4]], "covers 4 dims, but input_dim is 5"),
        ([["appearance", 3], ["appearance", 2]], "names 'appearance' twice"),
        ([["appearance", 5, 1]], r"each entry must be \[name, dims >= 1\]"),
        ([["motion", 0], ["appearance", 5]], r"each entry must be \[name, dims >= 1\]"),
        ("appearance", "must be a list"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build_model("gru", input_dim=5, num_classes=2, streams=bad)


def test_statistics_come_from_present_pose_frames_and_absent_frames_stay_zero():
    rng = np.random.default_rng(0)
    train = [_frames(30, rng) for _ in range(5)]
    shift, scale = fit_stream_stats(train, LAYOUT)
    frames = np.concatenate(train)
    present = frames[frames[:, 12] > 0.5]
    np.testing.assert_array_equal(shift[:4], 0) and np.testing.assert_array_equal(scale[:4], 1)
    np.testing.assert_allclose(shift[4:7], frames[:, 4:7].mean(0), rtol=1e-5)
    np.testing.assert_allclose(shift[7:12], present[:, 7:12].mean(0), rtol=1e-5)  # not pulled to 0 by absent frames
    np.testing.assert_allclose(scale[7:12], present[:, 7:12].std(0), rtol=1e-5)
    assert (shift[12], scale[12]) == (0.0, 1.0)  # the flag passes as it is

    layer = StreamInput(LAYOUT)
    layer.set_stats(shift, scale)
    x = torch.from_numpy(np.stack(train))  # (5, 30, D)
    y = layer(x, torch.ones(x.shape[:2], dtype=torch.bool))
    absent = x[..., 12] == 0
    assert absent.any() and bool((y[absent][:, 7:12] == 0).all())  # nobody: zeros, not minus the mean posture
    torch.testing.assert_close(y[..., 12], x[..., 12])
    standardised = y[~absent][:, 7:12]
    assert standardised.mean(0).abs().max() < 0.2 and (standardised.std(0) - 1).abs().max() < 0.2
    motion = y[..., 4:7].reshape(-1, 3)
    assert motion.mean(0).abs().max() < 1e-4 and (motion.std(0, unbiased=False) - 1).abs().max() < 1e-3


def test_standardisation_makes_a_streams_scale_irrelevant():
    """Flow of real clips is ~0.55 % of the frame per frame, the camera synth's pans 4.3 %: after the
    fitted standardisation the model reads the same numbers whatever the stream's scale."""
    rng = np.random.default_rng(1)
    small = [_frames(20, rng) for _ in range(4)]
    large = [f.copy() for f in small]
    for f in large:
        f[:, 4:7] *= 8.0
    outputs = []
    for data in (small, large):
        layer = StreamInput(LAYOUT)
        layer.set_stats(*fit_stream_stats(data, LAYOUT))
        x = torch.from_numpy(np.stack(data))
        outputs.append(layer(x, torch.ones(x.shape[:2], dtype=torch.bool)))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)


def _sequence_set(rng: np.random.Generator) -> SequenceSet:
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    features = [
        _frames(12, rng, motion_scale=1.0 if split == "train" else 50.0)  # val/test on another scale
        for split in splits
    ]
    return SequenceSet(
        features=features,
        targets=np.array([i % 2 for i in range(len(splits))]),
        labels=["a", "b"],
        paths=[f"v{i}.mp4" for i in range(len(splits))],
        splits=splits,
        streams=[(name, dims) for name, dims in LAYOUT],
    )


@pytest.mark.parametrize("name", ["gru", "meanpool", "tcn", "transformer"])
def test_training_fits_the_statistics_on_the_training_split_only_and_the_checkpoint_keeps_them(name):
    data = _sequence_set(np.random.default_rng(2))
    opt = build_optimisation(ModelConfig(name=name, hidden_size=8), TrainConfig(), data, torch.device("cpu"))
    model = opt.model
    assert model.hparams["streams"] == LAYOUT
    train = np.concatenate([f for f, s in zip(data.features, data.splits) if s == "train"])
    np.testing.assert_allclose(model.input.shift[4:7].numpy(), train[:, 4:7].mean(0), rtol=1e-5)  # not val/test's
    checkpoint = make_checkpoint(name, model)
    assert {"input.shift", "input.scale"} <= set(checkpoint["state_dict"])
    rebuilt = load_model(checkpoint)
    padded, lengths = pad_sequences(data.features[:4])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(padded, lengths), model.eval()(padded, lengths), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["gru", "meanpool", "transformer"])
def test_a_checkpoint_from_before_layouts_loads_and_predicts_as_it_did(name):
    """Checkpoints of earlier versions: ``motion_dims`` in hparams, the LayerNorm at ``norm.``, no
    statistics. They load as [appearance, motion] with identity statistics: the same outputs."""
    torch.manual_seed(0)
    options = {"hidden_size": 8, "streams": [["appearance", 5], ["motion", 3]]}
    if name == "gru":
        options["center"] = True
    model = build_model(name, input_dim=8, num_classes=3, **options).eval()
    new = make_checkpoint(name, model)
    hparams = {k: v for k, v in new["hparams"].items() if k != "streams"} | {"motion_dims": 3}
    state = {k.replace("input.norm.", "norm."): v for k, v in new["state_dict"].items() if not k.startswith("input.s")}
    old = {"name": name, "hparams": hparams, "state_dict": state}
    rebuilt = load_model(old)
    assert rebuilt.hparams["streams"] == [["appearance", 5], ["motion", 3]]
    padded, lengths = pad_sequences([torch.randn(7, 8), torch.randn(3, 8)])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(padded, lengths), model(padded, lengths), atol=0, rtol=0)


def test_centring_reaches_the_appearance_dims_only():
    """``model.center`` subtracts each video's mean appearance; motion and pose are never centred
    (a constant pan, a held posture are the signal)."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(np.stack([_frames(10, rng) for _ in range(2)]))
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    centred, plain = StreamInput(LAYOUT, center=True), StreamInput(LAYOUT, center=False)
    shift, scale = fit_stream_stats(list(x.numpy()), LAYOUT)
    for layer in (centred, plain):
        layer.set_stats(shift, scale)
    a, b = centred(x, mask), plain(x, mask)
    torch.testing.assert_close(a[..., 4:], b[..., 4:], atol=0, rtol=0)
    scene = x.clone()
    scene[..., :4] += 5.0  # another scene: a constant offset on the appearance dims
    torch.testing.assert_close(centred(scene, mask)[..., :4], a[..., :4], atol=1e-5, rtol=0)
