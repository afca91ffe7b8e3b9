"""The pose stream of the extraction: its own linked store from the same decode, per-stream resume,
presence 0 (not a failure) where nobody is, the whole decoded frame (not the backbone's crop),
training's loader, the Ray engine's rows, the pipeline's key, and the one-line error without the extra.

The real NTU clip (one person in every frame) is read in place through a symlink (a folder per
class gives it a label); the other clips are made here: a moving-shapes synth clip (nobody) and
NTU frames with the person moved to the left edge of a 2:1 frame (outside the centre crop).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import QUICKSTART  # noqa: I001 - the tests folder is on sys.path
from test_pipeline import SMALL as SMALL_PIPELINE

from vidseq.backbones import BackboneSpec, decode_size, fit_frames
from vidseq.config import BackboneConfig, ExtractConfig, PoseConfig, SamplingConfig, SynthConfig
from vidseq.datasets import VideoItem, from_folder
from vidseq.errors import ConfigError
from vidseq.features import FeatureStore, VideoFeatures, extract, ray_engine
from vidseq.features import extraction as extract_module
from vidseq.features.extraction import plan_run
from vidseq.features.pose import PoseEstimator, pose_dim, present
from vidseq.io import open_video, read_frames, write_video
from vidseq.pipeline import load_pipeline
from vidseq.synth import generate_dataset
from vidseq.training.sequences import load_sequences

NTU = "ntu_A001_drink_water__S001C001P001R001A001_rgb.avi"
FAST = ExtractConfig(num_workers=0, batch_size=16)
SMALL = BackboneConfig(input_size=96)  # real weights, smaller input (decoded at 110 px high): fast on 2 cores
POSE = PoseConfig(enabled=True)
COUNT = 6
SAMPLING = SamplingConfig(count=COUNT)
DIM = pose_dim(POSE)  # 100
TOY = BackboneSpec(name="toy", weights=None, input_size=8, resize=8, mean=(0, 0, 0), std=(1, 1, 1), feature_dim=4)


@pytest.fixture()
def pose_runs() -> None:
    """Skips where MediaPipe cannot run here (the pose extra, with protobuf 4)."""
    pytest.importorskip("mediapipe", reason='the pose extra is not installed: pip install -e ".[pose]"')
    import google.protobuf

    if int(google.protobuf.__version__.split(".")[0]) >= 5:
        version = google.protobuf.__version__
        pytest.skip(f"mediapipe 0.10.14 cannot run with protobuf {version}: pip install 'protobuf<5'")


@pytest.fixture()
def counters(monkeypatch) -> dict[str, int]:
    """Frames through the backbone and through MediaPipe, in this process (the tests decode with num_workers=0)."""
    counts = {"forward": 0, "pose": 0}
    forward, pose = extract_module._Runner._forward, PoseEstimator.__call__

    def counted(key, fn):
        def wrapper(self, frames, *args, **kwargs):
            counts[key] += len(frames)
            return fn(self, frames, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(extract_module._Runner, "_forward", counted("forward", forward))
    monkeypatch.setattr(PoseEstimator, "__call__", counted("pose", pose))
    return counts


@pytest.fixture()
def ntu_folder(tmp_path, action_clips) -> Path:
    """A folder per class holding a symlink to the NTU clip (read in place, labelled drink_water)."""
    folder = tmp_path / "clips" / "drink_water"
    folder.mkdir(parents=True)
    (folder / NTU).symlink_to(action_clips / NTU)
    return folder.parent


@pytest.fixture(scope="module")
def made_clips(tmp_path_factory, action_clips) -> Path:
    """Two made clips: ``nobody/`` a moving-shapes synth clip; ``aside/`` NTU frames with the person at
    the left edge of a 200x400 frame (grey elsewhere), where the backbone's centre crop never reaches."""
    root = tmp_path_factory.mktemp("made")
    generate_dataset(
        root / "synth", SynthConfig(kind="shapes", classes=["move_left"], videos_per_class=1, num_frames=12, size=64)
    )
    (root / "clips" / "nobody").mkdir(parents=True)
    (root / "clips" / "nobody" / "shapes.mp4").write_bytes(next((root / "synth").rglob("*.mp4")).read_bytes())
    frames = read_frames(action_clips / NTU, np.linspace(0, 102, 8).round().astype(int), size=(360, 640))
    canvas = np.full((len(frames), 200, 400, 3), 127, np.uint8)
    canvas[:, :, :100] = frames[:, 80:280, 300:400]  # the person (x 330-370, y 105-245 at 640x360) and a margin
    (root / "clips" / "aside").mkdir()
    write_video(root / "clips" / "aside" / "aside.mp4", canvas, fps=10)
    return root / "clips"


def _extract(items, out: Path, **options):
    options = {"backbone": SMALL, "sampling": SAMPLING, "config": FAST, "progress": False, **options}
    return extract(items, out=out, **options)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    env.pop("VIDSEQ_DEBUG", None)
    command = [sys.executable, "-m", "vidseq", "extract", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.slow  # 6-14 s on 2 shared cores: a CLI process, and the API runs around it
@pytest.mark.shared_data
def test_cli_pose_on_an_appearance_store_of_a_real_clip_adds_only_the_pose(tmp_path, ntu_folder, pose_runs, counters):
    out = tmp_path / "features"
    first = _extract(from_folder(ntu_folder), out)  # appearance only
    assert first.pose is None and counters["forward"] == COUNT

    options = ["-o", "backbone.input_size=96", "-o", f"sampling.count={COUNT}"]  # the API run's store
    cli = _cli(str(ntu_folder), "--out", str(out), "-q", "--workers", "1", "--pose", *options)
    assert cli.returncode == 0, cli.stderr
    assert "0 extracted, 1 already done" in cli.stdout.splitlines()[0], "no backbone forward: its features exist"
    assert "pose stream: 1 extracted, 0 already done, 0 failed" in cli.stdout
    appearance = FeatureStore.load_existing(first.store.directory)  # as the CLI left it
    store = appearance.stream_store("pose")  # the appearance store links it (training finds it so)
    assert store.stream == "pose" and store.directory.name.startswith("pose-mediapipe-")
    assert store.stream_store("appearance").directory == appearance.directory
    assert [r["status"] for r in store.read_manifest()] == ["done"] and store.labels == ["drink_water"]
    clip = ntu_folder / "drink_water" / NTU
    vectors, features = store.load(clip), appearance.load(clip)
    assert vectors.features.shape == (COUNT, DIM) and vectors.features.dtype == np.float32
    np.testing.assert_array_equal(vectors.frame_indices, features.frame_indices)
    np.testing.assert_array_equal(vectors.timestamps, features.timestamps)
    assert present(vectors.features).sum() >= COUNT - 1, "the person is in every frame"
    assert f"a person found in {present(vectors.features).sum()} of the {COUNT} frames" in cli.stdout

    data = load_sequences(appearance, ["appearance", "pose"])  # what `vidseq train --streams appearance pose` reads
    assert data.streams == [("appearance", features.features.shape[1]), ("pose", DIM)]
    np.testing.assert_array_equal(data.features[0][:, -DIM:], vectors.features)

    counters.update(forward=0, pose=0)
    again = _extract(from_folder(ntu_folder), out, pose=POSE)  # both done: nothing decoded again
    assert (counters["forward"], counters["pose"]) == (0, 0)
    assert (again.reused, again.pose.reused, again.pose.extracted) == (1, 1, 0)


def test_nobody_is_a_done_row_of_zeros_and_the_pose_sees_the_frame_before_the_crop(
    tmp_path, made_clips, pose_runs, counters
):
    dataset = from_folder(made_clips)
    result = _extract(dataset, tmp_path, pose=POSE)
    pose = result.pose
    assert result.ok and pose.ok and (pose.extracted, pose.frames) == (2, 2 * COUNT)
    assert counters["pose"] == 2 * COUNT and counters["forward"] == 2 * COUNT  # one decode, both streams
    nobody = pose.store.load(made_clips / "nobody" / "shapes.mp4").features
    assert not present(nobody).any() and not nobody.any(), "nobody: presence 0 and zeros, never NaN"
    aside = pose.store.load(made_clips / "aside" / "aside.mp4").features
    assert present(aside).all(), "the person at the edge of the decoded frame is found"
    assert pose.present == COUNT and f"a person found in {COUNT} of the {2 * COUNT} frames" in result.summary()

    spec = extract_module.build_backbone(SMALL, extract_module.resolve_device("cpu")).spec
    with open_video(made_clips / "aside" / "aside.mp4") as reader:
        decoded = reader.read(np.arange(4), size=decode_size(reader.info.height, reader.info.width, spec))
    with PoseEstimator(POSE) as estimator:
        assert not present(estimator(fit_frames(decoded, spec))).any(), "the backbone's centre crop cuts the person"


def test_pose_rerun_on_an_appearance_store_computes_only_the_pose(tmp_path, made_clips, pose_runs, counters):
    dataset = from_folder(made_clips)
    first = _extract(dataset, tmp_path)
    counters.update(forward=0, pose=0)
    again = _extract(dataset, tmp_path, pose=POSE)
    assert (counters["forward"], counters["pose"]) == (0, 2 * COUNT), "no backbone forward for done features"
    assert (again.reused, again.extracted, again.pose.extracted) == (2, 0, 2)
    for item in dataset.items:
        found = present(again.pose.store.load(item.path).features)
        assert found.all() if item.label == "aside" else not found.any(), item.label
        np.testing.assert_array_equal(
            again.pose.store.load(item.path).frame_indices, first.store.load(item.path).frame_indices
        )

    for entry in again.pose.store.features_dir.glob("*.npz"):
        entry.unlink()
    counters.update(forward=0, pose=0)  # this process ran MediaPipe: a forked worker could not (it aborts)
    forked = _extract(dataset, tmp_path, pose=POSE, config=ExtractConfig(num_workers=1, batch_size=16))
    assert forked.pose.ok and forked.pose.extracted == 2 and counters["pose"] == 2 * COUNT, "decoded here instead"


def test_a_child_forked_from_a_process_that_ran_mediapipe_gets_a_clear_error_not_an_abort(pose_runs):
    PoseEstimator(POSE).close()  # this process has run MediaPipe now (if no test before did)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_build_estimator, args=(send,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0 and "forked from one that ran it" in receive.recv()


def _build_estimator(conn) -> None:
    try:
        PoseEstimator(POSE)
        conn.send("built")
    except ConfigError as exc:
        conn.send(str(exc))


def test_without_the_extra_the_cli_says_how_to_install_it_in_one_line_before_any_work(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\n\nsys.modules['mediapipe'] = None  # import fails\n")
    out = tmp_path / "features"
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    cli = _cli(str(tmp_path / "nothing.mp4"), "--out", str(out), "--pose", env=env)
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[pose]"' in lines[0] and "pose extra" in lines[0], cli.stderr
    assert not out.exists(), "nothing was written"
    trained = _cli(str(tmp_path / "nothing.mp4"), "--out", str(out), "-o", "train.streams=[appearance,pose]", env=env)
    assert trained.returncode == 2 and 'pip install -e ".[pose]"' in trained.stderr  # pose read by training: needed


def test_ray_rows_carry_the_pose_stream_to_its_sink(tmp_path):
    videos = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    for video in videos:
        video.write_bytes(os.urandom(256))
    items = [VideoItem(v, "x") for v in videos]
    plan = {"out": tmp_path / "out", "spec": TOY, "sampling": SamplingConfig(), "recipe": {}}
    plan_run(items, **plan).appearance.store.write(videos[2], _entry([0, 1]))  # c: features done, only pose to do
    run = plan_run(items, **plan, pose=POSE)
    assert [job[2:] for job in run.jobs()] == [(True, False, True), (True, False, True), (False, False, True)]
    assert run.appearance.store.stream_store("pose").directory == run.extras["pose"].plan.store.directory

    def rows(job, indices, error="", frames=True):
        part = {"job": job, "error": error}
        if not error:
            vectors = np.zeros((len(indices), DIM), np.float32)
            vectors[:, -1] = np.asarray(indices) % 2  # presence: a person in odd frames
            part.update(
                start=0,
                total=len(indices),
                fps=10.0,
                indices=np.array(indices, dtype=np.int64),
                frames=np.zeros((len(indices) if frames else 0, 8, 8, 3), np.uint8),
                motion=None,
                motion_error="",
                pose=vectors,
            )
        batch = ray_engine._frame_rows(part, TOY.input_size, pose_dim=DIM)
        del batch["frames"]
        batch["features"] = np.repeat(batch["index"][:, None], TOY.feature_dim, axis=1).astype(np.float32)
        return batch

    ray_engine._deliver(run.sink, rows(0, [0, 5]), run.extra_sinks)
    ray_engine._deliver(run.sink, rows(1, [], error="broken"), run.extra_sinks)
    ray_engine._deliver(run.sink, rows(2, [3, 8], frames=False), run.extra_sinks)
    run.close()
    result = run.finish(1.0)
    assert (result.extracted, result.reused, len(result.failed)) == (1, 1, 1)
    assert (result.pose.extracted, len(result.pose.failed), result.pose.present) == (2, 1, 2)
    np.testing.assert_array_equal(result.pose.store.load(videos[2]).features[:, -1], [1, 0])
    np.testing.assert_array_equal(result.store.load(videos[2]).frame_indices, [0, 1])  # not rewritten
    assert {Path(r["path"]).name: r["error"] for r in result.pose.failed} == {"b.mp4": "broken"}


def _entry(indices: list[int]) -> VideoFeatures:
    n = len(indices)
    return VideoFeatures(np.zeros((n, TOY.feature_dim), np.float32), np.array(indices), np.zeros(n), {})


def test_training_on_pose_makes_the_extract_stage_extract_it():
    plain = load_pipeline(QUICKSTART, SMALL_PIPELINE).stage("extract")
    both = load_pipeline(QUICKSTART, [*SMALL_PIPELINE, "train.streams=[appearance,pose]"]).stage("extract")
    assert not plain.config.pose.enabled and both.config.pose.enabled
    assert both.key != plain.key and "pose" not in plain.fingerprint["config"]
    asked = load_pipeline(QUICKSTART, [*SMALL_PIPELINE, "pose.enabled=true"]).stage("extract")
    assert asked.key == both.key  # the same vectors, however they were asked for
    deeper = load_pipeline(QUICKSTART, [*SMALL_PIPELINE, "pose.enabled=true", "pose.depth=true"]).stage("extract")
    assert deeper.key != both.key


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own noise
def test_ray_engine_writes_the_local_engines_pose_store(tmp_path, made_clips, pose_runs):
    pytest.importorskip("ray.data", reason="Ray Data is not installed: the ray extra (pip install -e '.[ray]')")
    items = from_folder(made_clips).items
    local = _extract(items, tmp_path / "local", pose=POSE)
    on_ray = _extract(items, tmp_path / "ray", pose=POSE, config=ExtractConfig(engine="ray", batch_size=8))
    assert on_ray.pose.store.directory.name == local.pose.store.directory.name and on_ray.pose.extracted == 2
    for item in items:
        np.testing.assert_allclose(
            on_ray.pose.store.load(item.path).features, local.pose.store.load(item.path).features, atol=1e-5
        )
