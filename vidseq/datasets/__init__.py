"""Dataset discovery: folders and annotation files -> labelled video paths and a label map.

Place in the data flow: **where the videos are** -> decode + sample -> features -> ...
Only the filesystem is looked at: no video is opened here.

Modules: ``_items`` (``VideoItem``, ``Dataset``, the checks every format shares), ``_formats``
(folder, csv, list, ucf101, hmdb51 readers), ``_groups`` (groups and the split-leak check),
``_discovery`` (``discover``, ``discover_videos``, ``dataset_from_config``).
"""

from __future__ import annotations

from vidseq.datasets._discovery import dataset_from_config, discover, discover_videos
from vidseq.datasets._formats import (
    FORMATS,
    detect_format,
    from_csv,
    from_folder,
    from_hmdb51,
    from_list_file,
    from_ucf101,
)
from vidseq.datasets._groups import UCF101_GROUP_PATTERN, with_groups
from vidseq.datasets._items import (
    SPLITS,
    VIDEO_EXTENSIONS,
    Dataset,
    DatasetWarning,
    PathLike,
    VideoItem,
)

__all__ = [
    "FORMATS",
    "SPLITS",
    "UCF101_GROUP_PATTERN",
    "VIDEO_EXTENSIONS",
    "Dataset",
    "DatasetWarning",
    "PathLike",
    "VideoItem",
    "dataset_from_config",
    "detect_format",
    "discover",
    "discover_videos",
    "from_csv",
    "from_folder",
    "from_hmdb51",
    "from_list_file",
    "from_ucf101",
    "with_groups",
]
