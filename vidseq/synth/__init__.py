"""Synthetic labelled action videos: seed -> rendered clips -> ``<class>/<class>_NNNN.mp4`` files.

Place in the data flow: a *source* of videos, upstream of everything else (``vidseq synth``
writes a folder that ``vidseq.datasets`` reads like a real dataset). Imports ``config``,
``errors``, ``io`` (video writing; frames of video sources) and ``datasets`` (video extensions).

Modules: ``shapes`` (moving shapes: scenes, trajectories, rendering; ``synth.kind: shapes``),
``camera`` (camera motion over real photos; ``synth.kind: camera``), ``actors`` (real people over
real backgrounds), ``playback`` (windows of real videos played forward, reversed, faster, slower,
frozen; ``synth.kind: playback``), ``_dataset`` (the writer every kind shares: plan, seeds and
splits, files, ``labels.csv`` and the ``synth.json`` marker).
"""

from __future__ import annotations

from vidseq.synth._dataset import (
    GENERATOR,
    LABELS,
    MARKER,
    TEST_FRACTION,
    VAL_FRACTION,
    SynthResult,
    generate_dataset,
    split_names,
    video_rng,
)
from vidseq.synth.playback import PLAYBACK_CLASSES
from vidseq.synth.shapes import ALL_SHAPES, ORIENTED_SHAPES, SYMMETRIC_SHAPES, render_clip

__all__ = [
    "ALL_SHAPES",
    "GENERATOR",
    "LABELS",
    "MARKER",
    "ORIENTED_SHAPES",
    "PLAYBACK_CLASSES",
    "SYMMETRIC_SHAPES",
    "TEST_FRACTION",
    "VAL_FRACTION",
    "SynthResult",
    "generate_dataset",
    "render_clip",
    "split_names",
    "video_rng",
]
