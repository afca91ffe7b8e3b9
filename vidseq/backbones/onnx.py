"""The backbone as an ONNX graph, and ONNX Runtime sessions that run it (``extract.runtime``).

Place in the data flow: a ``Backbone`` (``registry.create_backbone``) -> **export_backbone** (an
``.onnx`` file: normalised ``float32 (N, 3, S, S)`` -> pooled ``float32 (N, D)``, exactly
``Backbone.forward``, pooling included) -> **cached_export** (once per backbone spec + weights, in
a cache folder) -> **OrtSession** -> ``encode.FrameEncoder`` with ``runtime="onnxruntime"``: the one
frames -> features path, so extraction (both engines' ``BatchForward``) and prediction
(``Predictor.embed``) get the same fitting, the same normalisation (torch's ``normalize_frames``,
outside the graph) and the same fixed batch; only the network runs elsewhere.

Normalisation stays outside the graph on purpose: the graph's contract is ``Backbone.forward``'s
(what ``vidseq export`` ships, with the spec's mean/std in its manifest), and both runtimes then
read bit-identical inputs, so the features differ only by the kernels' float sums (measured
at most 3e-6 of the largest feature; ``PARITY_TOL``). onnxruntime is an optional extra (``pip install -e ".[onnx]"``):
imported only here, when a session or an export is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseq.atomic import write_bytes
from vidseq.backbones.spec import BackboneError, cache_folder, grid_size, pool_maps
from vidseq.errors import ConfigError

if TYPE_CHECKING:
    from vidseq.backbones.base import Backbone

RUNTIMES = ("torch", "onnxruntime")
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "frames", "features"
# Bump when the exported graph of an unchanged backbone changes (names, axes, wrapper).
EXPORT_VERSION = 1
# The parity tolerance of the two runtimes (``parity_error``: the largest |ORT - torch| over a
# batch, relative to its largest |torch| feature, or absolute where that is below 1). Measured on
# the shared clips, float32 CPU: 1.4e-6 (efficientnet_lite0 avg, 6e-6 absolute), 2.6e-6 (grid2),
# at most 1.6e-6 for every other backbone that exports. Checked at export; what tests assert.
PARITY_TOL = 1e-4
_PROBE_FRAMES = 2
_INSTALL_HINT = 'pip install -e ".[onnx]"'


class BackboneExportError(BackboneError):
    """A backbone does not export to ONNX (an op without a symbolic) or its export does not match torch."""


class OnnxFallbackWarning(UserWarning):
    """``runtime: onnxruntime`` was asked for but this backbone runs with torch (it does not export)."""


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a ``ConfigError`` that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"runtime onnxruntime needs the onnx extra, which is not installed: {_INSTALL_HINT} (or use runtime: torch)"
        ) from None
    return onnxruntime


def export_backbone(backbone: Backbone, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``backbone`` as an ONNX file at ``path`` (atomically); returns the path.

    The graph is ``Backbone.forward``: input ``"frames"`` normalised ``float32 (N, 3, S, S)``
    (``spec.normalize_frames`` of fitted frames: ``(x / 255 - mean) / std``), output
    ``"features"`` ``float32 (N, spec.feature_dim)``, pooled; the batch axis ``N`` is dynamic.
    Exported with the TorchScript exporter (``dynamo=False``) at ``opset``, on the backbone's
    device, in eval mode (restored after). Any failure of the exporter is a
    ``BackboneExportError`` naming the backbone.
    """
    spec = backbone.spec
    size = spec.input_size
    probe = torch.zeros(_PROBE_FRAMES, 3, size, size, device=backbone.device)
    training = backbone.training
    buffer = io.BytesIO()
    try:
        backbone.eval()
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow
            torch.onnx.export(
                _Exportable(backbone),
                (probe,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                verbose=False,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types (SymbolicValueError, RuntimeError...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneExportError(f"backbone {spec.name!r} does not export to ONNX: {reason[:300]}") from exc
    finally:
        backbone.train(training)
    return write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """File descriptor 1 to /dev/null for the block: the TorchScript exporter prints the whole
    graph there (from C++) when an op does not export, and leaves its log switched on after."""
    try:
        sys.stdout.flush()
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real fd 1 (an embedding host): nothing to hide
        yield
        return
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
        set_log = getattr(torch._C, "_jit_set_onnx_log_enabled", None)
        if set_log is not None:
            set_log(False)


class _Exportable(nn.Module):
    """``Backbone.forward`` with a pooling the ONNX exporter takes: ``gridK`` (K > 1) as average
    pools over the map's fixed cells (the exporter rejects ``adaptive_avg_pool2d`` to K x K once
    the batch axis is dynamic); ``avg`` exactly as ``pool_maps`` (a global average pool)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, pooling = self.backbone.forward_maps(x), self.backbone.spec.pooling
        k = grid_size(pooling)
        if k == 1:
            return pool_maps(maps, pooling)
        return torch.cat([_grid_cells(fmap.float(), k) for fmap in maps], dim=1)


def _grid_cells(fmap: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, k * k * C)`` cell-major, the cells of ``adaptive_avg_pool2d(fmap, k)``
    (cell i spans rows ``floor(i h / k)`` to ``ceil((i + 1) h / k)``; h, w fixed by the input size)."""
    h, w = int(fmap.shape[2]), int(fmap.shape[3])
    if h % k == 0 and w % k == 0:
        cells = F.avg_pool2d(fmap, (h // k, w // k))  # (N, C, k, k)
        return cells.permute(0, 2, 3, 1).flatten(1)
    rows = [(i * h // k, -(-(i + 1) * h // k)) for i in range(k)]
    cols = [(j * w // k, -(-(j + 1) * w // k)) for j in range(k)]
    return torch.cat([fmap[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for r0, r1 in rows for c0, c1 in cols], dim=1)


# -- the export cache ----------------------------------------------------------------------


def onnx_cache_dir() -> Path:
    """Where exported backbones are cached: ``$VIDSEQ_ONNX_CACHE``, else
    ``$XDG_CACHE_HOME/vidseq/onnx`` (``~/.cache``), else a folder in the temp dir if that is not writable."""
    if os.environ.get("VIDSEQ_ONNX_CACHE"):
        return Path(os.environ["VIDSEQ_ONNX_CACHE"])
    return cache_folder("onnx", hint="to cache exported backbones: set VIDSEQ_ONNX_CACHE to one")


def export_key(backbone: Backbone, *, opset: int = DEFAULT_OPSET) -> str:
    """The sha256 that names a backbone's cached export: its spec key (what keys the feature
    store), the content of its weights as loaded (parameters and buffers: random-init or
    in-memory-changed weights get their own file), the opset, torch's version and ``EXPORT_VERSION``."""
    digest = hashlib.sha256()
    meta = {"spec": backbone.spec.key(), "opset": opset, "torch": torch.__version__, "export": EXPORT_VERSION}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        data = tensor.detach().cpu().reshape(-1).clone()  # 1-d, stride 1 (channels_last params are not)
        digest.update(f"{data.dtype}{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def cached_export(
    backbone: Backbone, *, cache_dir: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """The backbone's ONNX file from the cache, exported (and checked against torch) on first use.

    Named ``<backbone>-<export_key[:20]>.onnx``: another spec or other weights give another file,
    so a change of either rebuilds it. The file is written to a temporary name and renamed only
    after ORT's features of random frames matched torch's (``PARITY_TOL``): two processes
    exporting at once each rename a whole, checked file over the same name.
    """
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone.spec.name)
    path = folder / f"{name}-{export_key(backbone, opset=opset)[:20]}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".onnx", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_backbone(backbone, tmp, opset=opset)
        _check_parity(backbone, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def parity_error(got: np.ndarray, expected: np.ndarray) -> float:
    """``max |got - expected| / max(1, max |expected|)``: what ``PARITY_TOL`` bounds."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        return float("inf")
    if not expected.size:
        return 0.0
    return float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def _check_parity(backbone: Backbone, path: Path) -> None:
    """ORT's features of a few random normalised frames must match torch's within ``PARITY_TOL``."""
    size = backbone.spec.input_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_PROBE_FRAMES, 3, size, size, generator=generator)
    with torch.no_grad():
        expected = backbone(x.to(backbone.device)).float().cpu().numpy()
    try:
        got = OrtSession(path, device=torch.device("cpu"), threads=torch.get_num_threads()).run(x.numpy())
    except Exception as exc:  # noqa: BLE001 - ORT fails to load graphs with ops it lacks
        raise BackboneExportError(f"backbone {backbone.spec.name!r}: onnxruntime cannot run its export: {exc}") from exc
    error = parity_error(got, expected)
    if not error <= PARITY_TOL:
        raise BackboneExportError(
            f"backbone {backbone.spec.name!r}: its ONNX export gives other features than torch "
            f"(relative difference {error:.2g} > {PARITY_TOL:g})"
        )


# -- running it ----------------------------------------------------------------------------


def providers_for(device: torch.device, available: list[str]) -> list[str | tuple[str, dict[str, Any]]]:
    """ORT execution providers for ``device``: TensorRT, then CUDA, where installed and the device
    is a visible GPU; CPU always last (ORT falls back to it per node)."""
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    if device.type == "cuda" and torch.cuda.is_available():
        options = {"device_id": device.index if device.index is not None else torch.cuda.current_device()}
        for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            if provider in available:
                chosen.append((provider, dict(options)))
    chosen.append("CPUExecutionProvider")
    return chosen


class OrtSession:
    """An ONNX Runtime session of an exported backbone: normalised ``float32 (N, 3, S, S)`` numpy
    -> ``float32 (N, D)`` numpy.

    ``threads``: ORT's intra-op threads (default: ``torch.get_num_threads()`` now, i.e. the
    budget this process gave torch); one inter-op thread, sequential execution, and worker
    threads that sleep instead of spinning when idle (a spinning thread burns a core that the
    decode workers and other jobs on a shared machine need).
    """

    def __init__(self, path: str | os.PathLike, *, device: torch.device, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads if threads is not None else torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's warnings about unused providers are noise
        self.path, self.threads = Path(path), options.intra_op_num_threads
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=providers_for(device, ort.get_available_providers())
        )
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnx_session(
    backbone: Backbone, *, device: torch.device, cache_dir: str | os.PathLike | None = None
) -> OrtSession | None:
    """An ``OrtSession`` of ``backbone`` (exported and cached on first use), or None with one
    ``OnnxFallbackWarning`` line where the backbone does not export (or ``device`` is a GPU that
    this onnxruntime has no provider for): it then runs with torch.
    A missing onnxruntime is a ``ConfigError`` (asked for, cannot be given)."""
    ort = require_onnxruntime()
    if device.type == "cuda" and len(providers_for(device, ort.get_available_providers())) == 1:
        warnings.warn(
            f"onnxruntime has no GPU provider here (install onnxruntime-gpu): running {backbone.spec.name!r} "
            f"on {device} with torch instead (runtime: torch)",
            OnnxFallbackWarning,
            stacklevel=3,
        )
        return None
    try:
        path = cached_export(backbone, cache_dir=cache_dir)
    except BackboneExportError as exc:
        warnings.warn(f"{exc}; running it with torch instead (runtime: torch)", OnnxFallbackWarning, stacklevel=3)
        return None
    return OrtSession(path, device=device)
