"""What a feature store is keyed by, and how its extraction is rebuilt: the store keys of the
appearance, motion and pose streams, the recipe a trained model keeps, the backbone and device a
config names.

Place in the data flow: beside ``store``; ``plan`` opens stores by these keys, ``extraction`` and
``ray_engine`` build their backbone with them, and training records the recipe in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from vidseq.backbones import Backbone, BackboneSpec, create_backbone
from vidseq.config import BackboneConfig, ExtractConfig, IOConfig, MotionConfig, PoseConfig, SamplingConfig
from vidseq.features.motion import motion_key
from vidseq.features.pose import pose_key

FEATURE_KEY_VERSION = 2  # bump when this loop changes which features a config gives (2: opencv upscaling)


def store_key(spec: BackboneSpec, sampling: SamplingConfig) -> dict[str, Any]:
    """Everything that changes the stored features: backbone spec, sampling, loop version."""
    return {
        "backbone": spec.key(),
        "sampling": sampling.model_dump(mode="json"),
        "extract_version": FEATURE_KEY_VERSION,
    }


def motion_store_key(spec: BackboneSpec, sampling: SamplingConfig, motion: MotionConfig) -> dict[str, Any]:
    """Everything that changes the motion stream: flow settings, the geometry of the fitted frames
    the flow sees (the backbone's resize, input size and fit), sampling, loop version."""
    geometry = {"resize": spec.resize, "input_size": spec.input_size, "fit": spec.fit}
    return {
        "motion": motion_key(motion, geometry),
        "sampling": sampling.model_dump(mode="json"),
        "extract_version": FEATURE_KEY_VERSION,
    }


def pose_store_key(spec: BackboneSpec, sampling: SamplingConfig, pose: PoseConfig) -> dict[str, Any]:
    """Everything that changes the pose stream: its settings, the geometry of the frames MediaPipe
    sees (the decoded frames, before the backbone's crop or letterbox: their size is the
    backbone's decode size), sampling, loop version. Backbones that decode alike share one store."""
    decode = spec.resize if spec.fit == "crop" else spec.input_size  # what ``decode_size`` reads
    geometry = {"frames": "decoded", "fit": spec.fit, "size": decode}
    return {
        "pose": pose_key(pose, geometry),
        "sampling": sampling.model_dump(mode="json"),
        "extract_version": FEATURE_KEY_VERSION,
    }


def recipe_of(
    backbone: BackboneConfig | Backbone | None,
    sampling: SamplingConfig,
    io: IOConfig | None,
    extract: ExtractConfig | None = None,
) -> dict:
    """The config sections that redo this extraction on new videos (none for a prebuilt model):
    backbone, sampling, io, and the forward settings of ``extract`` (precision, channels_last),
    so prediction computes features the way training's were computed."""
    if isinstance(backbone, Backbone):
        return {}
    recipe = {
        "backbone": (backbone or BackboneConfig()).model_dump(mode="json"),
        "sampling": sampling.model_dump(mode="json"),
        "io": (io or IOConfig()).model_dump(mode="json"),
    }
    if extract is not None:
        recipe["extract"] = extract.model_dump(mode="json", include={"precision", "channels_last"})
    return recipe


def build_backbone(cfg: BackboneConfig, device: torch.device) -> Backbone:
    """The backbone a ``backbone`` config section describes, on ``device``."""
    return create_backbone(cfg.name, weights=cfg.weights, pooling=cfg.pooling, device=device, **cfg.options())


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
