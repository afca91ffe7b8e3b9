"""Features: the extraction loop and the per-video feature store it writes.

Place in the data flow: frames -> backbones -> **features** -> sequences for training.
``extract`` runs the local engine, or the Ray engine (``extract_ray``; Ray imported only then).
With ``motion`` enabled the same run (one decode) also writes the optical-flow motion stream
(``vidseq.features.motion``) into a second store, linked to the first (``FeatureStore.stream_store``).
"""

from vidseq.features.extraction import extract
from vidseq.features.identity import key_digest, video_id
from vidseq.features.keys import build_backbone, resolve_device, store_key
from vidseq.features.plan import ExtractResult
from vidseq.features.ray_engine import RayEngineError, extract_ray
from vidseq.features.store import FeatureStore, FeatureStoreError, VideoFeatures

__all__ = [
    "ExtractResult",
    "FeatureStore",
    "FeatureStoreError",
    "RayEngineError",
    "VideoFeatures",
    "build_backbone",
    "extract",
    "extract_ray",
    "key_digest",
    "resolve_device",
    "store_key",
    "video_id",
]
