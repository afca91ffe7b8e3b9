"""Domain exceptions of vidseq: one small hierarchy whose messages say what to fix.

Every layer raises these; the CLI turns them into one clear line and a non-zero exit,
never a Python traceback.
"""

from __future__ import annotations

from pathlib import Path


class VidseqError(Exception):
    """Base of every error vidseq raises on purpose."""


class ConfigError(VidseqError):
    """A config file or override is invalid (unknown key, wrong type, bad YAML)."""


class VideoDecodeError(VidseqError):
    """A video cannot be opened or decoded. The message always names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BackendUnavailableError(VidseqError):
    """A decoding backend was asked for by name but is not installed or cannot load."""


class DatasetError(VidseqError):
    """A dataset description (folder, CSV, list or split files) is malformed or empty."""


class Interrupted(VidseqError):
    """A run stopped by SIGTERM or Ctrl-C after keeping its work; the CLI exits 128 + ``signum``."""

    def __init__(self, message: str, *, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(message)
