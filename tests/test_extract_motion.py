"""The motion stream of the extraction: one decode, two linked stores, per-stream resume, short videos.

Camera synth clips (pans over real photos) for the flow's sign, fades for the intensity part; a
real clip of ../shared/data read in place, and a real frame pair brightened by known amounts for
the intensity part's values; a 1-frame video for the motion stream's own failure; the CLI's --motion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidseq.backbones import BackboneSpec
from vidseq.config import BackboneConfig, ExtractConfig, MotionConfig, SamplingConfig, SynthConfig
from vidseq.datasets import VideoItem, discover_videos, from_folder
from vidseq.features import FeatureStore, VideoFeatures, extract, ray_engine
from vidseq.features import extraction as extract_module
from vidseq.features.extraction import plan_run
from vidseq.features.motion import FlowPooler, motion_dim, recorded_motion_config
from vidseq.io import VideoReader, read_frames, write_video
from vidseq.synth import generate_dataset

FAST = ExtractConfig(num_workers=0, batch_size=16)
SMALL = BackboneConfig(input_size=96)  # real weights, smaller input: fast on 2 cores
MOTION = MotionConfig(enabled=True)  # default settings: grid 4 -> 16 dx, 16 dy, 16 dI per frame
CELLS = MOTION.grid**2
SAMPLING = SamplingConfig(count=6)
TOY = BackboneSpec(name="toy", weights=None, input_size=8, resize=8, mean=(0, 0, 0), std=(1, 1, 1), feature_dim=4)


def _camera_pair(tmp_path_factory, name: str, classes: list[str]) -> Path:
    """Two small camera-synth clips of each of ``classes``."""
    out = tmp_path_factory.mktemp(name) / "data"
    generate_dataset(out, SynthConfig(kind="camera", classes=classes, videos_per_class=2, num_frames=12, size=64))
    return out


@pytest.fixture(scope="module")
def pans(tmp_path_factory) -> Path:
    return _camera_pair(tmp_path_factory, "pans", ["pan_left", "pan_right"])


@pytest.fixture()
def counters(monkeypatch) -> dict[str, int]:
    """Counts of backbone forwards (frames), flow computations (pairs) and decoder reads, in this
    process (the tests decode with num_workers=0)."""
    counts = {"forward": 0, "flow": 0, "reads": 0}
    forward, flow, read = extract_module._Runner._forward, FlowPooler.__call__, VideoReader.read

    def counted(key, fn, size=len):
        def wrapper(self, first, *args, **kwargs):
            counts[key] += size(first)
            return fn(self, first, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(extract_module._Runner, "_forward", counted("forward", forward))
    monkeypatch.setattr(FlowPooler, "__call__", counted("flow", flow))
    monkeypatch.setattr(VideoReader, "read", counted("reads", read, size=lambda _: 1))
    return counts


def _extract(items, out: Path, **options):
    options = {"backbone": SMALL, "sampling": SAMPLING, "config": FAST, "progress": False, **options}
    return extract(items, out=out, **options)


def _rows(store: FeatureStore) -> dict[str, dict[str, str]]:
    return {Path(row["path"]).name: row for row in store.read_manifest()}


def test_one_decode_gives_both_linked_stores_with_the_same_frames(tmp_path, pans, counters):
    items = from_folder(pans).items
    result = _extract(items, tmp_path, motion=MOTION)
    assert counters["reads"] == len(items), "one read per video: frames and their pair partners together"
    motion = result.motion
    assert result.ok and motion is not None and motion.ok
    assert (result.extracted, motion.extracted) == (len(items), len(items))
    assert motion.store.stream == "motion" and motion.store.directory.parent == result.store.directory.parent
    assert motion.store.directory.name.startswith("motion-dis-")
    assert result.store.stream_store("motion").directory == motion.store.directory
    assert motion.store.stream_store("appearance").directory == result.store.directory
    record = json.loads((motion.store.directory / "store.json").read_text())
    assert record["stream"] == "motion" and record["recipe"]["motion"]["grid"] == MOTION.grid
    assert json.loads((result.store.directory / "store.json").read_text())["streams"] == {
        "motion": motion.store.directory.name
    }
    assert "motion stream: 4 extracted" in result.summary()
    assert motion.store.labels == result.store.labels
    for item in items:
        features, flow = result.store.load(item.path), motion.store.load(item.path)
        assert flow.features.shape == (SAMPLING.count, 3 * CELLS) and flow.features.dtype == np.float32
        np.testing.assert_array_equal(flow.frame_indices, features.frame_indices)
        np.testing.assert_array_equal(flow.timestamps, features.timestamps)
    plain = _extract(items, tmp_path / "plain")  # no motion: the union read changes no feature
    for item in items:
        np.testing.assert_array_equal(plain.store.load(item.path).features, result.store.load(item.path).features)


def test_pans_left_and_right_give_opposite_horizontal_flow(tmp_path, pans):
    dataset = from_folder(pans)
    store = _extract(dataset.items, tmp_path, motion=MOTION).motion.store
    dx = {"pan_left": [], "pan_right": []}
    for item in dataset.items:
        dx[item.label].append(store.load(item.path).features[:, : MOTION.grid**2].mean())
    # pan_right: the window slides right over the photo, so the picture moves left (dx < 0)
    assert max(dx["pan_right"]) < -0.5 and min(dx["pan_left"]) > 0.5, dx


# ---------------------------------------------------------------- the intensity part (dI)

ARM_WRESTLING = "k400_arm_wrestling__mmaction2_demo.mp4"  # frames 20 -> 21: flow up to ~2.4 % of the frame
LEVELS = 30  # grey levels added: 30 / 255 = 11.76 % of full scale


@pytest.fixture(scope="module")
def real_pair(action_clips) -> tuple[np.ndarray, np.ndarray]:
    """Two consecutive frames of a real clip (256x340), dimmed to 80 % so that a brightened copy never clips."""
    frames = np.asarray(read_frames(action_clips / ARM_WRESTLING, [20, 21]))
    dimmed = (frames * 0.8).astype(np.uint8)
    return dimmed[0], dimmed[1]


@pytest.mark.shared_data
def test_a_brightened_frame_adds_its_change_to_every_cell_and_leaves_the_flow(real_pair):
    first, second = real_pair
    pooler = FlowPooler(MOTION)
    plain = pooler(first[None], second[None])[0]
    brighter = pooler(first[None], (second + LEVELS)[None])[0]
    assert plain.shape == (motion_dim(MOTION),) == (3 * CELLS,)
    assert np.abs(plain[: 2 * CELLS]).max() > 1, "the pair moves: there is flow to keep"
    assert np.abs(plain[2 * CELLS :]).max() < 5, "its own change of brightness is small"
    np.testing.assert_allclose(brighter[: 2 * CELLS], plain[: 2 * CELLS], atol=0.1)  # DIS: brightness-blind
    np.testing.assert_allclose(brighter[2 * CELLS :] - plain[2 * CELLS :], LEVELS * 100 / 255, atol=0.01)
    darker = pooler((first + LEVELS)[None], second[None])[0]  # the first frame brighter: the change is negative
    np.testing.assert_allclose(darker[2 * CELLS :] - plain[2 * CELLS :], -LEVELS * 100 / 255, atol=0.01)


@pytest.mark.shared_data
def test_a_change_in_one_cell_lands_in_that_cell_row_major(real_pair):
    frame = real_pair[0]
    lit = frame.copy()
    height, width = frame.shape[:2]  # 256x340: the 4x4 cells fall on whole pixels of the 64x64 grey
    lit[height // 4 : height // 2, 2 * width // 4 : 3 * width // 4] += LEVELS  # row 1, column 2
    change = FlowPooler(MOTION)(frame[None], lit[None])[0, 2 * CELLS :]
    expected = np.zeros(CELLS)
    expected[1 * MOTION.grid + 2] = LEVELS * 100 / 255
    np.testing.assert_allclose(change, expected, atol=0.05)


@pytest.mark.shared_data
def test_intensity_off_is_the_flow_alone_and_old_recipes_read_as_off(real_pair):
    first, second = real_pair
    off = MotionConfig(enabled=True, intensity=False)
    flow_only = FlowPooler(off)(first[None], second[None])[0]
    assert flow_only.shape == (motion_dim(off),) == (2 * CELLS,)
    np.testing.assert_array_equal(flow_only, FlowPooler(MOTION)(first[None], second[None])[0, : 2 * CELLS])
    old = MOTION.model_dump(mode="json", exclude={"intensity"})  # a store or checkpoint of before dI
    assert motion_dim(recorded_motion_config(old)) == 2 * CELLS
    assert recorded_motion_config(MOTION.model_dump(mode="json")) == MOTION


@pytest.fixture(scope="module")
def fades(tmp_path_factory) -> Path:
    return _camera_pair(tmp_path_factory, "fades", ["fade_in", "fade_out"])


def test_the_fade_pair_is_told_apart_by_the_intensity_part_of_its_own_store(tmp_path, fades):
    dataset = from_folder(fades)
    with_di = _extract(dataset.items, tmp_path, motion=MOTION).motion.store
    flow_only = _extract(dataset.items, tmp_path, motion=MotionConfig(enabled=True, intensity=False)).motion.store
    assert flow_only.directory != with_di.directory, "stores are keyed by the setting"
    change = {"fade_in": [], "fade_out": []}
    for item in dataset.items:
        full, flow = with_di.load(item.path).features, flow_only.load(item.path).features
        assert (full.shape, flow.shape) == ((SAMPLING.count, 3 * CELLS), (SAMPLING.count, 2 * CELLS))
        np.testing.assert_allclose(full[:, : 2 * CELLS], flow, atol=1e-5)
        change[item.label].append(full[:, 2 * CELLS :].mean())
    # percent of full scale per pair; the darkest photo (hubble_deep_field) brightens by about 0.5 a pair
    assert min(change["fade_in"]) > 0.2 and max(change["fade_out"]) < -0.2, change


def test_each_stream_resumes_on_its_own(tmp_path, pans, counters):
    items = from_folder(pans).items
    first = _extract(items, tmp_path, motion=MOTION)
    before = {item.path: first.motion.store.load(item.path).features for item in items}
    features = {item.path: first.store.load(item.path).features for item in items}
    total = len(items) * SAMPLING.count
    assert (counters["forward"], counters["flow"]) == (total, total)

    for entry in first.motion.store.features_dir.glob("*.npz"):
        entry.unlink()  # the motion stream is lost: only the flow is computed again
    counters.update(forward=0, flow=0)
    again = _extract(items, tmp_path, motion=MOTION)
    assert (counters["forward"], counters["flow"]) == (0, total), "no backbone forward for done features"
    assert (again.reused, again.extracted) == (len(items), 0)
    assert (again.motion.reused, again.motion.extracted) == (0, len(items))
    for item in items:
        np.testing.assert_array_equal(again.motion.store.load(item.path).features, before[item.path])

    for item in items[:2]:
        first.store.entry_path(item.path).unlink()  # two videos' features lost: no flow for them
    counters.update(forward=0, flow=0)
    third = _extract(items, tmp_path, motion=MOTION)
    assert (counters["forward"], counters["flow"]) == (2 * SAMPLING.count, 0)
    assert (third.extracted, third.reused, third.motion.reused) == (2, len(items) - 2, len(items))
    for item in items:
        # another batch composition: the same features up to float rounding
        np.testing.assert_allclose(third.store.load(item.path).features, features[item.path], atol=1e-4)
    assert all(row["status"] == "done" for row in _rows(third.motion.store).values())


def test_too_short_for_a_pair_fails_the_motion_row_only_and_undecodable_fails_both(tmp_path, pans, counters):
    folder = tmp_path / "videos"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    write_video(folder / "one_frame.mp4", frames, fps=25)
    (folder / "noise.mp4").write_bytes(os.urandom(4096))
    good = min(pans.rglob("*.mp4"))
    (folder / "good.mp4").write_bytes(good.read_bytes())
    dataset = discover_videos(folder)
    result = _extract(dataset, tmp_path / "f", motion=MOTION)
    rows, motion_rows = _rows(result.store), _rows(result.motion.store)
    assert rows["one_frame.mp4"]["status"] == "done" and result.store.is_done(folder / "one_frame.mp4")
    assert motion_rows["one_frame.mp4"]["status"] == "failed"
    assert motion_rows["one_frame.mp4"]["error"].startswith("too short for the motion stream: 1 frame(s)")
    assert rows["noise.mp4"]["status"] == motion_rows["noise.mp4"]["status"] == "failed"
    assert rows["noise.mp4"]["error"] and motion_rows["noise.mp4"]["error"] == rows["noise.mp4"]["error"]
    assert rows["good.mp4"]["status"] == motion_rows["good.mp4"]["status"] == "done"
    assert {Path(r["path"]).name for r in result.failed} == {"noise.mp4"}
    assert {Path(r["path"]).name for r in result.motion.failed} == {"noise.mp4", "one_frame.mp4"}

    counters.update(forward=0, flow=0)
    rerun = _extract(dataset.items, tmp_path / "f", motion=MOTION)  # the short video is tried again: motion only
    assert counters["forward"] == 0 and rerun.reused == 2
    assert {Path(r["path"]).name: r["error"][:9] for r in rerun.motion.failed}["one_frame.mp4"] == "too short"


@pytest.mark.shared_data
def test_real_clip_read_in_place(tmp_path, clip_paths):
    clip = min(clip_paths, key=lambda p: p.stat().st_size)  # the smallest real clip, read where it lies
    items = [VideoItem(clip, None)]
    result = _extract(items, tmp_path, motion=MotionConfig(enabled=True, grid=2), sampling=SamplingConfig(count=4))
    assert result.ok and result.motion.ok
    flow, features = result.motion.store.load(clip), result.store.load(clip)
    assert flow.features.shape == (4, 12) and np.isfinite(flow.features).all()  # 2x2 cells: dx, dy, dI
    np.testing.assert_array_equal(flow.frame_indices, features.frame_indices)
    assert np.abs(flow.features).max() < 50, "percent of the frame per frame: a real clip moves little"


def test_ray_rows_carry_the_motion_stream_to_its_sink(tmp_path):
    videos = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    for video in videos:
        video.write_bytes(os.urandom(256))
    items = [VideoItem(v, "x") for v in videos]
    first = plan_run(items, out=tmp_path / "out", spec=TOY, sampling=SamplingConfig(), recipe={}, motion=MOTION)
    first.appearance.store.write(videos[2], _entry([0, 1]))  # c: features done, only motion to do
    run = plan_run(items, out=tmp_path / "out", spec=TOY, sampling=SamplingConfig(), recipe={}, motion=MOTION)
    assert [job[2:] for job in run.jobs()] == [(True, True), (True, True), (False, True)]

    def rows(job, start, indices, total, motion_error="", error="", frames=True):
        part = {"job": job, "error": error}
        if not error:
            column = np.asarray(indices, np.float32)[:, None]
            vectors = np.repeat(column, motion_dim(MOTION), axis=1) if not motion_error else None
            part.update(
                start=start,
                total=total,
                fps=10.0,
                indices=np.array(indices, dtype=np.int64),
                frames=np.zeros((len(indices) if frames else 0, 8, 8, 3), np.uint8),
                motion=vectors,
                motion_error=motion_error,
            )
        batch = ray_engine._frame_rows(part, TOY.input_size, motion_dim=motion_dim(MOTION))
        del batch["frames"]
        batch["features"] = np.repeat(batch["index"][:, None], TOY.feature_dim, axis=1).astype(np.float32)
        return batch

    ray_engine._deliver(run.sink, rows(0, 0, [0, 5], total=2, motion_error="too short"), run.extra_sinks)
    ray_engine._deliver(run.sink, rows(1, 0, [], total=0, error="broken"), run.extra_sinks)
    ray_engine._deliver(run.sink, rows(2, 0, [3, 7], total=2, frames=False), run.extra_sinks)
    run.close()
    result = run.finish(1.0)
    assert (result.extracted, result.reused, len(result.failed)) == (1, 1, 1)
    assert (result.motion.extracted, len(result.motion.failed)) == (1, 2)
    np.testing.assert_array_equal(result.store.load(videos[0]).frame_indices, [0, 5])
    np.testing.assert_array_equal(result.motion.store.load(videos[2]).features[:, 0], [3, 7])
    np.testing.assert_array_equal(result.store.load(videos[2]).frame_indices, [0, 1])  # not rewritten
    errors = {Path(r["path"]).name: r["error"] for r in result.motion.failed}
    assert errors == {"a.mp4": "too short", "b.mp4": "broken"}


def _entry(indices: list[int]) -> VideoFeatures:
    n = len(indices)
    return VideoFeatures(np.zeros((n, TOY.feature_dim), np.float32), np.array(indices), np.zeros(n), {})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own noise
def test_ray_engine_writes_the_local_engines_motion_store(tmp_path, pans):
    pytest.importorskip("ray.data", reason="Ray Data is not installed: the ray extra (pip install -e '.[ray]')")
    items = from_folder(pans).items[:2]
    local = _extract(items, tmp_path / "local", motion=MOTION)
    on_ray = _extract(items, tmp_path / "ray", motion=MOTION, config=ExtractConfig(engine="ray", batch_size=8))
    assert on_ray.motion.store.directory.name == local.motion.store.directory.name
    assert on_ray.motion.extracted == len(items)
    for item in items:
        np.testing.assert_allclose(
            on_ray.motion.store.load(item.path).features, local.motion.store.load(item.path).features, atol=1e-5
        )


def test_cli_motion_flag_writes_and_reports_the_motion_store(tmp_path, pans):
    out = tmp_path / "features"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("VIDSEQ_DEBUG", None)
    base = [
        sys.executable,
        "-m",
        "vidseq",
        "extract",
        str(pans),
        "--out",
        str(out),
        "-q",
        "--workers",
        "0",
        "-o",
        "backbone.input_size=96",
        "-o",
        "sampling.count=4",
    ]
    first = subprocess.run([*base, "--motion"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert "motion stream: 4 extracted" in first.stdout
    store = FeatureStore.load_existing(next(out.glob("motion-dis-*")))
    assert store.stream == "motion" and [r["status"] for r in store.read_manifest()].count("done") == 4
    again = subprocess.run(
        [*base, "-o", "motion.enabled=true"], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    assert "motion stream: 0 extracted, 4 already done" in again.stdout
