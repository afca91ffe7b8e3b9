"""The Ray engine: the local engine's store from a Ray Data pipeline; resume after a kill; no leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed: the ray extra (pip install -e '.[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed: the ray extra (pip install -e '.[ray]')")
psutil = pytest.importorskip("psutil", reason="psutil (a dependency of Ray) finds leftover processes")

from vidseq.backbones import BackboneSpec
from vidseq.config import BackboneConfig, ExtractConfig, SamplingConfig, SynthConfig
from vidseq.datasets import Dataset, VideoItem, from_folder
from vidseq.features import (
    FeatureStore,
    RayEngineError,
    build_backbone,
    extract,
    extract_ray,
    ray_engine,
)
from vidseq.features.extraction import VideoSink, plan_extraction
from vidseq.synth import generate_dataset

# Ray Data copies its DataContext field by field, setting deprecated fields too (Ray's own noise).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

SMALL = BackboneConfig(input_size=96)
TOY = BackboneSpec(name="toy", weights=None, input_size=8, resize=8, mean=(0, 0, 0), std=(1, 1, 1), feature_dim=4)


def _ray_children() -> list:
    """Ray processes this test process started (raylet, gcs_server, workers) that are still alive."""
    names = ("raylet", "gcs_server", "ray::", "dashboard", "runtime_env", "log_monitor")
    return [p for p in psutil.Process().children(recursive=True) if any(n in _name(p) for n in names)]


def _name(process) -> str:
    try:
        return " ".join(process.cmdline()[:2]) or process.name()
    except psutil.Error:
        return ""


def _assert_no_ray_left() -> None:
    assert not ray.is_initialized(), "the engine shuts down the Ray it started"
    _, alive = psutil.wait_procs(_ray_children(), timeout=20)
    for process in alive:  # ours: started under this test process; killed by pid, then reported
        process.kill()
    assert not alive, f"Ray processes left behind: {[_name(p) for p in alive]}"


# -- no cluster needed --------------------------------------------------------------------


def test_actor_plan_leaves_cpus_to_decode_and_takes_one_gpu_each():
    cpu = ExtractConfig(engine="ray")
    assert ray_engine._actor_plan({"CPU": 2.0}, config=cpu, num_actors=None) == (1, {"num_cpus": 1.0}, 1)
    assert ray_engine._actor_plan({"CPU": 2.0}, config=cpu, num_actors=2) == (2, {"num_cpus": 0.5}, 1)
    assert ray_engine._actor_plan({"CPU": 16.0}, config=cpu, num_actors=None) == (8, {"num_cpus": 1.0}, 1)
    assert ray_engine._actor_plan({"CPU": 16.0}, config=cpu, num_actors=2) == (2, {"num_cpus": 4.0}, 4)
    gpu_cluster = {"CPU": 32.0, "GPU": 4.0}
    assert ray_engine._actor_plan(gpu_cluster, config=cpu, num_actors=None) == (4, {"num_gpus": 1, "num_cpus": 1}, 1)
    on_cpu = ExtractConfig(engine="ray", device="cpu")
    assert ray_engine._actor_plan(gpu_cluster, config=on_cpu, num_actors=None)[1] == {"num_cpus": 1.0}
    with pytest.raises(RayEngineError, match="at least 2"):
        ray_engine._actor_plan({"CPU": 1.0}, config=cpu, num_actors=None)
    with pytest.raises(RayEngineError, match="num_actors must be >= 1"):
        ray_engine._actor_plan({"CPU": 4.0}, config=cpu, num_actors=0)


def test_missing_ray_says_to_install_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayEngineError, match=r'pip install -e "\.\[ray\]"'):
        extract_ray([], out=tmp_path)
    with pytest.raises(RayEngineError, match="extract.engine=local"):
        extract([], out=tmp_path, config=ExtractConfig(engine="ray"))


def test_rows_in_any_order_assemble_videos_and_an_error_fails_its_video(tmp_path):
    videos = []
    for name in ("a.mp4", "b.mp4"):
        videos.append(tmp_path / name)
        videos[-1].write_bytes(os.urandom(256))  # entry names come from content ids
    plan = plan_extraction(
        [VideoItem(v, "x") for v in videos], out=tmp_path / "out", spec=TOY, sampling=SamplingConfig(), recipe={}
    )
    sink = VideoSink(plan, TOY.feature_dim)

    def rows(job, start, indices, total, error=""):
        part = {"job": job, "error": error}
        if not error:
            part.update(
                start=start,
                total=total,
                fps=10.0,
                indices=np.array(indices),
                frames=np.zeros((len(indices), 8, 8, 3), np.uint8),
            )
        batch = ray_engine._frame_rows(part, TOY.input_size)
        del batch["frames"]
        batch["features"] = np.repeat(batch["index"][:, None], TOY.feature_dim, axis=1).astype(np.float32)
        return batch

    ray_engine._deliver(sink, rows(1, 0, [0, 5], total=4))
    ray_engine._deliver(sink, rows(0, 3, [30, 40], total=5))  # the second chunk first
    ray_engine._deliver(sink, rows(1, 0, [], total=0, error="broken at frame 9"))
    ray_engine._deliver(sink, rows(1, 2, [9, 12], total=4))  # after the error: ignored
    assert not plan.store.is_done(videos[0]), "written only when all its frames are in"
    ray_engine._deliver(sink, rows(0, 0, [0, 10, 20], total=5))
    sink.close()
    result = plan.finish(1.0)
    stored = plan.store.load(videos[0])
    np.testing.assert_array_equal(stored.frame_indices, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(stored.features[:, 0], [0, 10, 20, 30, 40])
    np.testing.assert_allclose(stored.timestamps, stored.frame_indices / 10.0)
    assert (result.extracted, len(result.failed)) == (1, 1)
    manifest = {Path(row["path"]).name: row for row in plan.store.read_manifest()}
    assert manifest["a.mp4"]["status"] == "done" and manifest["a.mp4"]["frames"] == "5"
    assert manifest["b.mp4"]["status"] == "failed" and manifest["b.mp4"]["error"] == "broken at frame 9"
    assert not plan.store.is_done(videos[1]) and not list(plan.store.features_dir.glob(".tmp-*"))


# -- a local 2-CPU Ray ---------------------------------------------------------------------


@pytest.mark.slow
def test_real_clips_give_the_local_engines_store(tmp_path, clip_paths, monkeypatch):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(8192))
    items = [VideoItem(p, "odd" if i % 2 else "even") for i, p in enumerate(clip_paths)] + [VideoItem(junk, "odd")]
    dataset = Dataset(items, ["even", "odd"], missing=[tmp_path / "gone.mp4"], skipped=[tmp_path / "notes.txt"])
    sampling = SamplingConfig(count=4)
    local = extract(dataset, out=tmp_path / "local", sampling=sampling, config=ExtractConfig(), progress=False)
    on_ray = extract(
        dataset,
        out=tmp_path / "ray",
        sampling=sampling,
        progress=False,
        config=ExtractConfig(engine="ray", batch_size=16),
    )
    _assert_no_ray_left()
    assert on_ray.store.directory.name == local.store.directory.name
    assert (on_ray.store.directory / "store.json").read_text() == (local.store.directory / "store.json").read_text()
    assert on_ray.store.labels == local.store.labels == ["even", "odd"]
    assert (on_ray.extracted, len(on_ray.failed)) == (local.extracted, len(local.failed)) == (len(clip_paths), 1)
    for path in clip_paths:
        mine, theirs = on_ray.store.load(path), local.store.load(path)
        np.testing.assert_array_equal(mine.frame_indices, theirs.frame_indices)
        np.testing.assert_allclose(mine.timestamps, theirs.timestamps)
        np.testing.assert_allclose(mine.features, theirs.features, rtol=1e-4, atol=1e-4)
        assert on_ray.store.entry_path(path).name == local.store.entry_path(path).name
    rows = {row["path"]: row for row in on_ray.store.read_manifest()}
    expected = {row["path"]: row for row in local.store.read_manifest()}
    assert rows == expected  # same statuses, errors, frame counts and files, path by path
    assert rows[str(junk)]["status"] == "failed" and rows[str(junk)]["error"]
    assert {rows[str(tmp_path / n)]["status"] for n in ("gone.mp4", "notes.txt")} == {"missing", "skipped"}

    def no_cluster(*args, **kwargs):
        raise AssertionError("nothing to do: no Ray should start")

    monkeypatch.setattr(ray_engine, "_ray_session", no_cluster)
    again = extract_ray(dataset.items[:-1], out=tmp_path / "ray", sampling=sampling, progress=False)
    assert (again.extracted, again.reused) == (0, len(clip_paths))


@pytest.mark.slow
def test_killed_run_resumes_without_rewriting_what_it_wrote(tmp_path):
    """SIGKILL to the whole process group (driver and its Ray) once entries exist; rerun the rest."""
    videos = tmp_path / "videos"
    generate_dataset(
        videos, SynthConfig(classes=["grow", "shrink", "move_left"], videos_per_class=3, num_frames=12, size=64)
    )
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time
        from vidseq.config import BackboneConfig, ExtractConfig
        from vidseq.datasets import from_folder
        from vidseq.features import extract_ray
        # Slow the driver down after each video, so the kill lands mid-run.
        extract_ray(from_folder({str(videos)!r}).items, out={str(out)!r}, backbone=BackboneConfig(input_size=96),
                    config=ExtractConfig(engine="ray", batch_size=4), num_cpus=2, progress=False,
                    on_video_done=lambda row: time.sleep(0.5))
    """)
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        entries = _wait_for_entries(out, driver, at_least=3, log=tmp_path / "driver.log")
    finally:
        _kill_group(driver)

    features = next(out.glob("efficientnet_lite0-*")) / "features"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in features.glob("*.npz")}
    total = len(from_folder(videos).items)
    assert len(entries) >= 3 and len(before) < total, "the kill should land mid-run"
    built = build_backbone(SMALL, torch.device("cpu"))  # a built model (as vidseq.predict passes one) goes too
    rerun = extract_ray(
        from_folder(videos).items,
        out=out,
        backbone=built,
        config=ExtractConfig(engine="ray", batch_size=4),
        progress=False,
    )
    _assert_no_ray_left()
    assert (rerun.reused, rerun.extracted, rerun.ok) == (len(before), total - len(before), True)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in features.glob("*.npz")}
    assert len(after) == total
    assert {name: after[name] for name in before} == before, "entries of the killed run are not rewritten"
    assert not list(features.glob(".tmp-*")), "temporaries of the killed run are cleaned"
    for entry in features.glob("*.npz"):
        FeatureStore.read(entry)


@pytest.mark.slow
def test_joins_a_running_cluster_and_leaves_it_running(tmp_path, clip_paths, monkeypatch):
    """address=...: a second driver joins (vidseq shipped as py_modules) and only disconnects."""
    head = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
        import logging, time, ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
        print(ray.get_runtime_context().gcs_address, flush=True)
        time.sleep(600)
    """),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the cluster did not start"
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # Ray's clusters want their token (~/.ray/auth_token)
        items = [VideoItem(p, None) for p in clip_paths[:2]]
        result = extract_ray(items, out=tmp_path, sampling=SamplingConfig(count=2), address=address, progress=False)
        assert result.ok and result.extracted == 2
        assert not ray.is_initialized() and head.poll() is None, "disconnected; the cluster still runs"
    finally:
        _kill_group(head)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session and everything it started (by pid)."""
    family = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the driver, its raylet, GCS and workers: one group
    except ProcessLookupError:
        pass  # the group is gone already
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(family, timeout=20)
    for leftover in alive:  # anything of that run outside its process group: killed by pid
        leftover.kill()
    assert not alive, f"processes outlived their group: {[_name(p) for p in alive]}"


def _wait_for_entries(out: Path, driver: subprocess.Popen, *, at_least: int, log: Path) -> list[Path]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        entries = list(out.glob("*/features/*.npz"))
        if len(entries) >= at_least:
            return entries
        if driver.poll() is not None:
            pytest.fail(f"the Ray run ended (rc {driver.returncode}) before {at_least} entries:\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"no {at_least} entries within 180 s:\n{log.read_text()}")
