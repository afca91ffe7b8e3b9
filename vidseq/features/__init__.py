"""Features: the extraction loop and the per-video feature store it writes.

Place in the data flow: frames -> backbones -> **features** -> sequences for training.
"""

from vidseq.features.extraction import ExtractResult, extract, store_key
from vidseq.features.store import FeatureStore, FeatureStoreError, VideoFeatures, key_digest, video_id

__all__ = [
    "ExtractResult",
    "FeatureStore",
    "FeatureStoreError",
    "VideoFeatures",
    "extract",
    "key_digest",
    "store_key",
    "video_id",
]
