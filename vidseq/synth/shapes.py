"""Moving shapes: seed -> a clip of one shape moving, growing, turning or fading over a scene.

Place in the data flow: a *source* of videos (``synth.kind: shapes``, the default); the dataset
writer (``vidseq.synth._dataset``) plans the clips, renders them here and writes the files.

Classes differ by motion and temporal order alone. Each pair (move_right/move_left, grow/shrink,
rotate_cw/rotate_ccw, appear/disappear) is one forward renderer and its exact time reversal: the
partner class draws scene and trajectory from the same distribution and returns the clip reversed.
So the *set* of frames of a video has one distribution for both classes of a pair, and a model
that ignores frame order (mean of frame features) is at chance within a pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidseq.config import SYNTH_CLASSES
from vidseq.errors import ConfigError
from vidseq.synth.camera import CAMERA_CLASSES

# class -> (renderer, reversed in time?)
_CLASS_RENDER: dict[str, tuple[str, bool]] = {
    "move_right": ("move", False), "move_left": ("move", True),
    "grow": ("grow", False), "shrink": ("grow", True),
    "rotate_cw": ("rotate", False), "rotate_ccw": ("rotate", True),
    "appear": ("appear", False), "disappear": ("appear", True),
}  # fmt: skip
assert set(_CLASS_RENDER) == set(SYNTH_CLASSES), "every synth class needs a renderer"


# ---------------------------------------------------------------- shapes and scenes


def _unit(points: list[tuple[float, float]]) -> np.ndarray:
    """Centre a polygon on its vertex mean; scale it so its farthest vertex is at radius 1."""
    pts = np.asarray(points, dtype=np.float64)
    pts -= pts.mean(axis=0)
    return pts / np.linalg.norm(pts, axis=1).max()


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return list(zip(radii * np.cos(angles), radii * np.sin(angles)))


# Elongated, without rotational symmetry: the orientation is visible (and measurable by moments).
ORIENTED_SHAPES: dict[str, np.ndarray] = {
    "arrow": _unit([(-1, -.2), (.3, -.2), (.3, -.5), (1, 0), (.3, .5), (.3, .2), (-1, .2)]),
    "triangle": _unit([(0, -1), (.45, .8), (-.45, .8)]),
    "ell": _unit([(-.5, -1), (-.1, -1), (-.1, .6), (.6, .6), (.6, 1), (-.5, 1)]),
    "tee": _unit([(-.7, -1), (.7, -1), (.7, -.6), (.2, -.6), (.2, 1), (-.2, 1), (-.2, -.6),
                  (-.7, -.6)]),
    "flag": _unit([(-.4, -1), (.7, -.65), (-.2, -.3), (-.2, 1), (-.4, 1)]),
}  # fmt: skip
SYMMETRIC_SHAPES: dict[str, np.ndarray] = {  # moved, grown and faded, never rotated
    "circle": _unit(_star(24, 1.0)),
    "square": _unit([(-1, -1), (1, -1), (1, 1), (-1, 1)]),
    "star": _unit(_star(5, 0.45)),
    "cross": _unit([(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                    (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)]),
}  # fmt: skip
ALL_SHAPES = {**ORIENTED_SHAPES, **SYMMETRIC_SHAPES}
_LUMA = np.array([0.299, 0.587, 0.114])
_MIN_CONTRAST = 60.0  # luma gap between the object and every background pixel (0-255)


@dataclass
class _Track:
    """Per-frame state of the object: centre (px), bounding radius (px), angle (rad), opacity."""

    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


@dataclass
class _Clip:
    """A rendered clip and what made it (tests measure the object against the background)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    background: np.ndarray  # (H, W, 3) uint8 RGB, static distractors included
    track: _Track
    shape: str


def _color(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A random RGB colour whose luma lies in [lo, hi] (rejection sampling)."""
    for _ in range(10_000):
        rgb = rng.uniform(0, 255, size=3)
        if lo <= rgb @ _LUMA <= hi:
            return rgb
    return np.full(3, (lo + hi) / 2)


def _background(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
    """Plain colour, linear gradient or low-frequency texture, then 0-3 static distractors."""
    import cv2

    base = _color(rng, 25, 85) if dark else _color(rng, 170, 230)
    bg = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
    kind = rng.choice(["plain", "gradient", "texture"])
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
        ramp = np.cos(theta) * xx + np.sin(theta) * yy  # in [-0.71, 0.71]
        bg = bg + ramp[..., None] * rng.uniform(-28, 28, size=3)
    elif kind == "texture":
        cells = int(rng.integers(3, 8))
        coarse = rng.uniform(-20, 20, size=(cells, cells, 3)).astype(np.float32)
        bg = bg + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 4))):
        color = _color(rng, 15, 110) if dark else _color(rng, 145, 240)
        shape = ALL_SHAPES[rng.choice(sorted(ALL_SHAPES))]
        cx, cy = rng.uniform(0, size, size=2)
        mask = _mask(shape, size, cx, cy, rng.uniform(0.04, 0.1) * size, rng.uniform(0, 2 * np.pi))
        bg = bg + (color - bg) * mask[..., None]
    return np.clip(bg, 0, 255)


def _object_color(rng: np.random.Generator, background: np.ndarray, dark: bool) -> np.ndarray:
    """An object colour at least ``_MIN_CONTRAST`` luma away from every background pixel."""
    luma = background @ _LUMA
    if dark:
        return _color(rng, min(luma.max() + _MIN_CONTRAST, 250), 250)
    return _color(rng, 5, max(luma.min() - _MIN_CONTRAST, 5))


def _mask(shape: np.ndarray, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the polygon; the angle grows clockwise (y is down)."""
    import cv2

    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = shape @ rot.T * radius + (cx, cy)
    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float64) / 255.0


# ---------------------------------------------------------------- trajectories (forward direction)


def _ramp(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Progress 0 -> 1 over a random part of the clip (margins up to 20%), linear or smoothstep."""
    t = np.linspace(0.0, 1.0, num_frames)
    start, end = rng.uniform(0, 0.2), 1 - rng.uniform(0, 0.2)
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return u * u * (3 - 2 * u) if rng.random() < 0.5 else u


def _inside(rng: np.random.Generator, size: int, radius: float, count: int = 2) -> np.ndarray:
    """Centre coordinates that keep a disc of ``radius`` (plus 1 px) inside the frame."""
    return rng.uniform(radius + 1, size - radius - 1, size=count)


def _still(n: int, cx: float, cy: float, radius: float, rng: np.random.Generator) -> _Track:
    """An object that stays put, fully opaque, at a random angle (renderers change one field)."""
    angle = rng.uniform(0, 2 * np.pi)
    return _Track(*(np.full(n, float(v)) for v in (cx, cy, radius, angle, 1.0)))


def _track_move(rng: np.random.Generator, n: int, size: int) -> _Track:
    """Left to right across 40-70% of the width, with a little vertical drift."""
    r = rng.uniform(0.06, 0.12) * size
    dist = min(rng.uniform(0.4, 0.7) * size, size - 2 * r - 2)
    x0 = rng.uniform(r + 1, size - r - 1 - dist)
    y0, y1 = _inside(rng, size, r)
    track, u = _still(n, x0, y0, r, rng), _ramp(rng, n)
    track.cx = x0 + dist * u
    track.cy = y0 + np.clip(y1 - y0, -0.1 * size, 0.1 * size) * u
    return track


def _track_grow(rng: np.random.Generator, n: int, size: int) -> _Track:
    """Extent (2 x radius) from 12-18% to 50-65% of the frame; the centre stays."""
    r0, r1 = rng.uniform(0.06, 0.09) * size, rng.uniform(0.25, 0.325) * size
    track = _still(n, *_inside(rng, size, r1), r1, rng)
    track.radius = r0 + (r1 - r0) * _ramp(rng, n)
    return track


def _track_rotate(rng: np.random.Generator, n: int, size: int) -> _Track:
    """Clockwise by 90-180 degrees (at most 60 degrees a frame, so the sense stays visible)."""
    r = rng.uniform(0.15, 0.25) * size
    track = _still(n, *_inside(rng, size, r), r, rng)
    turn = min(np.deg2rad(rng.uniform(90, 180)), np.deg2rad(60) * (n - 1))
    track.angle = track.angle + turn * _ramp(rng, n)
    return track


def _track_appear(rng: np.random.Generator, n: int, size: int) -> _Track:
    """Opacity fades 0 -> 1; the object stays where it is."""
    r = rng.uniform(0.1, 0.2) * size
    track = _still(n, *_inside(rng, size, r), r, rng)
    track.alpha = _ramp(rng, n)
    return track


_TRACKS = {"move": _track_move, "grow": _track_grow, "rotate": _track_rotate,
           "appear": _track_appear}  # fmt: skip


# ---------------------------------------------------------------- rendering


def check_class(class_name: str) -> None:
    """Raise ConfigError (naming the valid classes) unless ``class_name`` is a shapes class."""
    if class_name not in _CLASS_RENDER:
        hint = " (a camera class: set synth.kind=camera)" if class_name in CAMERA_CLASSES else ""
        raise ConfigError(f"unknown synth class {class_name!r}; valid classes are: {', '.join(SYNTH_CLASSES)}{hint}")


def _render(class_name: str, rng: np.random.Generator, *, num_frames: int, size: int, noise: float) -> _Clip:
    """Draw a scene and a forward trajectory, render, add noise; reverse for the partner class."""
    check_class(class_name)
    kind, reverse = _CLASS_RENDER[class_name]
    dark = bool(rng.random() < 0.5)
    background = _background(rng, size, dark)
    color = _object_color(rng, background, dark)
    shape = str(rng.choice(sorted(ORIENTED_SHAPES if kind == "rotate" else ALL_SHAPES)))
    track = _TRACKS[kind](rng, num_frames, size)
    frames = np.empty((num_frames, size, size, 3), dtype=np.float32)
    for t in range(num_frames):
        mask = (
            _mask(ALL_SHAPES[shape], size, track.cx[t], track.cy[t], track.radius[t], track.angle[t]) * track.alpha[t]
        )
        frames[t] = background + (color - background) * mask[..., None]
    if noise > 0:
        frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise * 255)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    if reverse:
        frames = np.ascontiguousarray(frames[::-1])
        track = _Track(*(a[::-1].copy() for a in vars(track).values()))
    return _Clip(frames, np.clip(np.rint(background), 0, 255).astype(np.uint8), track, shape)


def render_clip(
    class_name: str, rng: np.random.Generator, *, num_frames: int = 32, size: int = 112, noise: float = 0.03
) -> np.ndarray:
    """One random clip of ``class_name``: ``(num_frames, size, size, 3)`` uint8 RGB.

    ``noise`` is the std of Gaussian pixel noise as a fraction of 255. A reversed class
    (move_left, shrink, rotate_ccw, disappear) gives its partner's clip for the same generator
    state, reversed in time.
    """
    if num_frames < 1 or size < 8:
        raise ConfigError(f"render_clip needs num_frames >= 1 and size >= 8: {num_frames}, {size}")
    return _render(class_name, rng, num_frames=num_frames, size=size, noise=noise).frames
