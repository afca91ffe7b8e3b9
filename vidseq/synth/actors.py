"""Synthetic people over real backgrounds: a person bank + seed -> a clip of two or more people, each
doing a different motion, with each person's class and box in every frame.

Place in the data flow: a *source* of videos, like ``vidseq.synth.shapes`` and ``camera`` (the
dataset writer, ``vidseq.synth._dataset``, plans and writes these clips with ``synth.kind: actors``,
and also writes ``people.csv``: a row per person). The people are ``PersonCutout`` s: sequences of
box crops of real people cut out of real videos by the detector and tracker of
``vidseq.features.person_bank`` (which sits above this layer and hands the bank down); the
backgrounds are ``camera.find_sources``' photos or video frames. This module renders only.

Every person plays their own real frames (a real person moving) at the source's frame rate,
pasted with a soft edge at a box that follows their class's path; the cut-out is mirrored at
random, independently of the class, so a crop's appearance says nothing of the class. Classes come
in time-reversed pairs, told apart by the trajectory (box centre, size and their velocities):

- ``walk_right``/``walk_left``: across 30-55% of the frame's width, at one height.
- ``approach``/``recede``: the person grows 1.5-1.9x and their feet come down (closer to the camera).
- ``rise``/``sink``: up/down by 20-40% of the frame's height (climbing, going down).

As in the other kinds, the second class of a pair is the first one's clip for the same generator
state, reversed in time: the people's paths, their frames (which then play backwards) and the
noise. A clip's label (its folder, ``labels.csv``) is its largest person's class (mean box area:
the others are made smaller); the other people draw distinct other classes. Splits are made by
group twice (see ``plan_clips``): backgrounds, and the videos the people were cut from, so val and
test show backgrounds and people never seen in training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vidseq.config import SYNTH_CLASSES, SynthConfig
from vidseq.errors import ConfigError
from vidseq.synth.camera import Source, find_sources

# class -> (motion, reversed in time?)
_CLASS_MOTION: dict[str, tuple[str, bool]] = {
    "walk_right": ("walk", False), "walk_left": ("walk", True),
    "approach": ("approach", False), "recede": ("approach", True),
    "rise": ("rise", False), "sink": ("rise", True),
}  # fmt: skip
ACTOR_CLASSES: tuple[str, ...] = tuple(_CLASS_MOTION)
_PARTNER = {a: b for a, b in zip(ACTOR_CLASSES[::2], ACTOR_CLASSES[1::2])}
_PARTNER.update({b: a for a, b in list(_PARTNER.items())})
# bundled photos that show a person (the astronaut, the cameraman): a detector would track them too
_PHOTOS_WITH_PEOPLE = frozenset({"astronaut", "camera"})
MIN_PEOPLE_SOURCES = 3  # videos people were cut from: one for train, val and test at least
_MAX_COVER = 0.25  # at most this much of a person's box is covered by people in front
_LARGER = 1.25  # the clip's main person has at least this much more mean box area than the others
_FEATHER = 0.12  # soft edge of a pasted cut-out, as a fraction of its half-width/half-height


@dataclass(frozen=True)
class PersonCutout:
    """One real person, cut out of a video frame after frame: ``frames`` ``uint8 (n, h, w, 3)`` RGB
    (box crops with a margin, all resized to one size), ``inner`` ``float32 (n, 4)`` the person's
    own box in each crop as fractions of the crop (x1, y1, x2, y2), ``fps`` the frames' rate.
    ``source`` names the video (people of one video share a split), ``name`` the person."""

    source: str
    name: str
    frames: np.ndarray = field(repr=False, compare=False)
    inner: np.ndarray = field(repr=False, compare=False)
    fps: float = 25.0

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Actor:
    """A person in a planned clip: class, cut-out, mirrored or not, and per frame of the clip the
    pasted crop's box (``patch``, output pixels), the person's box in it (``box``) and which frame of
    the cut-out plays (``play``); ``visible`` is the frame (index) the person is best seen in."""

    class_name: str
    cutout: PersonCutout
    flip: bool
    patch: np.ndarray  # (T, 4) float64
    box: np.ndarray  # (T, 4) float64
    play: np.ndarray  # (T,) int64
    visible: int = 0

    @property
    def area(self) -> float:
        return float(np.mean((self.box[:, 2] - self.box[:, 0]) * (self.box[:, 3] - self.box[:, 1])))


@dataclass(frozen=True)
class ActorsClip:
    """One planned clip: what ``vidseq.synth`` writes to ``<class_name>/<class_name>_<index>.mp4``.
    ``actors`` are in painting order (the last is in front); ``class_name`` is the largest one's."""

    class_name: str
    index: int
    split: str
    source: Source
    actors: list[Actor] = field(repr=False, compare=False)
    rng: np.random.Generator = field(repr=False, compare=False)
    num_frames: int = 32
    size: int = 112
    noise: float = 0.03
    reverse: bool = False

    @property
    def group(self) -> str:
        return self.source.group

    def render(self) -> np.ndarray:
        """The clip, ``(num_frames, size, size, 3)`` uint8 RGB (the same every time)."""
        rng = copy.deepcopy(self.rng)
        return render_actors(self.source.frame(rng), self.actors, rng, size=self.size, noise=self.noise,
                             reverse=self.reverse)  # fmt: skip

    def people_rows(self, path: str, fps: float) -> list[tuple[str, ...]]:
        """``people.csv`` rows: path, label, time (s), x1, y1, x2, y2 (pixels), split, group."""
        rows = []
        for actor in self.actors:
            t = actor.visible
            x1, y1, x2, y2 = (f"{v:.1f}" for v in actor.box[t])
            rows.append((path, actor.class_name, f"{t / fps:.4f}", x1, y1, x2, y2, self.split, self.group))
        return rows


# ---------------------------------------------------------------- classes, sources, the plan


def actor_classes(classes: Sequence[str]) -> list[str]:
    """The actor classes to write: ``synth.classes``, or all of them where it is the shapes default.
    Classes come in whole pairs (a clip's partner shows every person reversed)."""
    if list(classes) == list(SYNTH_CLASSES):
        return list(ACTOR_CLASSES)
    unknown = [name for name in classes if name not in _CLASS_MOTION]
    if unknown or not classes:
        raise ConfigError(
            f"synth.classes {list(classes)}: with synth.kind=actors the classes are: {', '.join(ACTOR_CLASSES)}"
        )
    if len(set(classes)) != len(classes):
        raise ConfigError(f"synth.classes lists a class twice: {list(classes)}")
    missing = [_PARTNER[name] for name in classes if _PARTNER[name] not in classes]
    if missing:
        raise ConfigError(
            f"synth.classes: with synth.kind=actors classes come in time-reversed pairs; add {', '.join(missing)}"
        )
    return list(classes)


def background_sources(images: str | None) -> list[Source]:
    """``camera.find_sources``, less the bundled photos that show a person."""
    sources = find_sources(images)
    return [s for s in sources if not (images is None and s.group in _PHOTOS_WITH_PEOPLE)]


def plan_clips(
    config: SynthConfig,
    bank: Sequence[PersonCutout],
    *,
    splits: Callable[[int, str], list[str]],
    rng_of: Callable[[str, int], np.random.Generator],
) -> list[ActorsClip]:
    """Every clip of an actors dataset, class by class, with its split, background and people.

    ``splits(count, name)`` and ``rng_of(name, index)`` are the writer's (see ``camera.plan_clips``).
    Backgrounds are split by ``splits(n, "<scenes>")``, the videos the people come from by
    ``splits(n, "<people>")``; a clip takes both from its own split. Where a split has fewer
    people than ``synth.people_per_clip``, one cut-out may play two people (other start, mirror).
    """
    classes = actor_classes(config.classes)
    if config.people_per_clip > len(classes):
        raise ConfigError(
            f"synth.people_per_clip={config.people_per_clip} needs as many classes (each person a different "
            f"one); synth.classes has {len(classes)}"
        )
    bank = [p for p in bank if len(p)]
    people_sources = sorted({p.source for p in bank})
    if len(people_sources) < MIN_PEOPLE_SOURCES:
        raise ConfigError(
            f"synth.kind=actors: people were found in {len(people_sources)} video(s) ({', '.join(people_sources)}); "
            f"it needs people from at least {MIN_PEOPLE_SOURCES} videos (train, val and test each see their own "
            "people): add videos with people to synth.people (--people DIR)"
        )
    scenes = background_sources(config.images)
    scene_side = dict(zip((s.group for s in scenes), splits(len(scenes), "<scenes>")))
    people_side = dict(zip(people_sources, splits(len(people_sources), "<people>")))
    clips = []
    for name in classes:
        for index, split in enumerate(splits(config.videos_per_class, name)):
            rng = rng_of(name, index)
            layout_rng = np.random.default_rng(rng.integers(2**63))
            pool = [s for s in scenes if scene_side[s.group] == split]
            people = [p for p in bank if people_side[p.source] == split]
            actors = _layout(name, classes, people, layout_rng, config)
            clips.append(
                ActorsClip(
                    name,
                    index,
                    split,
                    pool[int(rng.integers(len(pool)))],
                    actors,
                    rng,
                    config.num_frames,
                    config.size,
                    config.noise,
                    _CLASS_MOTION[name][1],
                )
            )
    return clips


def make_clip(
    class_name: str,
    people: Sequence[PersonCutout],
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    config: SynthConfig,
) -> tuple[np.ndarray, list[Actor]]:
    """One clip whose largest person does ``class_name``, the others other classes of
    ``config.classes``, cut-outs from ``people``, over a window of ``image``: the frames
    ``(num_frames, size, size, 3)`` uint8 RGB and the actors (class and boxes in every frame).
    The partner class with the same generator state gives this clip reversed in time."""
    classes = actor_classes(config.classes)
    if class_name not in classes:
        raise ConfigError(f"{class_name!r} is not one of synth.classes: {', '.join(classes)}")
    actors = _layout(class_name, classes, list(people), np.random.default_rng(rng.integers(2**63)), config)
    reverse = _CLASS_MOTION[class_name][1]
    return render_actors(image, actors, rng, size=config.size, noise=config.noise, reverse=reverse), actors


# ---------------------------------------------------------------- paths (forward direction)


def _progress(rng: np.random.Generator, n: int) -> np.ndarray:
    """0 -> 1 over most of the clip (margins up to 10%), at constant speed or eased."""
    t = np.linspace(0.0, 1.0, n)
    start, end = rng.uniform(0, 0.1), 1 - rng.uniform(0, 0.1)
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return u * u * (3 - 2 * u) if rng.random() < 0.3 else u


def _path(motion: str, rng: np.random.Generator, n: int, size: int, height: float, aspect: float) -> np.ndarray:
    """``(n, 4)`` patch boxes x1, y1, x2, y2 of the forward motion, inside a ``size`` frame: the
    patch's bottom centre (feet) follows the path, its height is ``height`` (approach: the start)."""
    u = _progress(rng, n)
    heights = np.full(n, height)
    if motion == "approach":  # from height / sqrt(g) to height * sqrt(g), at most 85% of the frame
        growth = min(rng.uniform(1.5, 1.9), (0.85 * size / height) ** 2)
        heights = height / np.sqrt(growth) * growth**u
    widths = heights * aspect
    top, half = heights.max(), widths.max() / 2
    if motion == "walk":
        travel = min(rng.uniform(0.3, 0.55) * size, size - 2 * half - 2)
        x0 = rng.uniform(half + 1, size - half - 1 - travel)
        foot = rng.uniform(top + 1, size - 1)
        drift = rng.uniform(-0.03, 0.03) * size
        feet = np.clip(foot + drift * u, top + 1, size - 1)
        centre = x0 + travel * u
    elif motion == "rise":
        travel = min(rng.uniform(0.2, 0.4) * size, size - top - 2)
        foot = rng.uniform(top + 1 + travel, size - 1)
        feet = foot - travel * u
        x = rng.uniform(half + 1, size - half - 1)
        centre = np.clip(x + rng.uniform(-0.03, 0.03) * size * u, half + 1, size - half - 1)
    else:  # approach: the feet come down by part of the growth
        drop = (heights[-1] - heights[0]) * rng.uniform(0.2, 0.6)
        foot = rng.uniform(heights[0] + 1, max(heights[0] + 1, size - 1 - drop))
        feet = np.clip(
            foot + drop * (heights - heights[0]) / max(heights[-1] - heights[0], 1e-9), heights + 1, size - 1
        )
        x = rng.uniform(half + 1, size - half - 1)
        centre = np.clip(x + rng.uniform(-0.04, 0.04) * size * u, half + 1, size - half - 1)
    return np.stack([centre - widths / 2, feet - heights, centre + widths / 2, feet], axis=1)


def _playback(rng: np.random.Generator, cutout: PersonCutout, n: int, fps: float) -> np.ndarray:
    """Which cut-out frame plays at each clip frame: real time from a random start, back and forth
    where the cut-out is shorter than the clip."""
    steps = np.floor(np.arange(n) * cutout.fps / fps).astype(np.int64)
    count = len(cutout)
    start = int(rng.integers(max(1, count - int(steps[-1])))) if count > steps[-1] else int(rng.integers(count))
    position = start + steps
    if count == 1:
        return np.zeros(n, dtype=np.int64)
    period = 2 * (count - 1)
    position = position % period
    return np.where(position < count, position, period - position).astype(np.int64)


def _inner(patch: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The person's box in output pixels from the patch boxes and the crops' inner fractions."""
    w, h = patch[:, 2] - patch[:, 0], patch[:, 3] - patch[:, 1]
    return np.stack([patch[:, 0] + inner[:, 0] * w, patch[:, 1] + inner[:, 1] * h,
                     patch[:, 0] + inner[:, 2] * w, patch[:, 1] + inner[:, 3] * h], axis=1)  # fmt: skip


def _covered(box: np.ndarray, fronts: list[np.ndarray]) -> np.ndarray:
    """Per frame, the fraction of ``box`` (T, 4) covered by the ``fronts`` boxes (summed)."""
    area = np.maximum((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), 1e-9)
    cover = np.zeros(len(box))
    for other in fronts:
        w = np.clip(np.minimum(box[:, 2], other[:, 2]) - np.maximum(box[:, 0], other[:, 0]), 0, None)
        h = np.clip(np.minimum(box[:, 3], other[:, 3]) - np.maximum(box[:, 1], other[:, 1]), 0, None)
        cover += w * h / area
    return cover


def _layout(
    main: str, classes: list[str], people: list[PersonCutout], rng: np.random.Generator, config: SynthConfig
) -> list[Actor]:
    """The people of a clip whose largest person does ``main``, in painting order.

    Drawn in the forward direction of ``main`` (classes flipped to their partners where ``main`` is
    a reversed class), so the partner clip of the same state is this one reversed in time."""
    n, size, count = config.num_frames, config.size, config.people_per_clip
    flipped = _CLASS_MOTION[main][1]
    forward = _PARTNER[main] if flipped else main
    others = sorted(c for c in classes if c != forward)
    chosen = [forward, *(str(c) for c in rng.choice(others, size=count - 1, replace=False))]
    picks = rng.choice(len(people), size=count, replace=len(people) < count)
    heights = [rng.uniform(0.42, 0.55) * size] + [rng.uniform(0.28, 0.4) * size for _ in range(count - 1)]
    placed: list[Actor] = []
    for k, (name, pick, height) in enumerate(zip(chosen, picks, heights)):
        cutout = people[int(pick)]
        motion = _CLASS_MOTION[name][0]
        aspect = cutout.frames.shape[2] / cutout.frames.shape[1]
        flip = bool(rng.random() < 0.5)
        play = _playback(rng, cutout, n, config.fps)
        inner = cutout.inner[play].astype(np.float64)
        if flip:
            inner = np.stack([1 - inner[:, 2], inner[:, 1], 1 - inner[:, 0], inner[:, 3]], axis=1)
        best = None
        for _ in range(40):  # a place where it covers little of the people already placed, nor they of it
            patch = _path(motion, rng, n, size, min(height, 0.9 * size), aspect)
            actor = Actor(name, cutout, flip, patch, _inner(patch, inner), play)
            if k and actor.area * _LARGER > placed[0].area:  # keep the main person the largest
                actor = _shrunk(actor, np.sqrt(placed[0].area / (_LARGER * actor.area)) * 0.99)
            worst = max([0.0] + [float(max(_covered(a.box, [actor.patch]).max(), _covered(actor.box, [a.patch]).max()))
                                 for a in placed])  # fmt: skip
            if best is None or worst < best[0]:
                best = (worst, actor)
            if worst <= _MAX_COVER:
                break
        assert best is not None
        actor = best[1]
        placed.append(actor)
    for actor in placed:
        if _CLASS_MOTION[actor.class_name][1]:  # a reversed class within this forward clip
            actor.patch, actor.box, actor.play = (
                actor.patch[::-1].copy(),
                actor.box[::-1].copy(),
                actor.play[::-1].copy(),
            )
    order = sorted(range(count), key=lambda i: (i == 0, placed[i].area))  # the main person in front
    actors = [placed[i] for i in order]
    for i, actor in enumerate(actors):
        cover = _covered(actor.box, [a.patch for a in actors[i + 1 :]])
        middle = np.abs(np.arange(n) - (n - 1) / 2)
        actor.visible = int(np.lexsort((middle, cover))[0])  # least covered, then nearest the middle
    if flipped:  # the clip is rendered forward and reversed as a whole: so is every person's path
        for actor in actors:
            actor.class_name = _PARTNER[actor.class_name]
            actor.patch, actor.box, actor.play = (
                actor.patch[::-1].copy(),
                actor.box[::-1].copy(),
                actor.play[::-1].copy(),
            )
            actor.visible = n - 1 - actor.visible
    return actors


def _shrunk(actor: Actor, scale: float) -> Actor:
    """The actor with every patch (and so its box) scaled by ``scale`` about its bottom centre."""
    p = actor.patch
    sizes = np.stack([p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]] * 2, axis=1)
    fractions = (actor.box - p[:, [0, 1, 0, 1]]) / sizes
    cx, w, h = (p[:, 0] + p[:, 2]) / 2, sizes[:, 0] * scale, sizes[:, 1] * scale
    patch = np.stack([cx - w / 2, p[:, 3] - h, cx + w / 2, p[:, 3]], axis=1)
    return Actor(actor.class_name, actor.cutout, actor.flip, patch, _inner(patch, fractions), actor.play)


# ---------------------------------------------------------------- rendering


def _background(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square window (70-100% of the shorter side) of the picture, resized to ``size``,
    maybe mirrored: ``float32 (size, size, 3)``."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    height, width = image.shape[:2]
    side = max(1, int(rng.uniform(0.7, 1.0) * min(height, width)))
    y, x = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    window = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        window = window[:, ::-1]
    return window.astype(np.float32)


def _alpha(height: int, width: int) -> np.ndarray:
    """A soft-edged rounded rectangle (a superellipse of power 6) filling a crop: ``(h, w)`` in [0, 1]."""
    y = np.abs(np.linspace(-1, 1, height))[:, None]
    x = np.abs(np.linspace(-1, 1, width))[None, :]
    radius = (x**6 + y**6) ** (1 / 6)
    return np.clip((1 - radius) / _FEATHER, 0, 1).astype(np.float32)


def _paste(frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, patch: np.ndarray) -> None:
    """Blend ``crop`` (with ``alpha``) into ``frame`` at the sub-pixel box ``patch``, in place."""
    import cv2

    h, w = crop.shape[:2]
    sx, sy = (patch[2] - patch[0]) / w, (patch[3] - patch[1]) / h
    matrix = np.array([[sx, 0, patch[0] + 0.5 * sx - 0.5], [0, sy, patch[1] + 0.5 * sy - 0.5]])
    size = (frame.shape[1], frame.shape[0])
    pixels = cv2.warpAffine(crop, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cover = cv2.warpAffine(alpha, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    frame += (pixels.astype(np.float32) - frame) * cover[..., None]


def render_actors(
    image: np.ndarray,
    actors: Sequence[Actor],
    rng: np.random.Generator,
    *,
    size: int = 112,
    noise: float = 0.03,
    reverse: bool = False,
    num_frames: int | None = None,
) -> np.ndarray:
    """The people of ``actors`` (planned, in painting order) over a window of ``image``:
    ``(T, size, size, 3)`` uint8 RGB. ``reverse``: the actors' paths are given in the clip's time
    and the clip is rendered forward, then reversed (noise included), as its partner class's.
    ``num_frames``: T where there are no actors (the background alone, as the clip would show it)."""
    background = _background(image, size, rng)
    n = len(actors[0].patch) if actors else int(num_frames or 1)
    alphas = {id(a): _alpha(*a.cutout.frames.shape[1:3]) for a in actors}
    order = np.arange(n)[::-1] if reverse else np.arange(n)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for out, t in enumerate(order):
        frame = background.copy()
        for actor in actors:
            crop = actor.cutout.frames[actor.play[t]]
            _paste(
                frame, np.ascontiguousarray(crop[:, ::-1]) if actor.flip else crop, alphas[id(actor)], actor.patch[t]
            )
        if noise > 0:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise * 255)
        frames[out] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames[::-1]) if reverse else frames
