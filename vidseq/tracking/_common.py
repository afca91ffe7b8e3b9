"""Plain helpers of vidseq.tracking: its error, params flattened to text, the standard tags."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vidseq import __version__
from vidseq.errors import VidseqError


class TrackingError(VidseqError):
    """The MLflow store cannot be reached or refused what was logged."""


def _plain(value: Any) -> Any:
    """Numbers stay; None becomes ''; anything else its str (the digest skips mixed columns)."""
    if isinstance(value, (bool, int, float)):
        return value
    return "" if value is None else str(value)


def git_commit(path: str | Path = ".") -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``path``; None outside one, or no git."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    command = ["git", "-C", str(folder), "rev-parse", "HEAD"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def standard_tags(*, backbone: str | None = None) -> dict[str, str]:
    """vidseq.version, vidseq.git_commit (of vidseq's own source, when a git checkout) and
    vidseq.backbone. An installed copy is skipped: its site-packages may lie in another repo."""
    tags = {"vidseq.version": __version__}
    package = Path(__file__).resolve().parents[1]  # the vidseq package
    if not {"site-packages", "dist-packages"} & set(package.parts):
        if commit := git_commit(package):
            tags["vidseq.git_commit"] = commit
    if backbone:
        tags["vidseq.backbone"] = backbone
    return tags


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> ``{'model.hidden_size': '256', ...}``; lists/tuples as JSON, else str()."""
    return {key: _param_text(value) for key, value in flat_items(config, prefix)}


def flat_items(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str)
    return "{}" if isinstance(value, Mapping) else str(value)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
