"""Typed configuration: YAML files and ``-o section.key=value`` overrides -> validated objects.

Sits at the bottom of the data flow with ``errors``: every other module may read these
objects, none of them parses YAML itself. Unknown keys and wrong types are rejected with a
message that names the key and the file (torchtune-style strictness).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vidseq.errors import ConfigError

SYNTH_CLASSES = (
    "move_left",
    "move_right",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
    "appear",
    "disappear",
)


class _Section(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IOConfig(_Section):
    """How videos are decoded."""

    backend: Literal["auto", "decord", "pyav", "opencv", "torchcodec"] = Field(
        "auto", description="Decoder; 'auto' tries the default order and falls back per file."
    )


class SamplingConfig(_Section):
    """Which frames of a video are used (see vidseq.sampling)."""

    mode: Literal["uniform", "stride", "dense", "all"] = Field(
        "uniform",
        description="uniform: TSN segments; stride: every k-th frame or a target fps; "
        "dense: one consecutive clip; all: every frame.",
    )
    count: int = Field(16, ge=1, description="Frames to sample (uniform: segments; dense: clip length).")
    stride: int = Field(1, ge=1, description="stride/dense: step between sampled frames.")
    target_fps: float | None = Field(
        None, gt=0, description="stride: sample at this rate instead of every `stride` frames."
    )
    max_frames: int | None = Field(None, ge=1, description="stride/all: cap on sampled frames.")


class DataConfig(_Section):
    """Where labelled videos are found (see vidseq.datasets)."""

    source: str | None = Field(None, description="Folder per class, CSV, list file, or UCF101/HMDB51 split folder.")
    format: Literal["auto", "folder", "csv", "list", "ucf101", "hmdb51"] = Field(
        "auto", description="Dataset format; 'auto' guesses from the source."
    )
    video_root: str | None = Field(
        None, description="Folder that relative video paths in list/CSV/split files start from."
    )
    split: int = Field(1, ge=1, description="UCF101/HMDB51: which official split (1-3).")
    label_names: str | None = Field(None, description="List files: a text file of class names in index order.")
    strict: bool = Field(
        False, description="Listed files that are missing are an error (default: reported and skipped)."
    )
    group_pattern: str | None = Field(
        None,
        description="Regex on the file name whose first group names a video's source (UCF101: _g(\\d+)_); "
        "a CSV 'group' column wins. Splits made by vidseq keep a group on one side.",
    )
    allow_split_leak: bool = Field(
        False, description="Accept an explicit split that puts one group on both sides (default: an error)."
    )


class SynthConfig(_Section):
    """The synthetic motion dataset written by ``vidseq synth``."""

    kind: Literal["shapes", "camera", "actors", "playback"] = Field(
        "shapes",
        description="shapes: moving shapes on noise; camera: pan/zoom/rotate over real photos; actors: real "
        "people cut out of videos, two or more per clip moving differently over real backgrounds; playback: "
        "windows of real videos played forward, reversed, faster, slower or frozen (size: the shorter side, "
        "aspect kept; no noise added).",
    )
    images: str | None = Field(
        None,
        description="camera, actors: a folder of images or videos to film (actors: the backgrounds); null: "
        "scikit-image's bundled photos.",
    )
    people: str | None = Field(
        None,
        description="actors: a folder of videos with people, cut out by the detector of the actors section "
        "(people of one video share a split).",
    )
    people_per_clip: int = Field(2, ge=2, le=6, description="actors: people per clip, each doing another class.")
    people_seconds: float = Field(
        10.0, gt=0, description="actors: seconds read from the start of each video of synth.people."
    )
    source: str | None = Field(
        None,
        description="playback: a folder of real videos (searched recursively); each is a group, and no video "
        "is in two splits.",
    )
    windows_per_source: int = Field(
        6,
        ge=1,
        description="playback: windows cut from each video of synth.source, evenly spaced (they overlap "
        "where a video is short); each window is written once per class.",
    )

    classes: list[str] = Field(
        default_factory=lambda: list(SYNTH_CLASSES),
        description=f"Classes to generate, from: {', '.join(SYNTH_CLASSES)}.",
    )
    videos_per_class: int = Field(10, ge=1, description="Videos written per class.")
    num_frames: int = Field(32, ge=2, description="Frames per video.")
    size: int = Field(112, ge=32, le=1024, description="Frame width and height in pixels.")
    fps: float = Field(25.0, gt=0, description="Frame rate written into the files.")
    noise: float = Field(0.03, ge=0, le=1, description="Std of pixel noise, as a fraction of 255.")
    seed: int = Field(0, description="Seed: the same seed writes the same dataset.")


class BackboneConfig(_Section):
    """The frame -> feature model (see vidseq.backbones)."""

    name: str = Field(
        "efficientnet_lite0",
        description="efficientnet_lite0 (default, real offline ImageNet weights), resnet18, resnet50, "
        "mobilenet_v3_small/large, efficientnet_b0, convnext_tiny, torchvision:<model>, yolo, timm:<model>.",
    )
    weights: str | None = Field(
        "DEFAULT",
        description="DEFAULT (the kind's pretrained weights), a torchvision enum name, a file "
        "(.pth, or a YOLO .pt/.yaml), or null for random init.",
    )
    pooling: str = Field("avg", description="avg: global average; gridK: a KxK grid, concatenated (keeps position).")
    input_size: int | None = Field(None, ge=32, description="Input crop size; null: the backbone's own.")
    layers: list[int] | None = Field(None, description="YOLO: layer indices whose outputs are pooled.")

    def options(self) -> dict:
        """Keyword options for ``create_backbone`` beyond name, weights and pooling."""
        extra = {"input_size": self.input_size, "layers": self.layers}
        return {key: value for key, value in extra.items() if value is not None}


STREAMS = ("appearance", "motion", "pose", "trajectory")  # canonical order of concatenation


class MotionConfig(_Section):
    """The optical-flow motion stream (see vidseq.features.motion), extracted beside the backbone features."""

    enabled: bool = Field(
        False, description="Extract the motion stream too (pipelines turn it on when train.streams names 'motion')."
    )
    method: Literal["dis", "farneback"] = Field(
        "dis", description="OpenCV dense optical flow: dis (fast) or farneback."
    )
    size: int = Field(64, ge=16, le=512, description="Frames are resized to size x size grey before the flow.")
    grid: int = Field(
        4,
        ge=1,
        le=16,
        description="Flow averaged on a grid x grid layout: 2*grid*grid numbers per frame (3*grid*grid with "
        "intensity).",
    )
    step: int = Field(1, ge=1, description="Flow between sampled frame i and frame i+step of the source video.")
    intensity: bool = Field(
        True,
        description="Add each cell's change of mean grey between the pair's frames (percent of full scale): "
        "what flow cannot see (a fade, lights going on or off).",
    )


class PoseConfig(_Section):
    """The pose stream (see vidseq.features.pose): body keypoints per frame, extracted beside the backbone features."""

    enabled: bool = Field(
        False,
        description="Extract the pose stream too (needs the pose extra; pipelines turn it on when train.streams "
        "names 'pose').",
    )
    mode: Literal["static", "video"] = Field(
        "static",
        description="static: each frame on its own (a frame's vector never depends on the frames before it); "
        "video: MediaPipe's tracking and smoothing across frames, for densely sampled frames only.",
    )
    complexity: Literal[0, 1, 2] = Field(
        1, description="MediaPipe's landmark model: 0 lite, 1 full (in the wheel), 2 heavy (0 and 2 are downloaded)."
    )
    min_confidence: float = Field(0.5, gt=0, lt=1, description="Lowest person-detection score that counts as found.")
    depth: bool = Field(
        False, description="Add each landmark's depth (world landmarks, in torso lengths): 133 numbers, not 100."
    )


class ActorsConfig(_Section):
    """Per-person sequences (see vidseq.features.actors): detect people, track them, one sequence per track."""

    enabled: bool = Field(False, description="Extract one sequence per tracked person instead of one per video.")
    weights: str = Field(
        "yolo11n.pt",
        description="Any Ultralytics detection checkpoint (.pt): a local file, or a name Ultralytics downloads "
        "when online (yolo11n.pt, COCO: person is class 0).",
    )
    classes: list[int] = Field([0], min_length=1, description="The detector's class ids that are people.")
    imgsz: int = Field(640, ge=32, le=4096, description="Detector input size (pixels, long side).")
    conf: float = Field(0.1, gt=0, lt=1, description="Lowest detection confidence handed to the tracker.")
    tracker: Literal["bytetrack", "botsort"] = Field("bytetrack", description="Ultralytics' tracker (no ReID).")
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second detected and tracked (a regular grid).")
    lost_seconds: float = Field(2.0, gt=0, description="How long a lost person keeps their track id.")
    margin: float = Field(0.15, ge=0, le=2, description="Crop margin around the box, as a fraction of its long side.")
    min_frames: int = Field(4, ge=1, description="Tracks with fewer tracked frames are dropped.")
    batch: int = Field(8, ge=1, description="Frames per detector forward.")
    labels: str | None = Field(
        None,
        description="A per-person labels CSV (path,label and track, or time,x1,y1,x2,y2; see README): each matching "
        "track gets its own label; null: the clip's label goes to its main actor.",
    )
    main: Literal["longest", "largest", "central"] = Field(
        "longest",
        description="Training on clip labels: the clip's main actor is its longest track (most frames), largest "
        "(mean box area) or most central one; the others are left out.",
    )


class ExtractConfig(_Section):
    """How features are extracted (see vidseq.features)."""

    out: str = Field("runs/features", description="Root folder of feature stores.")
    batch_size: int = Field(64, ge=1, description="Frames per backbone forward (several videos packed).")
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Decode worker processes (0: decode in the main process); auto: sized with the backbone's "
        "torch threads from the cores vidseq may use (vidseq --threads N, VIDSEQ_THREADS), never more in total.",
    )
    chunk_frames: int = Field(64, ge=1, description="Frames a worker decodes at once (bounds memory).")
    video_timeout: float | None = Field(
        600.0,
        gt=0,
        description="Seconds a decode worker may spend on one video (waiting for the model not counted); "
        "past it the video is a failed row and the worker is replaced (null: no limit; num_workers 0: none).",
    )
    worker_memory_gb: float | None = Field(
        8.0,
        gt=0,
        description="Memory (GB, its own pages) a decode worker may use; past it its video is a failed "
        "row and the worker is replaced (null: no limit; num_workers 0: none).",
    )
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:N.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 autocast on CUDA (bf16 where supported), fp32 on CPU."
    )
    channels_last: bool = Field(True, description="channels_last memory format (about 2x on CPU here).")
    runtime: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="What runs the backbone: torch, or onnxruntime (the onnx extra; its ONNX export, cached; "
        "features match torch's within 1e-4 of the largest; a backbone that does not export runs with torch).",
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: decode workers + one model in this process; ray: a Ray Data pipeline (the ray extra).",
    )
    ray_address: str | None = Field(
        None, description="engine ray: the cluster to join (e.g. ray://head:10001 or auto); null starts a local Ray."
    )


class ModelConfig(_Section):
    """The temporal classifier (see vidseq.models); options a model does not take are ignored."""

    name: Literal["lstm", "gru", "transformer", "meanpool", "tcn"] = Field(
        "gru", description="lstm, gru, transformer, or a baseline: meanpool, tcn."
    )
    hidden_size: int = Field(256, ge=1, description="Hidden units.")
    num_layers: int = Field(1, ge=1, description="Recurrent (convolution, transformer) layers.")
    bidirectional: bool = Field(False, description="lstm/gru: read the sequence both ways.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout between layers and before the head.")
    input_dropout: float = Field(0.0, ge=0, lt=1, description="lstm/gru/transformer: dropout on input features.")
    pooling: Literal["last", "mean", "attention", "max", "cls"] = Field(
        "last",
        description="lstm/gru: last state, mean or attention; transformer: those or cls (a class token); "
        "tcn: max or mean (else max).",
    )
    pack: bool = Field(True, description="lstm/gru: pack variable-length batches (padding never leaks).")
    kernel_size: int = Field(3, ge=1, description="tcn: kernel size (odd).")
    center: bool = Field(
        True,
        description="lstm/gru/transformer: subtract each video's mean feature first (learn motion, not scenes).",
    )
    num_heads: int = Field(4, ge=1, description="transformer: attention heads (hidden_size must be a multiple).")
    causal: bool = Field(
        False, description="transformer: each step attends only to earlier ones (needed to stream with step)."
    )


class TrainConfig(_Section):
    """Training of the temporal model on a feature store (see vidseq.training.train)."""

    features: str | None = Field(None, description="The feature store folder written by `vidseq extract`.")
    out: str = Field("runs/train", description="Folder for checkpoints, curves and metrics.")
    epochs: int = Field(40, ge=1, description="Maximum epochs.")
    batch_size: int = Field(32, ge=1, description="Sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(
        1.0, ge=0, description="Linear warm-up length in epochs (see warmup_min_steps), then cosine decay."
    )
    warmup_min_steps: int = Field(
        10,
        ge=0,
        description="Warm-up lasts at least this many optimiser steps (at most a quarter of the run) unless "
        "warmup_epochs is 0: on small data an epoch is a few steps.",
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Cross-entropy label smoothing.")
    class_weights: bool = Field(False, description="Weight the loss by inverse class frequency.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm (null: off).")
    patience: int = Field(
        10,
        ge=1,
        description="Early stopping: epochs without a better val metric, counted after the warm-up "
        "(and see patience_steps).",
    )
    patience_steps: int = Field(
        100,
        ge=0,
        description="Early stopping also waits this many optimiser steps without a better val metric: "
        "on small data (a few steps per epoch) patience in epochs alone stops before the model has learnt.",
    )
    monitor: Literal["accuracy", "macro_f1", "loss"] = Field(
        "accuracy", description="Validation metric for early stopping and best.pt."
    )
    crop_min: float = Field(
        0.7, gt=0, le=1, description="Augmentation: random temporal crop keeps at least this fraction."
    )
    subsample_prob: float = Field(0.3, ge=0, le=1, description="Augmentation: chance of taking every 2nd step.")
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="Held out for validation where the data has no val split."
    )
    test_fraction: float = Field(0.15, ge=0, lt=1, description="Held out for test where the data has no splits at all.")
    seed: int = Field(0, description="Seed of initialisation, data order and augmentation.")
    streams: list[Literal["appearance", "motion", "pose", "trajectory"]] = Field(
        default_factory=lambda: ["appearance"],
        min_length=1,
        description="Feature streams: appearance (the backbone), motion (optical flow; needs motion extracted), "
        "pose (body keypoints; needs pose extracted), trajectory (per-person stores only: each track's box "
        "centre, size and velocities).",
    )
    fusion: Literal["late", "early"] = Field(
        "late",
        description="Several streams: late (a model per stream, probabilities averaged with a weight "
        "chosen on val) or early (one model on the concatenated vectors).",
    )
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:N.")
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on CPU).")

    @field_validator("streams")
    @classmethod
    def _distinct(cls, streams: list[str]) -> list[str]:
        if len(set(streams)) != len(streams):
            raise ValueError(f"each stream at most once, got {streams}")
        return streams


class EvaluateConfig(_Section):
    """Evaluation of a trained model (see vidseq.training.evaluate)."""

    split: str = Field("test", description="Which split to evaluate (train, val, test, all).")
    views: int = Field(3, ge=1, description="Temporal views per video, probabilities averaged.")
    view_fraction: float = Field(0.8, gt=0, le=1, description="Length of each view as a fraction of the sequence.")


class PredictConfig(_Section):
    """Prediction with a trained model (see vidseq.predict)."""

    input: str | None = Field(None, description="Videos to label: a file, a folder (recursive) or a list file.")
    top_k: int = Field(1, ge=1, description="Labels (with probabilities) reported per video.")
    window: float | None = Field(
        None, gt=0, description="Seconds per window: a label per window and segments (null: one label per video)."
    )
    hop: float | None = Field(None, gt=0, description="Seconds between windows (null: half a window).")


class VidseqConfig(_Section):
    """The whole configuration; later stages add their own sections."""

    io: IOConfig = Field(default_factory=IOConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    actors: ActorsConfig = Field(default_factory=ActorsConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)


def wants_motion(config: VidseqConfig) -> bool:
    """Whether extraction must make the motion stream: asked for, or a stream training reads."""
    return config.motion.enabled or "motion" in config.train.streams


def wants_pose(config: VidseqConfig) -> bool:
    """Whether extraction must make the pose stream: asked for, or a stream training reads."""
    return config.pose.enabled or "pose" in config.train.streams


def motion_settings(config: VidseqConfig) -> MotionConfig | None:
    """The motion settings an extraction runs with (enabled), or None where no motion is wanted."""
    return config.motion.model_copy(update={"enabled": True}) if wants_motion(config) else None


def pose_settings(config: VidseqConfig) -> PoseConfig | None:
    """The pose settings an extraction runs with (enabled), or None where no pose is wanted."""
    return config.pose.model_copy(update={"enabled": True}) if wants_pose(config) else None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    model: type[BaseModel] = VidseqConfig,
) -> Any:
    """Read a YAML file (or nothing: the defaults), apply ``a.b=value`` overrides, validate.

    Raises ConfigError naming the file and the key on any problem.
    """
    source = str(path) if path is not None else "default config"
    data = read_yaml(Path(path)) if path is not None else {}
    origins = {}
    for item in overrides:
        keys = apply_override(data, item)
        origins[tuple(keys)] = item
    return validate_config(data, source=source, model=model, origins=origins)


def validate_config(
    data: dict,
    *,
    source: str,
    model: type[BaseModel] = VidseqConfig,
    origins: dict[tuple[str, ...], str] | None = None,
) -> Any:
    """Validate a plain dict into ``model``; errors name each bad key and where it came from.

    ``origins`` maps key paths set by ``-o`` overrides to the override text, so an error in an
    override names the override rather than the file.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, origins or {}, model)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and a YAML-typed value."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML text (what a run records)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def read_yaml(path: Path) -> dict:
    """A YAML file whose top level is a mapping (an empty file is ``{}``); ConfigError otherwise."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_override(data: dict, item: str) -> list[str]:
    """Set ``section.key=value`` in a plain dict (sections created as needed); returns the key path."""
    keys, value = parse_override(item)
    node = data
    for part in keys[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[keys[-1]] = value
    return keys


def _format_errors(
    exc: ValidationError, source: str, origins: dict[tuple[str, ...], str], model: type[BaseModel]
) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "<top level>"
        origin = next((f" (from -o {item})" for keys, item in origins.items() if loc[: len(keys)] == keys), "")
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'{origin}{_suggest(model, loc)}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r}){origin}")
    return "\n".join(lines)


def _suggest(model: type[BaseModel], loc: tuple[str, ...]) -> str:
    """' (did you mean ...? valid keys: ...)' for an unknown key at ``loc``."""
    node: Any = model
    for part in loc[:-1]:
        field = getattr(node, "model_fields", {}).get(part)
        node = field.annotation if field is not None else None
    known = sorted(getattr(node, "model_fields", {}))
    if not known:
        return ""
    close = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"; {hint}valid keys: {', '.join(known)}"
