"""`vidseq export`: ONNX and TorchScript folders, their manifest, and `vidseq predict --model DIR`.

Parity is measured on real clips: the exported folder must give the labels of the original model
and its probabilities within ``PROBABILITY_ATOL`` (measured on the 10 shared clips: 5e-7 for
ONNX, whose backbone features differ by up to 1e-5 from PyTorch's; 6e-8 for TorchScript, whose
features are bit-identical).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _trained import small_model
from typer.testing import CliRunner

from vidseq.backbones.spec import file_sha256
from vidseq.cli import app
from vidseq.config import ExtractConfig
from vidseq.models import build_late_fusion, build_model
from vidseq.predict import load_predictor
from vidseq.predict.export import ExportError, export_head, export_model
from vidseq.predict.exported import ExportedPredictor, load_torchscript, read_manifest
from vidseq.training import checkpoint as checkpoints

PROBABILITY_ATOL = 1e-4
FEATURE_ATOL = 1e-4  # vidseq.backbones.onnx.PARITY_ATOL: ORT vs PyTorch backbone features
# three small real clips of different containers and codecs (mpeg4 .avi, h264 .mkv, NTU .avi)
CLIP_NAMES = ("ucf101_ApplyEyeMakeup", "k400_flipping_pancake", "ntu_A001_drink_water")


def cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return small_model(tmp_path_factory)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory) -> dict[str, Path]:
    """The small model exported by the CLI in both formats."""
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in ("onnx", "torchscript"):
        result, lines = cli("export", model, "--format", fmt, "--out", root / fmt)
        assert result.exit_code == 0, result.output
        assert lines[0].startswith(f"wrote {root / fmt}") and "max difference vs PyTorch" in result.output
        out[fmt] = root / fmt
    return out


@pytest.fixture(scope="module")
def clips(clip_paths) -> list[Path]:
    chosen = [p for p in clip_paths if p.name.startswith(CLIP_NAMES)]
    assert len(chosen) == len(CLIP_NAMES)
    return chosen


def predict_rows(model: Path, clips: list[Path], out: Path) -> dict[str, dict]:
    result, _ = cli("predict", *clips, "--model", model, "--out", out, "--top-k", "2", "--workers", "0", "-q")
    assert result.exit_code == 0, result.output
    return {row["path"]: row for row in map(json.loads, out.read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.shared_data
def test_exported_folders_predict_like_the_model_on_real_clips(model, exports, clips, tmp_path):
    clips = clips[:2]  # the third is read at full precision below
    expected = predict_rows(model, clips, tmp_path / "original.jsonl")
    assert len(expected) == len(clips) and not any(row["error"] for row in expected.values())
    for fmt, folder in exports.items():
        got = predict_rows(folder, clips, tmp_path / f"{fmt}.jsonl")
        assert set(got) == set(expected)
        for path, row in expected.items():
            assert got[path]["label"] == row["label"], (fmt, path)
            assert got[path]["frames"] == row["frames"]
            assert got[path]["top_labels"] == row["top_labels"], (fmt, path)
            # the CLI writes 4 decimals: equal up to the rounding of the last one
            diff = np.abs(np.array(got[path]["top_probabilities"]) - np.array(row["top_probabilities"])).max()
            assert diff <= 1e-4 + 1e-9, (fmt, path, diff)


@pytest.mark.shared_data
def test_exported_probabilities_match_at_full_precision(model, exports, clips):
    """The Python API (what the CLI rounds): a real clip's features and probabilities."""
    config = ExtractConfig(num_workers=0, batch_size=8)  # 8 sampled frames: one unpadded forward
    key = str(clips[-1])
    original = load_predictor(model, device="cpu", extract_config=config)
    features = original.features([key])[0][key].features
    expected = original.classify([features])[0]
    for fmt, folder in exports.items():
        exported = load_predictor(folder, device="cpu", extract_config=config)
        assert isinstance(exported, ExportedPredictor) and exported.format == fmt
        got = exported.features([key])[0][key].features
        assert got.shape == features.shape and np.abs(got - features).max() <= FEATURE_ATOL
        probabilities = exported.classify([got])[0]
        assert probabilities.argmax() == expected.argmax()
        assert np.abs(probabilities - expected).max() <= PROBABILITY_ATOL


def test_the_manifest_lists_inputs_preprocessing_sampling_labels_and_files(model, exports):
    state = checkpoints.load(model)
    recipe = state["extraction"]
    for fmt, folder in exports.items():
        manifest = read_manifest(folder)
        suffix = ".onnx" if fmt == "onnx" else ".pt"
        assert manifest["format_version"] == 1 and manifest["runtime"] == fmt and manifest["vidseq_version"]
        assert manifest["labels"] == list(state["labels"])
        assert manifest["sampling"] == recipe["sampling"] and manifest["io"] == recipe["io"]
        spec = manifest["backbone"]["spec"]
        pre = manifest["preprocessing"]
        assert (pre["input_size"], pre["fit"], pre["mean"], pre["std"]) == (
            spec["input_size"],
            spec["fit"],
            spec["mean"],
            spec["std"],
        )
        size, dim = spec["input_size"], spec["feature_dim"]
        backbone = manifest["backbone"]
        assert backbone["inputs"] == [{"name": "frames", "shape": ["batch", 3, size, size], "dtype": "float32"}]
        assert backbone["outputs"] == [{"name": "features", "shape": ["batch", dim], "dtype": "float32"}]
        head = manifest["head"]
        assert head["inputs"] == [
            {"name": "features", "shape": ["batch", "time", dim], "dtype": "float32"},
            {"name": "lengths", "shape": ["batch"], "dtype": "int64"},
        ]
        assert head["outputs"] == [{"name": "probabilities", "shape": ["batch", 2], "dtype": "float32"}]
        stream = {"name": "appearance", "computed_by": f"the backbone (backbone{suffix})", "dims": [0, dim]}
        assert manifest["streams"] == [stream]
        assert set(manifest["files"]) == {f"backbone{suffix}", f"head{suffix}"}
        for name, digest in manifest["files"].items():
            assert file_sha256(folder / name) == digest
        checks = manifest["checks"]["max_abs_difference_vs_pytorch"]
        assert 0 <= checks["backbone"] <= 1e-3 and 0 <= checks["head"] <= 1e-3


def test_a_two_stream_manifest_gives_each_streams_dims_and_what_computes_motion():
    """Late fusion of appearance (8 dims) and motion (OpenCV flow on a 2x2 grid: 8 dims)."""
    from types import SimpleNamespace

    from vidseq.config import MotionConfig
    from vidseq.predict.export import _fusion, _not_exported, _streams

    member = {"input_dim": 8, "num_classes": 2, "hidden_size": 4}
    fused = build_late_fusion(
        16,
        2,
        members=[
            {"stream": "appearance", "name": "gru", "hparams": member, "dims": [0, 8]},
            {"stream": "motion", "name": "gru", "hparams": member, "dims": [8, 16]},
        ],
        weights=[3, 1],
    )
    motion = MotionConfig(enabled=True, grid=2, intensity=False)  # dx, dy of 4 cells
    predictor = SimpleNamespace(streams=["appearance", "motion"], motion=motion, model=fused, actors=None)
    streams = _streams(predictor, {"file": "backbone.onnx", "spec": {"feature_dim": 8}})
    assert [(s["name"], s["dims"]) for s in streams] == [("appearance", [0, 8]), ("motion", [8, 16])]
    assert "OpenCV" in streams[1]["computed_by"] and streams[1]["settings"]["grid"] == 2
    fusion = _fusion(predictor)
    assert fusion["kind"] == "late" and fusion["weights"] == {"appearance": 0.75, "motion": 0.25}
    assert any("OpenCV" in part for part in _not_exported(predictor))
    gru = build_model("gru", input_dim=16, num_classes=2)
    early = SimpleNamespace(streams=["appearance", "motion"], motion=motion, model=gru)
    assert _fusion(early)["kind"] == "early"


@pytest.mark.parametrize("problem", ["not an export", "foreign manifest", "missing file", "tampered file"])
def test_a_broken_export_is_one_line(exports, tmp_path, problem, clip_paths):
    folder = tmp_path / "model"
    shutil.copytree(exports["onnx"], folder)
    if problem == "not an export":
        shutil.rmtree(folder)
        folder.mkdir()
        (folder / "notes.txt").write_text("hello\n")
        expected = "not a checkpoint, a vidseq model folder or an MLflow model folder"
    elif problem == "foreign manifest":
        (folder / "manifest.json").write_text(json.dumps({"name": "someone else's"}))
        expected = "manifest.json is not a vidseq export's"
    elif problem == "missing file":
        (folder / "head.onnx").unlink()
        expected = "head.onnx is missing (listed in manifest.json); export the model again"
    else:
        with (folder / "backbone.onnx").open("ab") as fh:
            fh.write(b"\0")
        expected = "backbone.onnx: its sha256 does not match manifest.json (changed after export)"
    result, lines = cli("predict", clip_paths[0], "--model", folder)
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert expected in lines[0]


def test_export_refuses_a_bad_format_and_a_folder_of_other_files(model, tmp_path):
    result, lines = cli("export", model, "--format", "tflite", "--out", tmp_path / "x")
    assert result.exit_code == 2 and len(lines) == 1 and "unknown export format 'tflite'" in lines[0]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine\n")
    result, lines = cli("export", model, "--format", "torchscript", "--out", tmp_path / "busy")
    assert result.exit_code == 2 and len(lines) == 1 and "holds other files" in lines[0]
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine\n"


def test_without_onnxruntime_the_onnx_path_says_how_to_install_it(model, exports, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    hint = 'pip install -e ".[onnx]"'
    with pytest.raises(ExportError, match=r'pip install -e "\.\[onnx\]"'):
        export_model(model, tmp_path / "x", format="onnx")
    result, lines = cli("predict", "any.mp4", "--model", exports["onnx"])
    assert result.exit_code == 2 and len(lines) == 1 and hint in lines[0], result.output


# -- the head, every kind, padded batches ----------------------------------------------------

D, C = 12, 3


def _heads():
    torch.manual_seed(0)
    member = {"input_dim": 8, "num_classes": C, "hidden_size": 8, "bidirectional": True}
    motion = {"input_dim": 4, "num_classes": C}
    return {
        "lstm-bidirectional-mean-2-layers": build_model(
            "lstm", input_dim=D, num_classes=C, hidden_size=8, bidirectional=True, num_layers=2, pooling="mean"
        ),
        "gru-attention-centred-motion": build_model(
            "gru",
            input_dim=D,
            num_classes=C,
            hidden_size=8,
            pooling="attention",
            center=True,
            streams=[["appearance", D - 4], ["motion", 4]],
        ),
        "tcn": build_model("tcn", input_dim=D, num_classes=C, hidden_size=8),
        "transformer-causal-centred-motion": build_model(
            "transformer",
            input_dim=D,
            num_classes=C,
            hidden_size=8,
            num_heads=2,
            causal=True,
            center=True,
            streams=[["appearance", D - 4], ["motion", 4]],
        ),
        "late-fusion": build_late_fusion(
            D,
            C,
            members=[
                {"stream": "appearance", "name": "gru", "hparams": member, "dims": [0, 8]},
                {"stream": "motion", "name": "meanpool", "hparams": motion, "dims": [8, 12]},
            ],
            weights=[0.7, 0.3],
        ),
    }


def test_the_manifest_names_each_head_as_the_registry_does():
    from vidseq.predict.export_head import model_name

    names = {kind: model_name(model) for kind, model in _heads().items()}
    assert names == {
        "lstm-bidirectional-mean-2-layers": "lstm",
        "gru-attention-centred-motion": "gru",
        "tcn": "tcn",
        "transformer-causal-centred-motion": "transformer",  # was "tcn": anything not lstm/gru/meanpool
        "late-fusion": "late_fusion",
    }


@pytest.mark.parametrize("kind", list(_heads()))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_heads_match_the_packed_model_on_padded_batches(kind, fmt, tmp_path):
    """Whatever the padding holds (here 1e3), each video gets the probabilities the trained
    model gives it (packed), at a batch and time other than the traced ones, and alone (B=T=1)."""
    from vidseq.predict.export import _write_head

    model = _heads()[kind].eval()
    lengths = torch.tensor([9, 1, 4, 6])
    x = torch.randn(4, 9, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.softmax(model(x, lengths), dim=-1).numpy()
        alone = torch.softmax(model(x[1:2, :1], lengths[1:2]), dim=-1).numpy()
    poisoned = x.clone()
    for row, length in enumerate(lengths):
        poisoned[row, length:] = 1e3
    head = export_head(model)
    path = tmp_path / f"head.{fmt}"
    _write_head(head, D, path, fmt, 18)
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(f, n):
            return session.run(None, {"features": f.numpy(), "lengths": n.numpy()})[0]
    else:
        module = load_torchscript(path)

        def run(f, n):
            with torch.no_grad():
                return module(f, n).numpy()

    assert np.abs(run(poisoned, lengths) - expected).max() <= 1e-5
    assert np.abs(run(x[1:2, :1], lengths[1:2]) - alone).max() <= 1e-5
