"""`vidseq bench` and `vidseq doctor`: real runs on a real clip, and broken settings reported with their fix."""

from __future__ import annotations

import importlib.metadata
import json
import socket

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vidseq.bench import BenchResult
from vidseq.cli import app
from vidseq.config import VidseqConfig
from vidseq.doctor import MAX_MAD, Report, check_ultralytics, clip_frames, read_back
from vidseq.io import write_video

runner = CliRunner()
CLIP = "k400_arm_wrestling__mmaction2_demo.mp4"  # 280 frames of H.264: the cheapest real clip to decode
SMALL = ["-o", "sampling.count=8", "-o", "extract.batch_size=8", "-o", "extract.num_workers=1"]
SMALL += ["-o", "backbone.input_size=96"]
OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


def _clip(clip_paths):
    return next(p for p in clip_paths if p.name == CLIP)


@pytest.fixture(scope="module")
def bench_run(clip_paths, tmp_path_factory):
    """One `vidseq bench --json` on a real clip: efficientnet_lite0 at 96 px, 8 frames, best of 2,
    model-only with torch and onnxruntime (exported into a fresh cache)."""
    args = ["bench", str(_clip(clip_paths)), *SMALL, "--repeats", "2", "--videos", "50"]
    env = {"VIDSEQ_ONNX_CACHE": str(tmp_path_factory.mktemp("onnx-cache"))}
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.shared_data
def test_bench_measures_each_part_and_names_the_bound(bench_run):
    out = bench_run
    assert out["videos"] == 1 and out["failed"] == 0
    assert out["frames"] == 8 and out["frames_per_video"] == 8.0  # uniform x8 of a 280-frame clip
    assert out["runtime"] == "torch" and out["device"] == "cpu" and out["workers"] == 1
    assert set(out["model"]) == {"torch", "onnxruntime"} and not out["skipped"]  # onnxruntime: a test dependency
    for rates, best in [(out["runs"]["decode"], out["decode"]), (out["runs"]["end_to_end"], out["end_to_end"])]:
        assert len(rates) == 2 and all(r > 0 for r in rates) and best == pytest.approx(max(rates), abs=0.01)
    for runtime, rates in out["runs"]["model"].items():
        assert len(rates) == 2 and all(r > 0 for r in rates)
        assert out["model"][runtime] == pytest.approx(max(rates), abs=0.01)
    slower = "decode" if out["decode"] < out["model"]["torch"] else "model"
    assert out["bound"] == slower
    assert out["efficiency"] == pytest.approx(out["end_to_end"] / min(out["decode"], out["model"]["torch"]))


@pytest.mark.slow
@pytest.mark.shared_data
def test_bench_projects_n_videos_from_the_end_to_end_rate(bench_run):
    projection = bench_run["projection"]
    assert projection["videos"] == 50 and projection["frames_per_video"] == 8.0
    assert projection["seconds"] == pytest.approx(50 * 8 / bench_run["end_to_end"])
    # the same result, another N and a given frame count; and its one-screen report
    fields = {key: bench_run[key] for key in BenchResult.__dataclass_fields__}
    result = BenchResult(**fields)
    given = result.projection(13320, 25.0)
    assert given.seconds == pytest.approx(13320 * 25 / bench_run["end_to_end"])
    text = "\n".join(result.lines(13320, 25.0))
    assert f"bound: {bench_run['bound']}" in text and "13,320 videos x 25.0 frames" in text
    assert len(text.splitlines()) <= 20


def test_bench_without_videos_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    result = runner.invoke(app, ["bench", str(tmp_path)])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def doctor_ok(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("doctor")
    env = {**OFFLINE, "YOLO_CONFIG_DIR": str(tmp / "yolo")}
    args = ["doctor", "--json", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
    args += ["-o", f"extract.out={tmp}/features", "-o", f"train.out={tmp}/train"]
    result = runner.invoke(app, args, env=env)
    return result, tmp


def test_doctor_reports_versions_and_decoders_that_read_the_test_clip(doctor_ok):
    result, tmp = doctor_ok
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    versions = report["versions"]
    assert versions["torch"] == torch.__version__
    for name in ("torchvision", "av", "decord", "mlflow", "onnxruntime"):
        assert versions[name] == importlib.metadata.version(name)
    checks = {c["name"].split(" (")[0]: c for c in report["checks"]}
    for backend in ("pyav", "opencv", "decord"):
        check = checks[f"decoder {backend}"]
        assert check["status"] == "ok" and "16 frames" in check["detail"], check
    assert checks[f"mlflow sqlite:///{tmp}/mlflow.db"]["status"] == "ok"
    assert not (tmp / "mlflow.db").exists() and not (tmp / "features").exists()  # checked, nothing created


def test_doctor_reports_broken_settings_with_their_fix_and_fails(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["doctor", "--json", "--tracking-uri", f"http://127.0.0.1:{port}", "--timeout", "2"]
    args += ["-o", f"extract.out={blocker}/features", "-o", f"train.out={tmp_path}/train"]
    env = {"YOLO_OFFLINE": None, "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    output = checks["output extract.out"]
    assert output["status"] == "fail" and "is a file" in output["detail"] and "extract.out=" in output["fix"]
    tracking = checks[f"mlflow http://127.0.0.1:{port}"]
    assert tracking["status"] == "fail" and "unreachable" in tracking["detail"] and "mlflow server" in tracking["fix"]
    offline = checks["YOLO_OFFLINE"]
    assert offline["status"] == "warn" and offline["fix"] == "export YOLO_OFFLINE=1"
    assert checks["output train.out"]["status"] == "ok"


def test_ultralytics_settings_alone_warn_without_failing(monkeypatch, tmp_path):
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    monkeypatch.setenv("YOLO_AUTOINSTALL", "1")
    report = Report()
    check_ultralytics(report, VidseqConfig())
    status = {c.name: (c.status, c.fix) for c in report.checks}
    assert status["YOLO_OFFLINE"] == ("warn", "export YOLO_OFFLINE=1")
    assert status["YOLO_AUTOINSTALL"] == ("warn", "export YOLO_AUTOINSTALL=0")
    assert status["YOLO_CONFIG_DIR"][0] == "warn" and "YOLO_CONFIG_DIR=" in status["YOLO_CONFIG_DIR"][1]
    assert report.ok  # warnings: exit code 0
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(unwritable / "sub"))
    report = Report()
    check_ultralytics(report, VidseqConfig.model_validate({"backbone": {"name": "yolo"}}))
    assert {c.name: c.status for c in report.checks}["YOLO_CONFIG_DIR"] == "fail"  # the yolo backbone needs it
    assert not report.ok


def test_doctor_clip_catches_a_decoder_off_by_one_frame(tmp_path):
    frames = clip_frames()
    neighbours = np.abs(frames[1:].astype(int) - frames[:-1].astype(int)).mean(axis=(1, 2, 3))
    assert neighbours.min() > MAX_MAD  # a neighbouring frame can never pass as the right one
    shifted = tmp_path / "shifted.mp4"
    write_video(shifted, np.concatenate([frames[1:], frames[-1:]]), fps=25.0)  # every frame one early
    state, detail = read_back(shifted, "pyav", frames)
    assert state == "wrong" and "frame 0 asked for, frame 1 returned" in detail
