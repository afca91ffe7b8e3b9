"""``extract.runtime: onnxruntime``: the backbone's ONNX export run by ONNX Runtime in the one
frames -> features path gives torch's features (within ``PARITY_TOL``) on real clips, in
``vidseq extract`` and ``vidseq predict``; the export is cached per spec + weights; a backbone
that does not export falls back to torch with one warning; a missing onnxruntime is one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from vidseq.backbones import (  # noqa: E402
    PARITY_TOL,
    Backbone,
    BackboneSpec,
    FrameEncoder,
    OnnxFallbackWarning,
    cached_export,
    create_backbone,
    decode_size,
    fit_frames,
    parity_error,
)
from vidseq.cli import app  # noqa: E402
from vidseq.config import ExtractConfig  # noqa: E402
from vidseq.errors import ConfigError  # noqa: E402
from vidseq.features import FeatureStore  # noqa: E402
from vidseq.io import open_video  # noqa: E402

FAST = ["-o", "sampling.count=4", "-o", "extract.num_workers=0", "-o", "extract.batch_size=4", "-q"]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """Exports go to a folder of this module (never the user's cache)."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDSEQ_ONNX_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def lite0(onnx_cache):
    """The default backbone with its real ImageNet weights."""
    return create_backbone("efficientnet_lite0")


def real_frames(clip_paths: list[Path], spec: BackboneSpec, per_clip: int) -> np.ndarray:
    """``per_clip`` frames of every shared clip, fitted to the backbone as the extraction fits them."""
    parts = []
    for path in clip_paths:
        if path.suffix.lower() == ".gif":
            continue
        with open_video(path) as reader:
            info = reader.info
            indices = np.linspace(info.num_frames // 3, info.num_frames - 1, per_clip).astype(int)
            parts.append(fit_frames(reader.read(indices, size=decode_size(info.height, info.width, spec)), spec))
    return np.concatenate(parts)


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.mark.shared_data
def test_onnxruntime_features_match_torch_on_real_clips(lite0, clip_paths):
    frames = real_frames(clip_paths, lite0.spec, per_clip=1)
    torch_features = FrameEncoder(lite0, batch=8)(frames)
    encoder = FrameEncoder(lite0, batch=8, runtime="onnxruntime")
    assert encoder.runtime == "onnxruntime" and encoder.session.providers == ["CPUExecutionProvider"]
    assert encoder.session.threads == torch.get_num_threads()
    ort_features = encoder(frames)
    assert ort_features.shape == torch_features.shape == (len(frames), 1280)
    assert np.abs(torch_features).max() > 1.0  # real features, not a blank output
    assert parity_error(ort_features, torch_features) <= PARITY_TOL
    # other frames give other features: the session reads its input
    assert np.abs(ort_features[0] - ort_features[-1]).max() > 0.1


@pytest.mark.shared_data
def test_grid_pooling_exports_and_matches(onnx_cache, clip_paths):
    # 96 px -> 3x3 maps: 2x2 cells that overlap (adaptive pooling's uneven cells)
    backbone = create_backbone("efficientnet_lite0", pooling="grid2", input_size=96)
    frames = real_frames(clip_paths[:3], backbone.spec, per_clip=2)
    expected = FrameEncoder(backbone, batch=4)(frames)
    got = FrameEncoder(backbone, batch=4, runtime="onnxruntime")(frames)
    assert got.shape == (len(frames), 4 * 1280)
    assert parity_error(got, expected) <= PARITY_TOL


@pytest.mark.slow
@pytest.mark.shared_data
def test_extract_and_predict_with_onnxruntime_match_torch(lite0, clip_paths, tmp_path):
    from vidseq.models import build_model, make_checkpoint
    from vidseq.predict import load_predictor

    clip = next(p for p in clip_paths if p.suffix == ".avi")
    stores = {}
    for runtime in ("torch", "onnxruntime"):
        result = cli("extract", clip, "--out", tmp_path / runtime, "--runtime", runtime, *FAST)
        assert result.exit_code == 0, (result.output, result.exception)
        (folder,) = (tmp_path / runtime).glob("*/store.json")
        stores[runtime] = FeatureStore.load_existing(folder.parent)
    # one key: a store is the same whichever runtime wrote it
    assert stores["torch"].directory.name == stores["onnxruntime"].directory.name
    torch_item, ort_item = (stores[r].load(clip) for r in ("torch", "onnxruntime"))
    np.testing.assert_array_equal(torch_item.frame_indices, ort_item.frame_indices)
    assert parity_error(ort_item.features, torch_item.features) <= PARITY_TOL

    torch.manual_seed(0)
    gru = build_model("gru", input_dim=1280, num_classes=2, hidden_size=8).eval()
    model = tmp_path / "model.pt"
    state = {"model": make_checkpoint("gru", gru), "labels": ["a", "b"], "extraction": stores["torch"].recipe}
    torch.save(state, model)
    predictor = load_predictor(model, device="cpu", extract_config=ExtractConfig(runtime="onnxruntime"))
    assert predictor.encoder.runtime == "onnxruntime"
    with open_video(clip) as reader:  # embed takes frames as decoded, of any size
        decoded = reader.read([0, 5, 10])
    expected = FrameEncoder(lite0)(fit_frames(decoded, lite0.spec))
    assert parity_error(predictor.embed(decoded), expected) <= PARITY_TOL
    out = tmp_path / "predictions.jsonl"
    result = cli("predict", clip, "--model", model, "--runtime", "onnxruntime", "--device", "cpu", "--out", out, "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    (expected,) = load_predictor(model, device="cpu").predict([clip])  # torch, the default
    assert row["error"] == "" and row["label"] == expected.label
    assert abs(row["probability"] - expected.probability) <= 1e-4  # rows keep 4 decimals


@pytest.mark.slow
def test_export_is_cached_and_rebuilt_when_weights_change(onnx_cache):
    backbone = create_backbone("efficientnet_lite0", weights=None, input_size=32)
    first = cached_export(backbone)
    assert first.parent == onnx_cache and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert cached_export(backbone) == first and first.stat().st_mtime_ns == stamp  # reused, not re-exported
    again = create_backbone("efficientnet_lite0", weights=None, input_size=32)  # other random weights
    with torch.no_grad():
        again.load_state_dict(backbone.state_dict())
    assert cached_export(again) == first  # same spec, same weights: same file
    with torch.no_grad():
        next(again.parameters()).add_(0.5)
    changed = cached_export(again)
    assert changed != first and changed.is_file() and first.is_file()
    assert not list(onnx_cache.glob(".tmp-*"))  # no temporary file left behind
    x = torch.randn(3, 3, 32, 32)
    encoder = FrameEncoder(again, runtime="onnxruntime")
    assert encoder.session.path == changed
    assert parity_error(encoder.session.run(x.numpy()), again(x).detach().numpy()) <= PARITY_TOL
    other_size = create_backbone("efficientnet_lite0", weights=None, input_size=64)
    other_size.load_state_dict(backbone.state_dict())
    assert cached_export(other_size) not in (first, changed)  # another spec: another file


class _FFTBackbone(Backbone):
    """A backbone whose op (a 2-D FFT) has no ONNX symbolic in the TorchScript exporter."""

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.fft.rfft2(x).abs()]


def test_a_backbone_that_does_not_export_runs_with_torch(onnx_cache, capfd):
    spec = BackboneSpec(
        name="fft_probe", weights=None, input_size=32, resize=32, mean=(0.5,) * 3, std=(0.5,) * 3, feature_dim=3
    )
    backbone = _FFTBackbone(spec)
    with pytest.warns(
        OnnxFallbackWarning, match=r"'fft_probe' does not export to ONNX: .*fft_rfft2.*running it with torch"
    ):
        encoder = FrameEncoder(backbone, runtime="onnxruntime")
    assert (encoder.runtime, encoder.requested_runtime, encoder.session) == ("torch", "onnxruntime", None)
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(encoder(frames), FrameEncoder(backbone)(frames))
    assert "Torch IR graph" not in capfd.readouterr().out  # the exporter's graph dump is kept off the screen
    assert not list(onnx_cache.glob("fft_probe*"))


def test_missing_onnxruntime_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    spec = BackboneSpec(
        name="tiny", weights=None, input_size=8, resize=8, mean=(0.5,) * 3, std=(0.5,) * 3, feature_dim=3
    )
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[onnx\]"'):
        FrameEncoder(_FFTBackbone(spec), runtime="onnxruntime")
    video = tmp_path / "missing.mp4"  # the runtime is checked before any video is read
    video.write_bytes(b"")
    result = cli("extract", video, "--out", tmp_path / "features", "--runtime", "onnxruntime", *FAST)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install -e ".[onnx]"' in lines[0], result.output
