"""Features: the extraction loop and the per-video feature store it writes.

Place in the data flow: frames -> backbones -> **features** -> sequences for training.
"""

from vidseq.features.extraction import (
    ExtractResult,
    build_backbone,
    extract,
    resolve_device,
    store_key,
)
from vidseq.features.store import (
    FeatureStore,
    FeatureStoreError,
    VideoFeatures,
    key_digest,
    video_id,
)

__all__ = [
    "ExtractResult",
    "FeatureStore",
    "FeatureStoreError",
    "VideoFeatures",
    "build_backbone",
    "extract",
    "resolve_device",
    "key_digest",
    "store_key",
    "video_id",
]
