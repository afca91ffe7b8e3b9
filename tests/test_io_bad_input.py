"""Bad files, each made here in tmp_path: every backend must name the file and say what is wrong,
never hang and never crash the process.

Truncated files (decided in vidseq.io): a file cut short is readable for the part that is
there. ``probe`` reports the frames that are really there (its header still claims the full
length), frames in that part are exactly the original's, and indices past the cut are clamped
to the last decodable frame like any index past the end. A file cut before its index (an mp4
whose ``moov`` atom is at the end) cannot be opened: VideoDecodeError ("... truncated ...").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vidseq import io as vio
from vidseq.errors import BackendUnavailableError, VideoDecodeError
from vidseq.io import _backends

BACKENDS = ("auto", "pyav", "opencv", "decord", "torchcodec")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param != "auto":
        try:
            _backends.backend_module(request.param)
        except BackendUnavailableError as exc:
            pytest.skip(f"backend {request.param} is not installed here: {exc}")
    return request.param


def _write_audio_only(path: Path) -> Path:
    """An .m4a holding one AAC stream and no video, written with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _cut(source: Path, target: Path, fraction: float = 0.4) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _make_bad(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A bad file of ``kind`` and a regex its error reason must match."""
    if kind == "missing":
        return tmp_path / "no_such_clip.mp4", "file does not exist"
    if kind == "empty":
        path = tmp_path / "zero_bytes.mp4"
        path.write_bytes(b"")
        return path, r"empty file \(0 bytes\)"
    if kind == "random":
        path = tmp_path / "random_bytes.mp4"
        noise = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8)
        path.write_bytes(noise.tobytes())
        return path, "not a video"
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("label,file\nwalking,clip.mp4\n" * 50)
        return path, "not a video"
    if kind == "directory":
        path = tmp_path / "folder.mp4"
        path.mkdir()
        return path, "is a directory"
    if kind == "audio_only":
        path = _write_audio_only(tmp_path / "speech_only.m4a")
        return path, r"no video stream \(streams found: audio \(aac\)\)"
    raise AssertionError(kind)


BAD_KINDS = ("missing", "empty", "random", "text", "directory", "audio_only")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_video_decode_error_naming_it(tmp_path: Path, kind: str, backend: str) -> None:
    path, reason = _make_bad(kind, tmp_path)
    pattern = re.escape(path.name) + ".*" + reason
    with pytest.raises(VideoDecodeError, match=pattern) as probed:
        vio.probe(path, backend=backend)
    assert probed.value.path == str(path)
    with pytest.raises(VideoDecodeError, match=pattern):
        vio.read_frames(path, [0, 1], backend=backend)
    with pytest.raises(VideoDecodeError, match=pattern):
        next(vio.iter_frames(path, backend=backend))


@pytest.mark.timeout(60)
def test_error_lists_every_backend_tried(tmp_path: Path) -> None:
    path, _ = _make_bad("audio_only", tmp_path)
    with pytest.raises(VideoDecodeError, match=r"backends tried: ") as caught:
        vio.probe(path)
    for name in vio.available_backends():
        assert name in str(caught.value).split("backends tried:")[1]


@pytest.mark.timeout(60)
@pytest.mark.shared_data
def test_truncated_avi_reads_what_is_there(action_clips: Path, tmp_path: Path, backend: str) -> None:
    original = action_clips / "mgt_dancer.avi"  # index at the end: cutting it loses the index
    path = _cut(original, tmp_path / "dancer_cut.avi")
    info = vio.probe(path, backend=backend)
    assert 500 < info.num_frames < 1571 * 0.45  # the header still claims 1,572
    inside = [0, 123, info.num_frames // 2, info.num_frames - 1]
    got = vio.read_frames(path, inside + [1500], backend=backend)
    expected = vio.read_frames(original, inside, backend="pyav")
    assert np.array_equal(got[:4], expected)
    assert np.array_equal(got[4], got[3])  # past the cut: clamped to the last decodable frame
    total = sum(len(chunk) for _, chunk in vio.iter_frames(path, backend=backend))
    assert total == info.num_frames


def _faststart_copy(source: Path, target: Path) -> Path:
    """Remux an mp4 with its index (moov) first, as streaming encoders write it."""
    import av

    options = {"movflags": "faststart"}
    with av.open(str(source)) as src, av.open(str(target), "w", options=options) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    return target


@pytest.mark.timeout(60)
@pytest.mark.shared_data
def test_truncated_mp4_with_index_first(action_clips: Path, tmp_path: Path, backend: str) -> None:
    """The header says 280 frames, the data stops near 107 and its last packet is cut in two."""
    original = action_clips / "k400_arm_wrestling__mmaction2_demo.mp4"
    path = _cut(_faststart_copy(original, tmp_path / "full.mp4"), tmp_path / "arm_cut.mp4")
    try:
        info = vio.probe(path, backend=backend)
        got = vio.read_frames(path, [0, 60, 279], backend=backend)
    except VideoDecodeError as exc:  # decord cannot open it; torchcodec fails at the cut
        assert backend in ("decord", "torchcodec") and "arm_cut.mp4" in str(exc), exc
        return
    assert 90 < info.num_frames < 112
    assert np.array_equal(got[:2], vio.read_frames(original, [0, 60], backend="pyav"))
    assert got.shape == (3, 256, 340, 3)


@pytest.mark.timeout(60)
@pytest.mark.shared_data
def test_truncated_mp4_with_index_last_cannot_be_opened(action_clips: Path, tmp_path: Path, backend: str) -> None:
    path = _cut(action_clips / "k400_arm_wrestling__mmaction2_demo.mp4", tmp_path / "arm_cut.mp4")
    with pytest.raises(VideoDecodeError, match=r"arm_cut\.mp4: not a video.*truncated"):
        vio.probe(path, backend=backend)
    with pytest.raises(VideoDecodeError, match=r"arm_cut\.mp4: not a video.*truncated"):
        vio.read_frames(path, [0], backend=backend)
