"""Shared fixtures: where the real clips of ../shared/data are, and tiny generated inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIDSEQ_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ACTION_CLIPS = SHARED_DATA / "action-clips"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (../shared/data is absent here)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder of real videos and weights; skips the test where it is absent."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def action_clips() -> Path:
    """The folder of real action clips (h264, mpeg4, msmpeg4v3, GIF, 1080p)."""
    return _require(ACTION_CLIPS)


@pytest.fixture(scope="session")
def clip_paths(action_clips: Path) -> list[Path]:
    """Every video file in the action-clips folder, sorted by name."""
    exts = {".mp4", ".mkv", ".avi", ".gif", ".webm", ".mov"}
    return sorted(p for p in action_clips.iterdir() if p.suffix.lower() in exts)


# The slowest test files (measured: 1-4 minutes each on 2 cores) run first. With `make test`'s
# pytest-xdist processes (--dist loadfile: a file is never split) the long files then start early
# instead of leaving one process working alone at the end while the other waits.
SLOW_FILES_FIRST = (
    "test_two_stream_camera.py",
    "test_predict.py",
    "test_pipeline.py",
    "test_actors.py",
    "test_tracking_auth.py",
    "test_ray_engine.py",
    "test_tracking_lifecycle.py",
    "test_distributed.py",
    "test_train_tracking.py",
    "test_pose_pipeline.py",
    "test_store_concurrency.py",
    "test_actors_pose.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: index for index, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order
