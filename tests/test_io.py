"""Tests of vidseq.io on the real clips: probing, exact frame access, resizing, fallback."""

from __future__ import annotations

import ast
import csv
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidseq import io as vio
from vidseq.errors import BackendUnavailableError, VideoDecodeError
from vidseq.io import _backends, _scan

ALL_BACKENDS = ("pyav", "opencv", "decord", "torchcodec")
LONG_CLIPS = ("mgt_pianist.avi", "mgt_dancer.avi", "opencv_vtest_pedestrians_walking.avi")
SHORT_CLIP = "k400_arm_wrestling__mmaction2_demo.mp4"  # 340x256, h264 with B-frames, 280 frames
# Largest mean absolute difference (grey levels) measured between backends' frames at the same
# index, over all shared clips: native size 0.0 (0.0005 on the msmpeg4 clip, whose decoder
# differs between decord's FFmpeg 4.1, the system FFmpeg 5.1 of torchcodec and FFmpeg 8);
# resized to a short side of 112, against cv2 INTER_AREA of the native frame: 0.0 for opencv
# and torchcodec (they resize with it), up to 1.43 for PyAV's libswscale AREA and 2.08 for
# decord's scaler. The bounds leave room for other FFmpeg builds.
NATIVE_MAD = 0.5
RESIZED_MAD = 4.0


def _skip_unless_installed(name: str) -> None:
    try:
        _backends.backend_module(name)
    except BackendUnavailableError as exc:
        pytest.skip(f"backend {name} is not installed here: {exc}")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend by name; skipped (with the reason) where its library does not import."""
    _skip_unless_installed(request.param)
    return request.param


@pytest.fixture(scope="session")
def labels(action_clips: Path) -> dict[str, dict[str, str]]:
    with open(action_clips / "labels.csv", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def reference_frames(action_clips: Path):  # noqa: ANN201
    """clip name -> (indices, frames) taken from ONE full sequential PyAV decode of that clip."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in cache:
            cache[name] = _sequential_reference(action_clips / name)
        return cache[name]

    return get


def _sample_indices(num_frames: int) -> np.ndarray:
    """16 uniform positions, 8 seeded random ones and the last frame."""
    uniform = np.linspace(0, num_frames - 1, 16).round().astype(np.int64)
    rng = np.random.default_rng(0)
    return np.unique(np.concatenate([uniform, rng.integers(0, num_frames, 8), [num_frames - 1]]))


def _sequential_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    num_frames = vio.probe(path, backend="pyav").num_frames
    wanted = _sample_indices(num_frames)
    kept, seen = {}, 0
    for start, chunk in vio.iter_frames(path, backend="pyav"):
        for i in wanted[(wanted >= start) & (wanted < start + len(chunk))]:
            kept[int(i)] = chunk[i - start].copy()
        seen = start + len(chunk)
    assert seen == num_frames, f"sequential decode gave {seen} frames, probe said {num_frames}"
    return wanted, np.stack([kept[int(i)] for i in wanted])


def _mad(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference per frame."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(-3, -2, -1))


# ---------------------------------------------------------------- probing every real clip


@pytest.mark.shared_data
def test_probe_matches_labels_for_every_clip(clip_paths: list[Path], labels: dict) -> None:
    assert len(clip_paths) >= 10
    for path in clip_paths:
        row = labels[path.name]
        info = vio.probe(path)
        assert abs(info.num_frames - int(row["frames"])) <= 1, (path.name, info)
        assert info.fps == pytest.approx(float(row["fps"]), abs=0.01), (path.name, info)
        assert (info.width, info.height) == (int(row["width"]), int(row["height"])), path.name
        assert info.codec == row["video_codec"], (path.name, info.codec)
        assert info.duration == pytest.approx(info.num_frames / info.fps)
        assert info.path == str(path) and info.backend in vio.DEFAULT_BACKENDS


@pytest.mark.shared_data
def test_every_clip_is_read_by_the_reader(clip_paths: list[Path]) -> None:
    for path in clip_paths:
        with vio.open_video(path) as reader:
            n = reader.info.num_frames
            frames = reader.read([0, n // 2, n - 1])
        assert frames.shape == (3, reader.info.height, reader.info.width, 3), path.name
        assert frames.dtype == np.uint8 and frames.std() > 1, path.name  # not blank


@pytest.mark.shared_data
def test_headers_that_lie_are_not_believed(action_clips: Path) -> None:
    # dancer's AVI header claims 1,572 frames and 1,571 decode; the MKV header has no count.
    assert vio.probe(action_clips / "mgt_dancer.avi").num_frames == 1571
    assert vio.probe(action_clips / "k400_flipping_pancake__decord.mkv").num_frames == 310


# ---------------------------------------------------------------- backends agree with each other


@pytest.mark.slow
@pytest.mark.shared_data
def test_backends_agree_on_count_and_frames(clip_paths: list[Path], backend: str) -> None:
    opened = 0
    for path in clip_paths:
        ref = vio.open_video(path, backend="pyav")
        n = ref.info.num_frames
        indices = [0, n // 3, n - 1] if path.name in LONG_CLIPS else [0, n // 4, n // 2, n - 1]
        try:
            other = vio.open_video(path, backend=backend)
            got = other.read(indices)
        except VideoDecodeError as exc:  # e.g. decord and GIF: 'auto' moves on, tested below
            assert path.name in str(exc)
            continue
        opened += 1
        assert abs(other.info.num_frames - n) <= 1, path.name
        mad = _mad(got, ref.read(indices))
        assert mad.max() < NATIVE_MAD, (path.name, backend, mad)
    assert opened >= 7, f"{backend} opened only {opened} of {len(clip_paths)} clips"


# ---------------------------------------------------------------- exact random access


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("clip", LONG_CLIPS)
def test_read_by_index_equals_sequential_decode(action_clips: Path, reference_frames, clip: str, backend: str) -> None:
    indices, expected = reference_frames(clip)
    try:
        got = vio.read_frames(action_clips / clip, indices, backend=backend)
    except VideoDecodeError as exc:
        # torchcodec refuses files whose pts are decode-order counters (see _torchcodec.py).
        assert backend == "torchcodec" and "decode-order" in str(exc), exc
        assert not _scan.scan(action_clips / clip).timestamps_exact
        return
    mad = _mad(got, expected)
    assert mad.max() < NATIVE_MAD, {int(i): round(float(m), 2) for i, m in zip(indices, mad) if m}
    if backend == "pyav":
        assert np.array_equal(got, expected)


@pytest.mark.shared_data
def test_decode_order_timestamps_are_detected(action_clips: Path) -> None:
    """The guard that keeps decord/torchcodec off their wrong-frame path on AVI + B-frames."""
    assert not _scan.scan(action_clips / "mgt_pianist.avi").timestamps_exact
    assert _scan.scan(action_clips / "mgt_dancer.avi").timestamps_exact
    assert _scan.scan(action_clips / SHORT_CLIP).timestamps_exact


def _optimal_decode_count(targets: list[int], keyframes: tuple[int, ...]) -> int:
    """Frames an exact reader must decode: from the keyframe before each target, or onward
    from the previous target when no keyframe lies in between."""
    count, next_frame = 0, 0
    for t in targets:
        start = max(k for k in keyframes if k <= t)
        start = next_frame if start < next_frame else start
        count += t - start + 1
        next_frame = t + 1
    return count


@pytest.mark.shared_data
@pytest.mark.parametrize("clip", ["mgt_pianist.avi", "mgt_dancer.avi"])
def test_sparse_read_decodes_only_from_the_keyframe_before_each_frame(
    action_clips: Path, monkeypatch, clip: str
) -> None:
    """16 frames of a long clip: PyAV seeks to the keyframe before each, never decodes it all."""
    from vidseq.io import _pyav

    decoded = []
    original = _pyav._decode

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for item in original(*args, **kwargs):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(_pyav, "_decode", counting)
    path = action_clips / clip
    index = _scan.scan(path)
    targets = np.linspace(0, index.num_frames - 1, 16).round().astype(int).tolist()
    vio.read_frames(path, targets, backend="pyav")
    assert len(decoded) == _optimal_decode_count(targets, index.keyframes)
    # pianist: GOP 250 -> 1,836 of 2,925 frames decoded; dancer: GOP 12 -> 87 of 1,571
    assert len(decoded) < {"mgt_pianist.avi": 0.65, "mgt_dancer.avi": 0.1}[clip] * index.num_frames


# ---------------------------------------------------------------- sizes, order, clamping


@pytest.mark.shared_data
def test_size_int_and_tuple(action_clips: Path, backend: str) -> None:
    path = action_clips / SHORT_CLIP
    native = vio.read_frames(path, [3, 100], backend="pyav")
    short = vio.read_frames(path, [3, 100], size=112, backend=backend)
    exact = vio.read_frames(path, [3, 100], size=(90, 60), backend=backend)
    assert short.shape == (2, 112, 149, 3)  # 256x340 -> shorter side 112, aspect kept
    assert exact.shape == (2, 90, 60, 3) and exact.dtype == np.uint8
    import cv2

    area = np.stack([cv2.resize(f, (149, 112), interpolation=cv2.INTER_AREA) for f in native])
    assert _mad(short, area).max() < RESIZED_MAD


@pytest.mark.shared_data
def test_size_int_on_a_portrait_and_a_square_video(action_clips: Path) -> None:
    gif = action_clips / "ucf101_CricketShot__v_CricketShot_g04_c01_rgb.gif"
    assert vio.read_frames(gif, [0], size=56).shape == (1, 56, 56, 3)
    assert vio._base.output_hw(100, 400, 200) == (200, 100)  # portrait: width is the shorter


@pytest.mark.shared_data
def test_repeated_and_unsorted_indices_come_back_in_order_asked(action_clips: Path, backend: str) -> None:
    path = action_clips / SHORT_CLIP
    asked = [200, 5, 5, 0, 279, 17, 200]
    got = vio.read_frames(path, asked, backend=backend)
    one_by_one = np.stack([vio.read_frames(path, [i], backend="pyav")[0] for i in asked])
    assert got.shape[0] == len(asked)
    assert _mad(got, one_by_one).max() < NATIVE_MAD
    assert np.array_equal(got[0], got[6]) and np.array_equal(got[1], got[2])


@pytest.mark.shared_data
def test_indices_past_the_end_are_clamped(action_clips: Path, backend: str) -> None:
    path = action_clips / "mgt_dancer.avi"  # header claims one frame more than there is
    n = vio.probe(path, backend=backend).num_frames
    got = vio.read_frames(path, [n + 5000, n - 1, n], backend=backend)
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[1], got[2])


@pytest.mark.shared_data
def test_bad_arguments_raise_value_error(action_clips: Path) -> None:
    path = action_clips / SHORT_CLIP
    with pytest.raises(ValueError, match="must be >= 0"):
        vio.read_frames(path, [0, -1])
    with pytest.raises(ValueError, match="must be integers"):
        vio.read_frames(path, [0.5])
    with pytest.raises(ValueError, match="size must be"):
        vio.read_frames(path, [0], size=0)
    with pytest.raises(ValueError, match="size must be"):
        vio.read_frames(path, [0], size=(10,))
    with pytest.raises(ValueError, match="chunk_size must be"):
        next(vio.iter_frames(path, chunk_size=0))


@pytest.mark.shared_data
def test_empty_index_list_gives_an_empty_batch(action_clips: Path) -> None:
    got = vio.read_frames(action_clips / SHORT_CLIP, [], size=(32, 48))
    assert got.shape == (0, 32, 48, 3) and got.dtype == np.uint8


# ---------------------------------------------------------------- sequential decoding


@pytest.mark.shared_data
def test_iter_frames_chunks_cover_every_frame(action_clips: Path, backend: str) -> None:
    path = action_clips / SHORT_CLIP
    n = vio.probe(path).num_frames
    starts, total = [], 0
    for start, chunk in vio.iter_frames(path, backend=backend, chunk_size=64, size=64):
        assert start == total and 1 <= len(chunk) <= 64 and chunk.shape[1:] == (64, 85, 3)
        if start == 128:
            direct = vio.read_frames(path, range(128, 128 + len(chunk)), size=64, backend=backend)
            assert _mad(chunk, direct).max() < NATIVE_MAD
        starts.append(start)
        total += len(chunk)
    assert total == n and starts == [0, 64, 128, 192, 256]


@pytest.mark.slow
@pytest.mark.shared_data
def test_iter_frames_equals_reference_on_a_long_clip(action_clips: Path, reference_frames, backend: str) -> None:
    clip = "opencv_vtest_pedestrians_walking.avi"
    indices, expected = reference_frames(clip)
    got = {}
    for start, chunk in vio.iter_frames(action_clips / clip, backend=backend, chunk_size=100):
        for i in indices[(indices >= start) & (indices < start + len(chunk))]:
            got[int(i)] = chunk[i - start]
    assert sorted(got) == indices.tolist()
    assert _mad(np.stack([got[int(i)] for i in indices]), expected).max() < NATIVE_MAD


# ---------------------------------------------------------------- backends table and fallback


def test_available_backends_and_default_order() -> None:
    assert set(vio.DEFAULT_BACKENDS) == set(ALL_BACKENDS)
    found = vio.available_backends()
    assert "pyav" in found and set(found) <= set(ALL_BACKENDS)
    assert found == [name for name in vio.DEFAULT_BACKENDS if name in found]


def test_unknown_or_missing_backend_raises_with_the_fix(monkeypatch) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown video backend 'ffmpeg'"):
        vio.open_video("x.mp4", backend="ffmpeg")
    monkeypatch.setitem(_backends._loaded, "decord", "No module named 'decord'")
    with pytest.raises(BackendUnavailableError, match="pip install decord"):
        vio.probe("x.mp4", backend="decord")
    assert "decord" not in vio.available_backends()


@pytest.mark.shared_data
def test_auto_falls_back_when_a_backend_cannot_open_the_file(
    action_clips: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_unless_installed("decord")
    monkeypatch.setattr(_backends, "DEFAULT_BACKENDS", ("decord", "pyav"))
    gif = action_clips / "ucf101_CricketShot__v_CricketShot_g04_c01_rgb.gif"  # decord cannot
    with vio.open_video(gif) as reader:
        assert reader.info.backend == "pyav"
        assert reader.read([0, 78]).shape == (2, 224, 224, 3)


@pytest.mark.shared_data
def test_auto_falls_back_when_a_backend_yields_no_frames(action_clips: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidseq.io import _pyav

    def broken(self, indices, out_hw):  # noqa: ANN001, ANN202
        raise VideoDecodeError(self.index.path, "no frame could be decoded (corrupt data)")

    monkeypatch.setattr(_pyav.PyAVDecoder, "read", broken)
    monkeypatch.setattr(_backends, "DEFAULT_BACKENDS", ("pyav", "opencv"))
    path = action_clips / SHORT_CLIP
    with vio.open_video(path) as reader:
        assert reader.read([10]).shape == (1, 256, 340, 3)
        assert reader.info.backend == "opencv"
    with pytest.raises(VideoDecodeError, match=r"mmaction2_demo\.mp4: no frame could be decoded"):
        vio.read_frames(path, [10], backend="pyav")


def test_importing_vidseq_io_imports_no_decoder() -> None:
    code = (
        "import sys, vidseq.io; print([m for m in ('av', 'cv2', 'decord', 'torchcodec', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_io_imports_nothing_of_vidseq_but_errors_and_atomic() -> None:
    package = Path(vio.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidseq"):
                if node.module == "vidseq" and [a.name for a in node.names] == ["atomic"]:
                    continue  # the video writer writes atomically, like every file writer
                assert node.module == "vidseq.errors" or node.module.startswith("vidseq.io"), (
                    f"{module.name} imports {node.module}"
                )


# ---------------------------------------------------------------- laziness and fork safety


def test_open_video_opens_nothing_until_used(tmp_path: Path) -> None:
    reader = vio.open_video(tmp_path / "not-yet.mp4")  # no error: nothing is read yet
    with pytest.raises(VideoDecodeError, match="not-yet.mp4: file does not exist"):
        _ = reader.info


@pytest.mark.timeout(120)
@pytest.mark.shared_data
def test_reader_used_before_dataloader_workers_fork(action_clips: Path, backend: str) -> None:
    """dmlc/decord#294: a reader made (and used) in the parent must not deadlock in workers."""
    torch = pytest.importorskip("torch")
    reader = vio.open_video(action_clips / SHORT_CLIP, backend=backend)
    expected = reader.read([0, 50])  # the decoder now exists in the parent

    class Frames(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> np.ndarray:
            return reader.read([0, 50])[i]

    loader = torch.utils.data.DataLoader(
        Frames(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    got = np.stack([np.asarray(frame) for frame in loader])
    assert np.array_equal(got, expected)
    clone = pickle.loads(pickle.dumps(reader))  # spawn-style workers get a pickled reader
    assert np.array_equal(clone.read([0, 50]), expected)
    reader.close()
