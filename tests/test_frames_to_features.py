"""Frames -> features has one owner (``vidseq.backbones.FrameEncoder``): every path agrees.

For one video, the features of ``vidseq extract``, of ``vidseq predict --window`` (the grid it
embeds), of ``vidseq predict --stream`` (a file read as a live source) and of the MLflow pyfunc
model (``mlflow.pyfunc.load_model(...).predict``, through the Predictor) are compared frame by
frame, together with the fitted frames each path gave the encoder and the dtype its backbone
ran in. On CUDA (the ``gpu`` variant) this is where a skew showed: the stream ran fp32 while
extraction autocast to fp16/bf16, so a model trained on one was served the other.

Set-up, tiny: an 8-frame 64 px clip at 25 fps; efficientnet_lite0 at a 64 px input; the
recipe samples 8 frames uniformly (every frame), and a window of 8 / 25 s makes the window
and stream paths sample at 25 frames/s (every frame too), so all four see frames 0..7. The
extraction decodes with OpenCV (``io.backend=opencv``): the stream reads with OpenCV and resizes
as ``vidseq.io`` does after a decode, so only then are the fitted frames the same (PyAV resizes
with libswscale while decoding: on this clip up to 99 grey levels apart at 73 px).
The head is an untrained GRU: only the features matter here.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vidseq.backbones import FrameEncoder, autocast_dtype
from vidseq.cli import app
from vidseq.features import FeatureStore
from vidseq.predict import Predictor, write_bundle

FPS, NUM_FRAMES, SIZE = 25.0, 8, 64
WINDOW = NUM_FRAMES / FPS  # 8 frames per window at the recipe's rate: every frame of the clip
PATHS = ("extract", "window", "stream", "pyfunc")
# The stream embeds one frame per forward, the others the clip's 8 frames in one batch. CPU
# convolution kernels may pick their blocking by batch size, which reorders sums: here batches
# of 1..15 frames give bit-identical features, 16 differ by up to 1.3e-5 (features up to 6).
# The tolerance allows that and nothing real: bf16 autocast or one grey level more moves
# features by 0.1-0.4.
STREAM_ATOL = 5e-5
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)


class Seen:
    """What each path handed the encoder (fitted frames; its autocast dtype and channels_last),
    the dtypes its convolutions produced, and the features it handed on."""

    def __init__(self) -> None:
        self.path = ""
        self.frames: dict[str, list[np.ndarray]] = defaultdict(list)
        self.settings: dict[str, set] = defaultdict(set)
        self.conv_dtypes: dict[str, set] = defaultdict(set)
        self.features: dict[str, list[np.ndarray]] = defaultdict(list)
        self.indices: dict[str, list[np.ndarray]] = defaultdict(list)

    def conv_hook(self, module, inputs, output) -> None:
        if isinstance(module, torch.nn.Conv2d) and self.path:
            self.conv_dtypes[self.path].add(output.dtype)


@pytest.fixture()
def seen(monkeypatch) -> Seen:
    """Spies on the one encoder, on ``Predictor.features`` (extraction loop: files, windows,
    MLflow) and ``Predictor.vectors`` (a stream's frames), and on every convolution's output."""
    record = Seen()
    encode, features, vectors = FrameEncoder.encode, Predictor.features, Predictor.vectors

    @functools.wraps(encode)
    def spy_encode(self, frames):
        record.frames[record.path].append(torch.as_tensor(frames).cpu().numpy().copy())
        record.settings[record.path].add((self.autocast_dtype, self.channels_last))
        return encode(self, frames)

    @functools.wraps(features)
    def spy_features(self, *args, **kwargs):
        found, errors = features(self, *args, **kwargs)
        for item in found.values():
            record.features[record.path].append(item.features)
            record.indices[record.path].append(item.frame_indices)
        return found, errors

    @functools.wraps(vectors)
    def spy_vectors(self, *args, **kwargs):
        out = vectors(self, *args, **kwargs)
        record.features[record.path].append(out)
        return out

    monkeypatch.setattr(FrameEncoder, "encode", spy_encode)
    monkeypatch.setattr(Predictor, "features", spy_features)
    monkeypatch.setattr(Predictor, "vectors", spy_vectors)
    handle = torch.nn.modules.module.register_module_forward_hook(record.conv_hook)
    yield record
    handle.remove()


def write_clip(path: Path) -> Path:
    from vidseq.io import write_video
    from vidseq.synth import render_clip

    write_video(
        path,
        render_clip("grow", np.random.default_rng(3), num_frames=NUM_FRAMES, size=SIZE),
        fps=FPS,
    )
    return path


def cli(*args: str | Path) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)


def untrained_checkpoint(store: FeatureStore, dim: int, path: Path) -> Path:
    """A checkpoint whose head is an untrained GRU, with the store's extraction recipe."""
    from vidseq.models import build_model, make_checkpoint

    torch.manual_seed(0)
    gru = build_model("gru", input_dim=dim, num_classes=2, hidden_size=8).eval()
    torch.save(
        {"model": make_checkpoint("gru", gru), "labels": ["a", "b"], "extraction": store.recipe},
        path,
    )
    return path


def run_every_path(root: Path, device: str, seen: Seen, monkeypatch) -> None:
    """``vidseq extract``, ``predict --window``, ``predict --stream`` and the MLflow model on one clip."""
    import mlflow.pyfunc

    clip = write_clip(root / "clip.mp4")
    seen.path = "extract"
    recipe = f"-o io.backend=opencv -o sampling.count={NUM_FRAMES} -o backbone.input_size={SIZE}"
    cli("extract", clip, "--out", root / "features", *f"--workers 0 --device {device} -q".split(), *recipe.split())
    store = FeatureStore.load_existing(next((root / "features").glob("*/store.json")).parent)
    item = store.load(clip)
    seen.features["extract"].append(item.features)
    seen.indices["extract"].append(item.frame_indices)
    model = untrained_checkpoint(store, item.features.shape[1], root / "model.pt")

    windows = f"--model {model} --window {WINDOW} --hop {WINDOW / 2} --device {device}".split()
    seen.path = "window"
    cli("predict", clip, *windows, "--out", root / "w.csv", "-q", "--workers", "0")
    seen.path = "stream"
    cli("predict", "--stream", clip, *windows)

    seen.path = "pyfunc"
    model_dir = root / "mlflow-model"
    mlflow.pyfunc.save_model(
        model_dir,
        loader_module="vidseq.predict",
        data_path=str(write_bundle(model, root / "bundle")),
    )
    with monkeypatch.context() as patch:
        if device == "cpu":  # MLflow's loader (vidseq.predict._load_pyfunc) takes CUDA where there is one
            patch.setattr(torch.cuda, "is_available", lambda: False)
        frame = mlflow.pyfunc.load_model(str(model_dir)).predict([str(clip)])
    assert frame["error"].tolist() == [""]
    seen.path = ""


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_extract_window_stream_and_mlflow_features_are_the_same(device, tmp_path, seen, monkeypatch):
    run_every_path(tmp_path, device, seen, monkeypatch)
    every_frame = np.arange(NUM_FRAMES)
    for path in ("extract", "window", "pyfunc"):
        (indices,) = seen.indices[path]
        np.testing.assert_array_equal(indices, every_frame, err_msg=path)
    features = {path: np.concatenate(seen.features[path]) for path in PATHS}
    assert {path: f.shape for path, f in features.items()} == dict.fromkeys(PATHS, (NUM_FRAMES, 1280))

    # The same fitted frames went into the one encoder on every path ...
    fitted = {path: np.concatenate(seen.frames[path]) for path in PATHS}
    for path in PATHS:
        np.testing.assert_array_equal(fitted[path], fitted["extract"], err_msg=path)
    assert len(seen.frames["stream"]) == NUM_FRAMES  # a stream embeds each frame as it arrives

    # ... run as the extraction recipe says (its defaults: precision auto, channels_last) ...
    expected = autocast_dtype("auto", torch.device(device))
    for path in PATHS:
        assert seen.settings[path] == {(expected, True)}, path
        assert seen.conv_dtypes[path] == {expected or torch.float32}, path

    # ... so the features are the same.
    if device == "cpu":
        for path in ("window", "pyfunc"):  # the same 8-frame batch as the extraction: bit-identical
            np.testing.assert_array_equal(features[path], features["extract"], err_msg=path)
        np.testing.assert_allclose(features["stream"], features["extract"], rtol=1e-5, atol=STREAM_ATOL)
    else:  # cuDNN may pick other kernels for another batch size, and bf16/fp16 rounds at ~1e-2
        for path in ("window", "stream", "pyfunc"):
            change = np.linalg.norm(features[path] - features["extract"]) / np.linalg.norm(features["extract"])
            assert change < 2e-2, (path, change)
        backbone = Predictor.from_checkpoint(tmp_path / "model.pt", device=device).backbone
        fp32 = FrameEncoder(backbone, precision="fp32")(fitted["extract"])
        assert not np.array_equal(fp32, features["extract"])  # autocast did change the features


def test_a_frames_features_do_not_depend_on_the_frames_beside_it():
    """With a fixed batch (as extraction uses), a frame's features are the same bytes whichever
    frames share its forward: concurrent writers and any video order store identical entries."""
    from vidseq.backbones import FrameEncoder, create_backbone

    backbone = create_backbone("efficientnet_lite0", input_size=64)
    encoder = FrameEncoder(backbone, precision="fp32", batch=8)
    frames = np.random.default_rng(0).integers(0, 256, (13, 64, 64, 3), dtype=np.uint8)
    whole = encoder(frames)
    assert whole.shape == (13, backbone.spec.feature_dim)
    np.testing.assert_array_equal(encoder(frames[5:9]), whole[5:9])
    np.testing.assert_array_equal(encoder(frames[::-1])[::-1], whole)
    # a forward of one frame runs other kernels than one of several (measured: 1.5e-5 apart)
    np.testing.assert_array_equal(encoder(frames[3:4]), whole[3:4])
