"""Loading weight files safely: existence, content hash, ``torch.load(weights_only=True)``.

Place in the data flow: a builder in ``vidseq.backbones`` resolves where its weights are, then
calls this before building the frames -> features module. The returned sha256 goes into the
backbone's spec, so the feature store's key follows the weights' content, not their path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from vidseq.backbones.base import BackboneError, file_sha256

# torch.hub's convention: "name-<first hex digits of the sha256>.pth".
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict file -> (tensors by name, sha256 of the file).

    Refuses pickled objects (``weights_only=True``); a file whose name carries a hash prefix
    (``resnet18-f37072fd.pth``) must match it. A ``{"state_dict": ...}`` wrapper is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    sha256 = file_sha256(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not sha256.startswith(match.group(1)):
        raise BackboneError(
            f"{path}: content hash {sha256[:12]}... does not match the {match.group(1)!r} in its "
            "name: the file is corrupt or truncated; download it again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise BackboneError(f"{path}: cannot load as a plain state dict: {exc}") from exc
    return _unwrap(state, path), sha256


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path}: not a state dict of tensors")
    return dict(state)
