"""The pose stream end to end on real clips: extract -> train (pose alone, late fusion over three
streams) -> evaluate -> predict (files, windows) -> the MLflow pyfunc from its bundle."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe", reason='the pose extra is not installed: pip install -e ".[pose]"')

# real clips with people (a person in most frames) and their made-up classes: the test proves the
# path, not the accuracy; splits are fixed so that every split has both classes
CLIPS = {
    "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi": ("near", "train"),
    "ucf101_ApplyEyeMakeup__mmaction2_test.avi": ("near", "train"),
    "k400_arm_wrestling__mmaction2_demo.mp4": ("near", "val"),
    "mgt_dancer.avi": ("far", "train"),
    "opencv_vtest_pedestrians_walking.avi": ("far", "train"),
    "unlabeled_basketball_gym__mmaction2_test_video_structuralize.mp4": ("far", "val"),
    "k400_flipping_pancake__decord.mkv": ("near", "test"),
    "mgt_pianist.avi": ("far", "test"),
}
SMALL = ["-o", "sampling.count=6", "-o", "backbone.input_size=128", "-o", "extract.batch_size=32"]


def _vidseq(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "vidseq", "--threads", "2", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def extracted(action_clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("pose-e2e")
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for name, (label, split) in CLIPS.items():
            writer.writerow([str(action_clips / name), label, split])
    _vidseq("extract", "labels.csv", "--pose", "--motion", "--out", "features", *SMALL, cwd=root)
    stores = {p.name.split("-")[0]: p for p in (root / "features").iterdir() if (p / "store.json").is_file()}
    return root, stores


@pytest.mark.slow
def test_pose_alone_and_late_fusion_over_three_streams_train_and_predict(extracted, action_clips):
    root, stores = extracted
    assert {"pose", "motion"} <= set(stores), sorted(stores)
    pose_store = stores["pose"]

    # the pose entries: one vector per sampled frame, a person present in most frames of the NTU clip
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(pose_store / "manifest.csv"))}
    with np.load(pose_store / rows[next(iter(CLIPS))]["file"]) as entry:
        vectors = entry["features"]
    assert vectors.shape == (6, 100) and vectors[:, -1].mean() >= 0.8

    train = ["-o", "train.epochs=3", "-o", "train.batch_size=4", "-o", "model.hidden_size=16"]
    _vidseq("train", str(pose_store), "--streams", "pose", "--out", "pose-run", *train, cwd=root)
    state = torch.load(root / "pose-run" / "best.pt", weights_only=True)
    assert state["streams"] == ["pose"] and state["extraction"]["pose"]["mode"] == "static"
    assert state["model"]["hparams"]["streams"] == [["pose", 100]]
    scale = state["model"]["state_dict"]["input.scale"]
    assert bool((scale[:-1] != 1).any()) and float(scale[-1]) == 1.0  # fitted on train; the flag as it is

    fused = ["--streams", "appearance,motion,pose", "-o", "train.fusion=late"]
    _vidseq("train", str(pose_store), *fused, "--out", "fused", *train, cwd=root)
    fused_state = torch.load(root / "fused" / "best.pt", weights_only=True)
    hparams = fused_state["model"]["hparams"]
    assert [m["stream"] for m in hparams["members"]] == ["appearance", "motion", "pose"]
    assert len(hparams["weights"]) == 3 and sum(hparams["weights"]) == pytest.approx(1.0)  # picked on val
    assert hparams["members"][2]["hparams"]["streams"] == [["pose", 100]]

    # early fusion stays, for comparison: one model on the concatenated vectors, each stream treated as it needs
    early = ["--streams", "appearance,pose", "-o", "train.fusion=early", "-o", "model.center=true"]
    _vidseq("train", str(pose_store), *early, "--out", "early", *train, cwd=root)
    early_hparams = torch.load(root / "early" / "best.pt", weights_only=True)["model"]["hparams"]
    assert early_hparams["streams"] == [["appearance", 1280], ["pose", 100]] and early_hparams["center"]

    clip = action_clips / "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi"
    _vidseq("predict", str(clip), "--model", "fused/best.pt", "--out", "files.jsonl", "-q", cwd=root)
    rows = [json.loads(line) for line in (root / "files.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["error"] == "" and rows[0]["label"] in ("near", "far")
    _vidseq("predict", str(clip), "--model", "pose-run/best.pt", "--window", "1", "--out", "win.jsonl", "-q", cwd=root)
    (timeline,) = [json.loads(line) for line in (root / "win.jsonl").read_text().splitlines()]
    assert timeline["error"] in ("", None), timeline
    labels = [w["label"] for w in timeline["windows"]]
    assert len(labels) >= 2 and set(labels) <= {"near", "far"}, timeline


@pytest.mark.slow
def test_the_pyfunc_of_a_pose_model_predicts_real_files_and_requires_mediapipe(extracted, action_clips, tmp_path):
    from vidseq.predict import _load_pyfunc, load_predictor, write_bundle
    from vidseq.tracking._model import bundle_has_pose, default_requirements

    root, stores = extracted
    _vidseq(
        "train", str(stores["pose"]), "--streams", "pose", "--out", "run", "-o", "train.epochs=2", "-o",
        "model.hidden_size=8", cwd=root,
    )  # fmt: skip
    bundle = write_bundle(root / "run" / "best.pt", tmp_path / "bundle")
    assert bundle_has_pose(bundle) and any(r.startswith("mediapipe") for r in default_requirements(pose=True))
    clip = action_clips / "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi"
    model = _load_pyfunc(str(bundle))
    frame = model.predict([str(clip), str(tmp_path / "missing.mp4")])
    assert list(frame["error"])[0] == "" and list(frame["error"])[1]
    expected = load_predictor(root / "run" / "best.pt", device="cpu").predict([clip])[0]
    assert frame["label"][0] == expected.label and frame["probability"][0] == pytest.approx(expected.probability)

    # an exported folder names what computes the pose (not a network it holds) and predicts alike
    from vidseq.predict.export import export_model

    result = export_model(root / "run" / "best.pt", tmp_path / "exported", format="torchscript")
    (stream,) = result.manifest["streams"]
    assert stream["name"] == "pose" and stream["dims"] == [0, 100] and "MediaPipe" in stream["computed_by"]
    exported = load_predictor(tmp_path / "exported", device="cpu").predict([clip])[0]
    assert exported.label == expected.label and exported.probability == pytest.approx(expected.probability, abs=1e-5)
