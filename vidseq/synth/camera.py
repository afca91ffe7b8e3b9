"""Synthetic camera motion over real photos: source image + seed -> a clip filmed by a virtual camera.

Place in the data flow: a *source* of videos, like ``vidseq.synth.shapes`` (the dataset writer,
``vidseq.synth._dataset``, writes these clips: ``generate_dataset`` with ``synth.kind: camera``
plans them here and writes them with the shapes generator's files, marker and ``labels.csv``).
This module renders only; it reads photos (from ``synth.images`` or scikit-image's bundled ones)
and, for video sources, one frame via ``vidseq.io`` (so ``vidseq.synth`` is above io in
tests/test_layering.py).

A virtual camera looks at a square window of the photo; per frame the window's centre, side and
roll give an affine map (output pixel -> photo pixel) rendered by ``cv2.warpAffine``. Classes come
in time-reversed pairs, named as a camera operator would:

- ``pan_right``/``pan_left``: the window slides along the camera's x axis (the picture slides
  left/right across the frame); ``pan_down``/``pan_up`` likewise along its y axis.
- ``zoom_in``/``zoom_out``: the window shrinks 1.6-2.4x around a fixed centre (geometrically, a
  constant zoom rate), so the picture grows/shrinks.
- ``rotate_cw``/``rotate_ccw``: the camera rolls by 45-120 degrees, so the picture turns
  clockwise/counter-clockwise on screen.
- ``fade_in``/``fade_out``: the camera holds still while the brightness ramps up from dark (2-12 %
  of full) to full / down to dark: what optical flow cannot see (the motion stream's ``intensity``
  part does). Asked for by name: the default classes are the eight camera motions
  (``CAMERA_DEFAULT_CLASSES``), so that sets and measurements made before the fades stay as they
  were.

As in the shapes generator, the second class of a pair is the first one's clip for the same
generator state, reversed in time: the set of frames has one distribution for both classes, only
their order tells them apart. Every clip's group is its source image, and splits are made by
group (see ``plan_clips``): a scene seen in training never appears in val or test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import SYNTH_CLASSES, SynthConfig
from vidseq.errors import ConfigError, DatasetError

# class -> (motion, reversed in time?)
_CLASS_MOTION: dict[str, tuple[str, bool]] = {
    "pan_right": ("pan_x", False), "pan_left": ("pan_x", True),
    "pan_down": ("pan_y", False), "pan_up": ("pan_y", True),
    "zoom_in": ("zoom", False), "zoom_out": ("zoom", True),
    "rotate_cw": ("rotate", False), "rotate_ccw": ("rotate", True),
    "fade_in": ("fade", False), "fade_out": ("fade", True),
}  # fmt: skip
CAMERA_CLASSES: tuple[str, ...] = tuple(_CLASS_MOTION)
# what `vidseq synth --kind camera` writes unless synth.classes names others: the camera motions
CAMERA_DEFAULT_CLASSES: tuple[str, ...] = tuple(name for name, (kind, _) in _CLASS_MOTION.items() if kind != "fade")

# scikit-image photos that ship inside its wheel (no download) and show motion well when filmed
# (measured: the flow of 60 small clips of each): left out are moon and cell (too flat), brick and
# page (periodic: motion is ambiguous), rocket (mostly sky), colorwheel and clock.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "motorcycle", "retina",
)  # fmt: skip
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MIN_SOURCES = 3  # one scene each for train, val and test at least
_SOURCE_SCALE = 2.5  # photos are first shrunk to a shorter side of 2.5 x the clip size (no aliasing)
_MAX_ROLL = np.deg2rad(10)  # pans and zooms are filmed with a slightly tilted camera
_DARK = (0.02, 0.12)  # a fade starts (fade_in) or ends (fade_out) at this fraction of full brightness


@dataclass(frozen=True)
class Source:
    """One scene to film: an image or video file, or a bundled photo. ``group`` names it."""

    group: str
    path: Path | None = None
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    def frame(self, rng: np.random.Generator) -> np.ndarray:
        """The picture as ``(H, W, 3)`` uint8 RGB (a video: a random frame of it)."""
        if self.pixels is not None:
            return self.pixels
        assert self.path is not None
        if self.path.suffix.lower() in IMAGE_EXTENSIONS:
            return _read_image(self.path)
        from vidseq.io import probe, read_frames

        index = int(rng.integers(probe(self.path).num_frames))
        return np.asarray(read_frames(self.path, [index]))[0]


@dataclass(frozen=True)
class CameraClip:
    """One planned clip: what ``vidseq.synth`` writes to ``<class_name>/<class_name>_<index>.mp4``."""

    class_name: str
    index: int
    split: str
    source: Source
    rng: np.random.Generator = field(repr=False, compare=False)
    num_frames: int = 32
    size: int = 112
    noise: float = 0.03

    @property
    def group(self) -> str:
        return self.source.group

    def render(self) -> np.ndarray:
        """The clip, ``(num_frames, size, size, 3)`` uint8 RGB (the same every time)."""
        rng = copy.deepcopy(self.rng)
        return render_camera_clip(
            self.class_name, self.source.frame(rng), rng, num_frames=self.num_frames, size=self.size, noise=self.noise
        )


# ---------------------------------------------------------------- classes and sources


def camera_classes(classes: list[str] | tuple[str, ...]) -> list[str]:
    """The camera classes to write: ``synth.classes``, or the camera motions (``CAMERA_DEFAULT_CLASSES``)
    where it is the shapes default."""
    if list(classes) == list(SYNTH_CLASSES):
        return list(CAMERA_DEFAULT_CLASSES)
    for name in classes:
        _check_class(name)
    if not classes:
        raise ConfigError(f"synth.classes is empty; choose from: {', '.join(CAMERA_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"synth.classes lists a class twice: {list(classes)}")
    return list(classes)


def _check_class(name: str) -> None:
    if name not in _CLASS_MOTION:
        hint = " (a shapes class: set synth.kind=shapes to draw it)" if name in SYNTH_CLASSES else ""
        raise ConfigError(
            f"unknown camera class {name!r}{hint}; with synth.kind=camera the valid "
            f"classes are: {', '.join(CAMERA_CLASSES)}"
        )


def find_sources(images: str | Path | None) -> list[Source]:
    """The scenes to film, sorted by group: the image and video files under ``images``
    (recursively; group = path relative to it), or scikit-image's bundled photos for None."""
    if images is None:
        return _skimage_sources()
    root = Path(images).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"synth.images: {root} is not a folder; point it at a folder of images "
            "(.jpg, .png, ...) or videos, or leave it null for scikit-image's photos"
        )
    from vidseq.datasets import VIDEO_EXTENSIONS

    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in media
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    sources = [Source(p.relative_to(root).as_posix(), p) for p in files]
    _check_count(sources, f"{root}")
    return sources


def _skimage_sources() -> list[Source]:
    try:
        import skimage.data
    except ImportError:
        raise ConfigError(
            "synth.images is null, which films scikit-image's bundled photos, but "
            "scikit-image is not installed: pip install scikit-image, or set "
            "synth.images to a folder of images"
        ) from None
    photos = {name: _load_photo(skimage.data, name) for name in SKIMAGE_PHOTOS}
    sources = [Source(name, None, _as_rgb(pixels)) for name, pixels in photos.items() if pixels is not None]
    _check_count(sources, "scikit-image's bundled photos")
    return sources


def _load_photo(data: Any, name: str) -> np.ndarray | None:
    """A bundled photo, or None where this scikit-image does not ship it (or would download it)."""
    try:
        loaded = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    except Exception:  # noqa: BLE001 - missing file, missing pooch, renamed function: leave it out
        return None
    return np.asarray(loaded)


def _check_count(sources: list[Source], where: str) -> None:
    if len(sources) < MIN_SOURCES:
        raise ConfigError(
            f"synth.images: {len(sources)} images or videos found in {where}; the camera generator "
            f"needs at least {MIN_SOURCES} (each split films its own scenes, so that no scene is in "
            "two splits): add images (.jpg, .png, ...) or videos to the folder"
        )


def _read_image(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)  # imdecode: any path, also non-ASCII
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise DatasetError(
            f"{path}: OpenCV cannot read this image; convert it to PNG or JPEG or remove it from synth.images"
        )
    return np.ascontiguousarray(bgr[..., ::-1])


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from grey, RGBA, bool or float photos."""
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) * (255 if image.max() <= 1 else 1)).clip(0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


# ---------------------------------------------------------------- the plan


def plan_clips(
    config: SynthConfig, *, splits: Callable[[int, str], list[str]], rng_of: Callable[[str, int], np.random.Generator]
) -> list[CameraClip]:
    """Every clip of a camera dataset, class by class, with its split and source scene.

    ``splits(count, name)`` gives the train/val/test of ``count`` things (of class ``name``),
    ``rng_of(name, index)`` the generator of clip ``index`` (``vidseq.synth`` passes its own
    ``split_names`` and ``video_rng``). The scenes are split first (by ``splits(n, "<scenes>")``);
    each clip then films a random scene of its own split, so a group is never on two sides.
    """
    classes = camera_classes(config.classes)
    sources = find_sources(config.images)
    side = dict(zip((s.group for s in sources), splits(len(sources), "<scenes>")))
    clips = []
    for name in classes:
        for index, split in enumerate(splits(config.videos_per_class, name)):
            rng = rng_of(name, index)
            pool = [s for s in sources if side[s.group] == split]
            clips.append(
                CameraClip(
                    name,
                    index,
                    split,
                    pool[int(rng.integers(len(pool)))],
                    rng,
                    config.num_frames,
                    config.size,
                    config.noise,
                )
            )
    return clips


# ---------------------------------------------------------------- camera paths (forward direction)


@dataclass
class _Path:
    """Per-frame camera: window centre (photo px), window side (photo px), roll (rad)."""

    cx: np.ndarray
    cy: np.ndarray
    side: np.ndarray
    roll: np.ndarray


def _progress(rng: np.random.Generator, n: int) -> np.ndarray:
    """0 -> 1 over a random part of the clip (margins up to 15%), at constant speed or eased."""
    t = np.linspace(0.0, 1.0, n)
    start, end = rng.uniform(0, 0.15), 1 - rng.uniform(0, 0.15)
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return u * u * (3 - 2 * u) if rng.random() < 0.5 else u


def _half_extent(side: float, roll: float) -> float:
    """Half the bounding box of a square window of ``side`` rolled by ``roll``."""
    return side / 2 * (abs(np.cos(roll)) + abs(np.sin(roll)))


def _pan(rng: np.random.Generator, n: int, height: int, width: int, axis: int) -> _Path:
    """The window (40-60% of the shorter side) travels 35-70% of its side along the camera's axis."""
    side = rng.uniform(0.4, 0.6) * min(height, width)
    roll = rng.uniform(-_MAX_ROLL, _MAX_ROLL)
    e = _half_extent(side, roll) + 1
    direction = np.array([np.cos(roll), np.sin(roll)]) if axis == 0 else np.array([-np.sin(roll), np.cos(roll)])
    lo, hi = np.array([e, e]), np.array([width - e, height - e])
    room = (hi - lo) / np.maximum(np.abs(direction), 1e-9)
    travel = min(rng.uniform(0.35, 0.7) * side, 0.999 * room.min())
    move = travel * direction
    start = rng.uniform(lo - np.minimum(move, 0), hi - np.maximum(move, 0))
    u = _progress(rng, n)
    return _Path(start[0] + move[0] * u, start[1] + move[1] * u, np.full(n, side), np.full(n, roll))


def _zoom(rng: np.random.Generator, n: int, height: int, width: int) -> _Path:
    """The window shrinks from 55-80% of the shorter side by 1.6-2.4x, at a constant log rate."""
    side = rng.uniform(0.55, 0.8) * min(height, width)
    roll = rng.uniform(-_MAX_ROLL, _MAX_ROLL)
    e = _half_extent(side, roll) + 1
    cx, cy = rng.uniform(e, width - e), rng.uniform(e, height - e)
    sides = side * rng.uniform(1.6, 2.4) ** -_progress(rng, n)
    return _Path(np.full(n, cx), np.full(n, cy), sides, np.full(n, roll))


def _rotate(rng: np.random.Generator, n: int, height: int, width: int) -> _Path:
    """The camera rolls by 45-120 degrees (at most 30 a frame) about a fixed centre: the picture
    turns clockwise on screen (y points down, so that is a decreasing roll)."""
    side = rng.uniform(0.4, 0.6) * min(height, width)
    r = side / np.sqrt(2) + 1  # the window's corners stay inside at any roll
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    turn = min(np.deg2rad(rng.uniform(45, 120)), np.deg2rad(30) * (n - 1))
    roll = rng.uniform(-_MAX_ROLL, _MAX_ROLL) - turn * _progress(rng, n)
    return _Path(np.full(n, cx), np.full(n, cy), np.full(n, side), roll)


def _still(rng: np.random.Generator, n: int, height: int, width: int) -> _Path:
    """The camera holds still: a window of 40-80% of the shorter side, slightly tilted."""
    side = rng.uniform(0.4, 0.8) * min(height, width)
    roll = rng.uniform(-_MAX_ROLL, _MAX_ROLL)
    e = _half_extent(side, roll) + 1
    cx, cy = rng.uniform(e, width - e), rng.uniform(e, height - e)
    return _Path(np.full(n, cx), np.full(n, cy), np.full(n, side), np.full(n, roll))


def _camera_path(motion: str, rng: np.random.Generator, n: int, height: int, width: int) -> _Path:
    if motion == "fade":
        return _still(rng, n, height, width)
    if motion == "zoom":
        return _zoom(rng, n, height, width)
    if motion == "rotate":
        return _rotate(rng, n, height, width)
    return _pan(rng, n, height, width, axis=0 if motion == "pan_x" else 1)


# ---------------------------------------------------------------- rendering


def _prepare(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8, shrunk (area filter) so the shorter side is at most 2.5 x size, maybe mirrored."""
    import cv2

    image = _as_rgb(np.asarray(image))
    limit = round(_SOURCE_SCALE * size)
    if min(image.shape[:2]) > limit:
        scale = limit / min(image.shape[:2])
        width, height = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[:, ::-1]) if rng.random() < 0.5 else image


def _film(image: np.ndarray, path: _Path, size: int) -> np.ndarray:
    """Warp the photo once per frame: output pixel p -> photo c + (side/size) R(roll) (p - o)."""
    import cv2

    centre = (size - 1) / 2
    frames = np.empty((len(path.cx), size, size, 3), dtype=np.uint8)
    for t in range(len(path.cx)):
        scale, roll = path.side[t] / size, path.roll[t]
        a = scale * np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        b = np.array([path.cx[t], path.cy[t]]) - a @ np.array([centre, centre])
        frames[t] = cv2.warpAffine(
            image,
            np.hstack([a, b[:, None]]),
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT101,
        )
    return frames


def render_camera_clip(
    class_name: str,
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    num_frames: int = 32,
    size: int = 112,
    noise: float = 0.03,
) -> np.ndarray:
    """A clip of ``class_name`` filmed over ``image``: ``(num_frames, size, size, 3)`` uint8 RGB.

    ``image`` is ``(H, W[, 3|4])`` (grey and RGBA are converted). ``noise`` is the std of Gaussian
    pixel noise as a fraction of 255 (added after a fade's gain: the sensor's noise stays). A
    reversed class (pan_left, pan_up, zoom_out, rotate_ccw, fade_out) gives its partner's clip
    for the same generator state, reversed in time.
    """
    _check_class(class_name)
    if num_frames < 1 or size < 8:
        raise ConfigError(f"render_camera_clip needs num_frames >= 1 and size >= 8: {num_frames}, {size}")
    motion, reverse = _CLASS_MOTION[class_name]
    picture = _prepare(image, size, rng)
    path = _camera_path(motion, rng, num_frames, *picture.shape[:2])
    frames = _film(picture, path, size)
    if motion == "fade":
        frames = _fade(frames, rng)
    if noise > 0:
        noisy = frames + rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise * 255)
        frames = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames[::-1]) if reverse else frames


def _fade(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale each frame's pixels by a gain that ramps from dark (``_DARK``) up to 1 over the clip
    (``_progress``: margins and easing as the camera motions have)."""
    dark = rng.uniform(*_DARK)
    gain = (dark + (1 - dark) * _progress(rng, len(frames))).astype(np.float32)
    return np.rint(frames * gain[:, None, None, None]).astype(np.uint8)
