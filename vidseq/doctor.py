"""``vidseq doctor``: is this installation able to run vidseq, and if not, what to do.

Place in the data flow: a tool beside the pipeline. It reads the config (output folders,
decoder, devices, backbone), asks ``io`` to read a clip it writes with ``io``'s own writer,
``tracking`` which MLflow store the config logs to, and ``outputs`` whether folders can be
written; it imports no decoder, mlflow or ultralytics itself beyond what those checks need
(versions come from package metadata).

Each check is a ``Check``: ``ok``, ``info`` (nothing to do), ``warn`` (works, but something
will bite: the fix is printed) or ``fail`` (something a command of this config needs is broken:
``vidseq doctor`` exits 1). Decoders are checked on a 16-frame clip whose frames differ so much
that a decoder returning a neighbouring frame, or the wrong count, is caught.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import __version__
from vidseq.config import VidseqConfig
from vidseq.errors import BackendUnavailableError, VidseqError
from vidseq.io import DEFAULT_BACKENDS, open_video, write_video
from vidseq.outputs import check_writable
from vidseq.tracking import resolve_tracking_uri

CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH = 16, 48, 64
SPARSE = [0, 9, 3, 15, 15, 8]  # out of order, repeated, the last frame: what extraction asks for
MAX_MAD = 8.0  # mean absolute difference to the frame written (H.264 at crf 18 gives about 1)
OPTIONAL_BACKENDS = {"torchcodec"}  # an extra; the others are dependencies
DISTRIBUTION_ALTERNATIVES = {"opencv-python": ("opencv-python-headless", "opencv-contrib-python")}
STATUSES = ("ok", "info", "warn", "fail")


@dataclass
class Check:
    """One finding: what was checked, its status, what was seen and (for warn and fail) the fix."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    """Versions and checks; ``ok``: no check failed."""

    versions: dict[str, str | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    def add(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        assert status in STATUSES, status
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        counts = {status: sum(c.status == status for c in self.checks) for status in STATUSES}
        return {"ok": self.ok, "versions": self.versions, "checks": [asdict(c) for c in self.checks], "counts": counts}

    def styled_lines(self) -> list[tuple[str, str]]:
        """The report as ``(line, rich style)`` pairs: versions, then one line per check, fixes below."""
        lines: list[tuple[str, str]] = [("versions:", "bold")]
        cells = [f"{name} {version or '-'}" for name, version in self.versions.items()]
        row: list[str] = []
        for cell in cells:
            if row and len("  " + ", ".join([*row, cell])) > 110:
                lines.append(("  " + ", ".join(row), ""))
                row = []
            row.append(cell)
        lines.append(("  " + ", ".join(row), ""))
        lines.append(("checks:", "bold"))
        styles = {"ok": "green", "info": "dim", "warn": "yellow", "fail": "bold red"}
        for check in self.checks:
            lines.append((f"  {check.status.upper():<5} {check.name}: {check.detail}", styles[check.status]))
            if check.fix:
                lines.append((f"        fix: {check.fix}", ""))
        fails = sum(c.status == "fail" for c in self.checks)
        warns = sum(c.status == "warn" for c in self.checks)
        verdict = "everything vidseq needs works" if not fails else f"{fails} problem(s) to fix before vidseq runs"
        lines.append((f"{verdict}; {warns} warning(s)", "bold green" if not fails else "bold red"))
        return lines


def run_doctor(config: VidseqConfig, *, tracking_uri: str | None = None, timeout: float = 5.0) -> Report:
    """Every check, for ``config`` (its output folders, decoder, devices, backbone)."""
    report = Report(versions=versions())
    check_dependencies(report)
    check_decoders(report, config.io.backend)
    check_gpu(report, config)
    check_onnxruntime(report)
    check_tracking(report, uri_of(config, tracking_uri), timeout=timeout)
    check_outputs(report, config)
    check_ultralytics(report, config)
    return report


# -- versions ------------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of python, vidseq and the libraries it runs on (None: not installed)."""
    import torch

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "vidseq": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "torchvision": _dist_version("torchvision"),
        "numpy": np.__version__,
        "decord": _dist_version("decord"),
        "av": _dist_version("av"),
        "ffmpeg (av)": _av_ffmpeg(),
        "ffmpeg (PATH)": _ffmpeg_binary(),
        "opencv": _opencv_version(),
        "torchcodec": _dist_version("torchcodec"),
        "onnx": _dist_version("onnx"),
        "onnxruntime": _dist_version("onnxruntime") or _dist_version("onnxruntime-gpu"),
        "ultralytics": _dist_version("ultralytics"),
        "lap": _dist_version("lap"),
        "mlflow": _dist_version("mlflow") or _dist_version("mlflow-skinny"),
    }
    return found


def _cudnn_version() -> str | None:
    import torch

    version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if not version:
        return None
    major, rest = divmod(version, 10000) if version >= 10000 else divmod(version, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _av_ffmpeg() -> str | None:
    if importlib.util.find_spec("av") is None:
        return None
    try:
        import av

        codec = av.library_versions.get("libavcodec")
        return f"{getattr(av, 'ffmpeg_version_info', '?')} (libavcodec {'.'.join(map(str, codec))})"
    except Exception:  # noqa: BLE001 - a broken av install is reported by the decoder check
        return None


def _ffmpeg_binary() -> str | None:
    path = shutil.which("ffmpeg")
    if path is None:
        return None
    try:
        first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return path
    match = re.search(r"ffmpeg version (\S+)", first)
    return match.group(1) if match else first.strip()


def _opencv_version() -> str | None:
    for name in ("opencv-python", *DISTRIBUTION_ALTERNATIVES["opencv-python"]):
        if version := _dist_version(name):
            return version
    return None


def check_dependencies(report: Report) -> None:
    """Every requirement of vidseq (not its extras) installed at a version it allows."""
    try:
        requires = importlib.metadata.requires("vidseq") or []
    except importlib.metadata.PackageNotFoundError:
        report.add("dependencies", "info", "vidseq runs from a source tree without package metadata: not checked")
        return
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging comes with pip and most installs; without it, names only
        Requirement = None  # noqa: N806
    problems = []
    for text in requires:
        if "extra ==" in text:
            continue
        name = re.split(r"[<>=!~;\[ ]", text, maxsplit=1)[0]
        installed = _dist_version(name) or next(
            (v for alt in DISTRIBUTION_ALTERNATIVES.get(name, ()) if (v := _dist_version(alt))), None
        )
        if installed is None:
            problems.append((text, "not installed"))
        elif Requirement is not None and not Requirement(text).specifier.contains(installed, prereleases=True):
            problems.append((text, f"{installed} installed"))
    if problems:
        wanted = " ".join(f"'{text.split(';')[0]}'" for text, _ in problems)
        seen = "; ".join(f"{text}: {why}" for text, why in problems)
        report.add("dependencies", "fail", seen, f"pip install {wanted}")
    else:
        report.add("dependencies", "ok", f"all {sum('extra ==' not in r for r in requires)} requirements installed")


# -- decoders ------------------------------------------------------------------------------


def clip_frames() -> np.ndarray:
    """``uint8 (16, 48, 64, 3)`` RGB frames, each unlike its neighbours: a bright bar whose column
    and a background level that both move with the index (so a frame off by one is far off)."""
    frames = np.empty((CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH, 3), np.uint8)
    ramp = np.linspace(0, 60, CLIP_WIDTH, dtype=np.float32)[None, :]
    for index in range(CLIP_FRAMES):
        level = 40 + 9 * index
        frame = np.repeat((level + ramp)[..., None], 3, axis=2).repeat(CLIP_HEIGHT, axis=0)
        left = 4 * index % (CLIP_WIDTH - 8)
        frame[8:40, left : left + 8] = (235, 60 + 10 * index, 30)
        frames[index] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def check_decoders(report: Report, configured: str) -> None:
    """Each decoding backend on a test clip written here: opens, counts 16 frames, and returns the
    frames asked for (sequentially and sparsely, out of order), close to those written.

    The backend the config decodes with (``io.backend``, or the first one 'auto' opens with) must
    pass; another that fails is a warning ('auto' may fall back to it on a file the first refuses).
    """
    truth = clip_frames()
    with tempfile.TemporaryDirectory(prefix="vidseq-doctor-") as tmp:
        clip = Path(tmp) / "doctor.mp4"
        try:
            write_video(clip, truth, fps=25.0)
        except Exception as exc:  # noqa: BLE001 - no encoder at all: every decoder check is moot
            report.add(
                "test clip", "fail", f"cannot write a test clip ({exc})", "pip install av (PyAV) or opencv-python"
            )
            return
        results = {name: read_back(clip, name, truth) for name in DEFAULT_BACKENDS}
        used = configured if configured != "auto" else next((n for n, r in results.items() if r[0] != "absent"), None)
        for name, (state, detail) in results.items():
            needed = name == used
            label = f"decoder {name}" + (" (used by io.backend)" if needed else "")
            if state == "ok":
                report.add(label, "ok", detail)
            elif state == "absent":
                status = "fail" if needed else ("info" if name in OPTIONAL_BACKENDS else "warn")
                hint = detail.split("install it with: ")[-1]
                if status == "info":
                    report.add(label, status, f"not installed (optional: {hint})")
                else:
                    report.add(label, status, detail.split("; install it with: ")[0], hint)
            else:
                fix = (
                    f"-o io.backend=<another that passes> (or auto), or reinstall {name}"
                    if needed
                    else f"none needed unless you pick it: 'auto' tries {used} first"
                )
                report.add(label, "fail" if needed else "warn", detail, fix)
        if used is None:
            report.add("decoders", "fail", "no video decoder is installed", "pip install av opencv-python decord")


def read_back(clip: Path, backend: str, truth: np.ndarray) -> tuple[str, str]:
    """('ok' | 'absent' | 'wrong', what was seen) for ``backend`` reading ``clip``."""
    try:
        with open_video(clip, backend=backend) as reader:
            count = reader.info.num_frames
            everything = reader.read(np.arange(CLIP_FRAMES))
            sparse = reader.read(np.array(SPARSE))
    except BackendUnavailableError as exc:
        return "absent", f"not installed: {exc}"
    except VidseqError as exc:
        return "wrong", f"cannot read the test clip: {getattr(exc, 'reason', exc)}"
    except Exception as exc:  # noqa: BLE001 - a decoder's own crash is this check's finding
        return "wrong", f"crashed on the test clip: {type(exc).__name__}: {exc}"
    if count != CLIP_FRAMES:
        return "wrong", f"counts {count} frames in a {CLIP_FRAMES}-frame clip"
    worst = 0.0
    for wanted, got in [*zip(range(CLIP_FRAMES), everything), *zip(SPARSE, sparse)]:
        mads = np.abs(truth.astype(np.int16) - got.astype(np.int16)).mean(axis=(1, 2, 3))
        nearest = int(np.argmin(mads))
        if nearest != wanted or mads[wanted] > MAX_MAD:
            return "wrong", f"frame {wanted} asked for, frame {nearest} returned (MAD {mads[wanted]:.1f} to it)"
        worst = max(worst, float(mads[wanted]))
    return "ok", f"reads the test clip exactly: {count} frames, sequential and sparse, MAD <= {worst:.1f}"


# -- devices -------------------------------------------------------------------------------


def check_gpu(report: Report, config: VidseqConfig) -> None:
    """Which CUDA devices torch sees; a config that asks for cuda without one fails."""
    import torch

    devices = {"extract.device": config.extract.device, "train.device": config.train.device}
    wants = {key: value for key, value in devices.items() if value.startswith("cuda")}
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report.add("gpu", "ok", f"{len(names)} CUDA device(s): {', '.join(names)} (cuDNN {_cudnn_version()})")
        return
    if wants:
        keys = ", ".join(f"{k}={v}" for k, v in wants.items())
        why = "torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device is visible"
        report.add(
            "gpu",
            "fail",
            f"the config asks for {keys}, but {why}",
            "-o extract.device=auto -o train.device=auto (CPU here), or install a CUDA build of torch / "
            "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
        )
    elif torch.version.cuda is None:
        report.add("gpu", "info", "CPU-only torch build: vidseq runs on the CPU (device auto)")
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        report.add("gpu", "info", f"torch built for CUDA {torch.version.cuda}, but no GPU is visible{hint}: CPU used")


def check_onnxruntime(report: Report) -> None:
    """onnxruntime's execution providers (the CUDA one wants a GPU and onnxruntime-gpu)."""
    if importlib.util.find_spec("onnxruntime") is None:
        report.add("onnxruntime", "info", "not installed (optional: pip install 'vidseq[onnx]' for extract.runtime)")
        return
    try:
        import onnxruntime
    except Exception as exc:  # noqa: BLE001 - a broken install is the finding
        fix = "pip install --force-reinstall onnxruntime"
        report.add("onnxruntime", "warn", f"installed but does not import: {exc}", fix)
        return
    providers = onnxruntime.get_available_providers()
    report.versions["onnxruntime providers"] = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    import torch

    if torch.cuda.is_available() and "CUDAExecutionProvider" not in providers:
        report.add(
            "onnxruntime",
            "warn",
            f"a GPU is visible but onnxruntime has only {', '.join(providers)}: it runs the backbone on the CPU",
            "pip uninstall onnxruntime && pip install onnxruntime-gpu",
        )
    else:
        report.add("onnxruntime", "ok", f"providers: {', '.join(providers)}")


# -- MLflow --------------------------------------------------------------------------------


def uri_of(config: VidseqConfig, given: str | None) -> str:
    """The tracking URI to check: ``given``, the config's ``tracking.uri`` where it has one,
    else what a run would use (``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db)."""
    section = getattr(config, "tracking", None)
    return resolve_tracking_uri(given or getattr(section, "uri", None))


def check_tracking(report: Report, uri: str, *, timeout: float) -> None:
    """Can runs be logged to ``uri``: sqlite (the file opens, or its folder can hold a new one),
    http(s) (the server answers /health within ``timeout``); other schemes are not checked."""
    name = f"mlflow {uri}"
    if _dist_version("mlflow") is None and _dist_version("mlflow-skinny") is None:
        report.add(name, "fail", "mlflow is not installed", "pip install 'mlflow>=3.0'")
        return
    if uri.startswith("sqlite:"):
        _check_sqlite_uri(report, name, uri)
    elif uri.startswith(("http://", "https://")):
        _check_server(report, name, uri, timeout)
    else:
        report.add(name, "info", "not checked (only sqlite and http(s) stores are)")


def _check_sqlite_uri(report: Report, name: str, uri: str) -> None:
    path = uri.removeprefix("sqlite:").removeprefix("///").split("?")[0]
    if path in ("", "//", ":memory:"):
        report.add(name, "ok", "in-memory database")
        return
    db = Path(path).absolute()
    fix = "pass another --tracking-uri (or set MLFLOW_TRACKING_URI)"
    if db.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                tables = {row[0] for row in conn.execute("select name from sqlite_master where type='table'")}
        except sqlite3.Error as exc:
            report.add(name, "fail", f"{db} is not a readable SQLite database ({exc})", f"move it away, or {fix}")
            return
        if not os.access(db, os.W_OK) or not os.access(db.parent, os.W_OK):
            report.add(name, "fail", f"{db} is not writable", f"fix its permissions, or {fix}")
        elif tables and "experiments" not in tables:
            report.add(name, "fail", f"{db} is a SQLite database but not an MLflow store", f"use another file: {fix}")
        else:
            report.add(name, "ok", f"opens ({'an MLflow store' if tables else 'empty'}; writable)")
        return
    if not db.parent.is_dir():
        report.add(name, "fail", f"folder {db.parent} does not exist", f"mkdir -p {db.parent}, or {fix}")
    elif not os.access(db.parent, os.W_OK):
        report.add(name, "fail", f"folder {db.parent} is not writable", f"fix its permissions, or {fix}")
    else:
        report.add(name, "ok", f"{db.name} will be created in {db.parent} on the first tracked run")


def _check_server(report: Report, name: str, uri: str, timeout: float) -> None:
    fix = (
        "start the server (mlflow server --host HOST --port PORT), fix the URI, or unset MLFLOW_TRACKING_URI "
        "(drop --tracking-uri) to log to the local sqlite:///mlflow.db"
    )
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:
            body = answer.read(100).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            report.add(name, "ok", f"reachable (/health answered {exc.code}: credentials are checked by runs)")
        else:
            report.add(name, "fail", f"answered HTTP {exc.code} on /health: not an MLflow server?", fix)
        return
    except (urllib.error.URLError, OSError) as exc:
        report.add(name, "fail", f"unreachable within {timeout:g} s ({getattr(exc, 'reason', exc)})", fix)
        return
    report.add(name, "ok", f"reachable (/health: {body or 'OK'})")


# -- outputs and ultralytics ---------------------------------------------------------------


def check_outputs(report: Report, config: VidseqConfig) -> None:
    """The config's output folders can be written (an absent one: its nearest existing parent,
    where it would be made; nothing is created here)."""
    for key, folder in (("extract.out", config.extract.out), ("train.out", config.train.out)):
        _check_folder(report, f"output {key}", Path(folder), what=key)


def _check_folder(report: Report, name: str, folder: Path, *, what: str) -> None:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        report.add(
            name,
            "fail",
            f"cannot make {folder}: {existing} is a file, not a folder",
            f"-o {what}=<a folder you can write> or move {existing} away",
        )
        return
    try:
        check_writable(existing, what=what)
    except VidseqError as exc:
        report.add(name, "fail", str(exc).split(";")[0], f"-o {what}=<a folder you can write> or make it writable")
        return
    made = "" if existing == folder.absolute() else f" (will be created under {existing})"
    report.add(name, "ok", f"{folder} writable{made}")


def _truthy(name: str) -> bool | None:
    value = os.environ.get(name)
    return None if value is None else value.strip().lower() in {"1", "true", "yes", "on", "y", "t"}


def check_ultralytics(report: Report, config: VidseqConfig) -> None:
    """ultralytics (the yolo backbone) offline: YOLO_OFFLINE on, YOLO_AUTOINSTALL off, a writable
    YOLO_CONFIG_DIR, and lap (its trackers) installed, so it neither waits on the network nor
    pip-installs at run time."""
    yolo = config.backbone.name == "yolo"
    if _dist_version("ultralytics") is None:
        status = "fail" if yolo else "info"
        fix = "pip install 'ultralytics>=8.3'" if yolo else ""
        report.add("ultralytics", status, "not installed (the yolo backbone needs it)", fix)
        return
    if _truthy("YOLO_OFFLINE"):
        report.add("YOLO_OFFLINE", "ok", "set: ultralytics makes no network checks")
    else:
        report.add(
            "YOLO_OFFLINE",
            "warn",
            "unset or off: ultralytics looks for the network (DNS lookups, hub checks) and may try downloads",
            "export YOLO_OFFLINE=1",
        )
    if _truthy("YOLO_AUTOINSTALL") is False:
        report.add("YOLO_AUTOINSTALL", "ok", "off: ultralytics never pip-installs at run time")
    else:
        report.add(
            "YOLO_AUTOINSTALL",
            "warn",
            "unset or on: ultralytics pip-installs packages it misses at run time",
            "export YOLO_AUTOINSTALL=0",
        )
    folder = os.environ.get("YOLO_CONFIG_DIR")
    if folder is None:
        report.add(
            "YOLO_CONFIG_DIR",
            "warn",
            "unset: ultralytics writes its settings under ~/.config/Ultralytics (or a temporary folder)",
            "export YOLO_CONFIG_DIR=<a writable folder> (the Makefile uses .venv/ultralytics-config)",
        )
    else:
        _check_folder(report, "YOLO_CONFIG_DIR", Path(folder), what="YOLO_CONFIG_DIR")
        if report.checks[-1].status == "fail":
            report.checks[-1].status = "fail" if yolo else "warn"
            report.checks[-1].fix = "export YOLO_CONFIG_DIR=<a writable folder>"
    if importlib.util.find_spec("lap") is not None:
        report.add("lap", "ok", f"installed ({_dist_version('lap')}): ultralytics' trackers need it")
    else:
        report.add(
            "lap", "warn", "not installed: ultralytics' trackers pip-install it at run time", "pip install 'lap>=0.5'"
        )
