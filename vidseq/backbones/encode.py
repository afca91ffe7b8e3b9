"""The one frames -> features path: fit decoded frames to the backbone, then encode them.

Place in the data flow: decoded frames ``uint8 (N, H, W, 3)`` RGB (``vidseq.io``; a decoder may
already have resized them to ``decode_size``) -> **fit_frames** -> fitted ``uint8 (N, S, S, 3)``
-> **FrameEncoder** (to the device as uint8, normalise, channels_last, autocast per precision,
the backbone and its pooling) -> ``float32 (N, D)`` features.

Every caller goes through these two: extraction (both engines: decode workers fit, the model
side runs a ``FrameEncoder`` set from ``extract.precision``/``channels_last``/``runtime``), prediction
(``Predictor.embed`` for live streams with the same settings; files and windows run the
extraction loop itself) and ``Backbone.features``. A second copy drifts: stream prediction once
fitted frames its own way and skipped autocast, so on a GPU a head trained on fp16/bf16
features was served fp32 ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from vidseq.backbones.onnx import RUNTIMES, OrtSession, onnx_session
from vidseq.backbones.spec import BackboneError, BackboneSpec, frames_tensor, normalize_frames
from vidseq.io import output_hw, resize_frame

if TYPE_CHECKING:
    from vidseq.backbones.base import Backbone

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_LETTERBOX_GREY = 114  # YOLO's padding value


def decode_size(height: int, width: int, spec: BackboneSpec) -> int | tuple[int, int]:
    """The size to decode (or resize) a ``height x width`` video at for the backbone: its short
    side (crop), or the letterboxed ``(h, w)``; a ``vidseq.io`` size argument."""
    if spec.fit == "crop":
        return spec.resize
    scale = spec.input_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_frames(frames: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    """Decoded frames ``uint8 (N, H, W, 3)`` RGB -> fitted ``uint8 (N, S, S, 3)``, the backbone's input.

    Frames not already at ``decode_size`` are resized to it as ``vidseq.io`` resizes after a
    decode (``resize_frame``; a no-op for frames a decoder gave at that size), then centre-cropped
    to ``S x S`` (or padded with grey, for letterbox).
    """
    return _crop_or_pad(decoded_frames(frames, spec), spec)


def decoded_frames(frames: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    """Frames ``uint8 (N, H, W, 3)`` of any size -> the frames a decode at ``decode_size`` gives
    (resized as ``vidseq.io`` resizes, not cropped): what the pose stream sees."""
    height, width = frames.shape[1:3]
    size = output_hw(decode_size(height, width, spec), height, width)
    if len(frames) and (height, width) != size:
        frames = np.stack([resize_frame(frame, size) for frame in frames])
    return frames


def _crop_or_pad(frames: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    size = spec.input_size
    height, width = frames.shape[1:3]
    if spec.fit == "crop":
        top, left = (height - size) // 2, (width - size) // 2
        return np.ascontiguousarray(frames[:, top : top + size, left : left + size])
    out = np.full((len(frames), size, size, 3), _LETTERBOX_GREY, dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    out[:, top : top + height, left : left + width] = frames
    return out


def preprocess_frames(frames: np.ndarray | torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    """Frames ``uint8 (N, H, W, 3)`` RGB of any size -> the network input ``float32 (N, 3, S, S)``
    (``fit_frames``, then normalised), on the frames' device."""
    x = frames_tensor(frames)
    fitted = torch.from_numpy(fit_frames(x.cpu().numpy(), spec)).to(x.device)
    return normalize_frames(fitted, spec)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the backbone runs in under ``precision`` on ``device``; None: float32.

    ``"auto"``: bf16 on CUDA where supported, else fp16 there, float32 on any other device.
    """
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class FrameEncoder:
    """The one frames -> features function: fitted ``uint8 (N, S, S, 3)`` RGB -> ``float32 (N, D)``.

    ``precision`` (``extract.precision``): see ``autocast_dtype``; float32 means autocast is off
    inside, whatever autocast context the caller is in. ``channels_last``: the backbone
    (converted in place, here) and its input in channels_last memory format. ``device``: where
    the frames go, as uint8 (4x less to copy than floats); default: the backbone's device.
    ``batch`` (``extract.batch_size``): every forward then has exactly this many frames (a short
    last one is padded with black frames whose outputs are dropped), so a frame's features never
    depend on which other frames shared its forward: CPU kernels pick their blocking, and with it
    the order of float sums, by the batch's shape (measured: up to 1e-5 apart at batch 8 vs 16).
    Extraction uses it, so any number of writers, in any order, store bit-identical features.

    ``runtime`` (``extract.runtime``): ``"torch"``, or ``"onnxruntime"``: the same fitted frames,
    normalised by the same torch code, go through the backbone's ONNX export (``onnx.cached_export``,
    once per spec + weights) in an ONNX Runtime session (``onnx.OrtSession``: CUDA/TensorRT
    providers on a GPU device where installed, else CPU; intra-op threads = torch's at creation),
    in float32 whatever ``precision`` says; its features match torch float32's within
    ``onnx.PARITY_TOL``. A backbone that does not export runs with torch after one
    ``OnnxFallbackWarning``: ``self.runtime`` then says ``"torch"``; ``self.requested_runtime``
    keeps what was asked for. onnxruntime not installed: a ``ConfigError`` naming the extra.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        precision: str = "auto",
        channels_last: bool = True,
        device: torch.device | str | None = None,
        batch: int | None = None,
        runtime: str = "torch",
    ) -> None:
        if runtime not in RUNTIMES:
            raise BackboneError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        self.backbone, self.precision, self.channels_last, self.batch = backbone, precision, channels_last, batch
        self.device = backbone.device if device is None else torch.device(device)
        self.autocast_dtype = autocast_dtype(precision, self.device)
        if channels_last:
            backbone.to(memory_format=torch.channels_last)
        self.requested_runtime = runtime
        self.session: OrtSession | None = None
        if runtime == "onnxruntime":
            self.session = onnx_session(backbone, device=self.device)
        self.runtime = "onnxruntime" if self.session is not None else "torch"

    @property
    def spec(self) -> BackboneSpec:
        return self.backbone.spec

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Fitted frames (numpy or torch, any device) -> ``float32 (N, D)`` on ``self.device``."""
        frames = frames_tensor(frames)
        if self.batch is None or len(frames) == self.batch:
            return self._forward(frames)
        parts = []
        for start in range(0, len(frames), self.batch):
            part = frames[start : start + self.batch]
            count = len(part)
            if count < self.batch:
                part = torch.cat([part, part.new_zeros((self.batch - count, *part.shape[1:]))])
            parts.append(self._forward(part)[:count])
        return torch.cat(parts) if parts else self._forward(frames)

    def _forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.session is not None:  # same normalisation, on the CPU, as NCHW float32 for ORT
            x = normalize_frames(frames.cpu(), self.spec).contiguous()
            return torch.from_numpy(self.session.run(x.numpy())).to(self.device)
        x = normalize_frames(frames.to(self.device, non_blocking=True), self.spec)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.backbone(x).float()

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Fitted frames -> ``float32 (N, D)`` features as numpy (what stores and heads read)."""
        return self.encode(frames).cpu().numpy()
