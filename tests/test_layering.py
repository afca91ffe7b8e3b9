"""Data flows one way: a vidseq module imports only modules of lower layers (checked with ast).

videos -> frames -> features -> sequences -> logits -> metrics/artifacts. A new module must be
given its layer here, so the rule is decided on purpose, not by accident.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidseq"

LAYERS = {
    "vidseq": 0,  # __init__: version only
    "vidseq.errors": 0,
    "vidseq.atomic": 0,  # atomic file writes (imports nothing of vidseq)
    "vidseq.progress": 0,  # progress bars on a terminal, plain lines in logs (imports nothing of vidseq)
    "vidseq.interrupts": 0,  # SIGTERM raised like Ctrl-C while clean-stopping work runs (imports nothing)
    "vidseq.config": 1,
    "vidseq.threads": 1,  # cores this process may use and their split (imports errors only; torch/cv2 lazily)
    "vidseq.outputs": 1,  # output folders checked before work, OSErrors as one line (imports errors only)
    "vidseq.io": 2,
    "vidseq.sampling": 2,
    "vidseq.datasets": 2,
    "vidseq.synth": 3,  # shapes, camera (reads sources via io) and the dataset writer
    "vidseq.backbones": 4,
    "vidseq.features": 5,
    "vidseq.models": 6,
    "vidseq.metrics": 6,
    "vidseq.plots": 7,  # confusion and training-curve PNGs: draws what metrics computes (imports it)
    "vidseq.training": 8,  # sequences, checkpoint, evaluate, weights, runs, distributed, train
    "vidseq.predict": 9,
    "vidseq.bench": 9,  # `vidseq bench`: times extraction's parts (imports io, synth, backbones, features)
    "vidseq.tracking": 10,
    "vidseq.pipeline": 11,
    "vidseq.doctor": 11,  # `vidseq doctor`: checks the install (imports io, outputs, tracking's URI helpers)
    "vidseq.cli": 12,
    "vidseq.__main__": 13,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    """The layer of a module: its own entry or its closest package's."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS and (name != "vidseq" or i == len(parts)):
            return LAYERS[name]
    raise KeyError(module)


def _vidseq_imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vidseq"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("vidseq"):
                found.add(name)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_flow_downwards(path):
    module = _module_name(path)
    assert any(module == n or module.startswith(n + ".") for n in LAYERS), (
        f"{module} has no layer in tests/test_layering.py: give it one"
    )
    own = _layer(module)
    own_package = ".".join(module.split(".")[:2])
    for imported in _vidseq_imports(path, module):
        if imported == own_package or imported.startswith(own_package + "."):
            continue  # inside its own sub-package
        assert _layer(imported) < own, f"{module} (layer {own}) imports {imported} (layer {_layer(imported)})"


def test_import_vidseq_is_cheap():
    """`import vidseq` (and the config layer) must not pull in torch, decoders or mlflow."""
    code = (
        "import sys, vidseq, vidseq.config, vidseq.errors; "
        "heavy = [m for m in ('torch', 'cv2', 'decord', 'av', 'mlflow', 'ultralytics') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _edges(path: Path, module: str, known: set[str]) -> set[str]:
    """The vidseq modules ``module`` imports when it runs (``TYPE_CHECKING`` blocks left out):
    ``from pkg import sub`` is an edge to the submodule, ``from pkg import Name`` to the package."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vidseq"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidseq") and not node.level:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
            if len(subs) < len(node.names):
                found.add(node.module)
    return {name for name in found if name in known and name != module}


def test_no_import_cycle_anywhere():
    """No module reaches itself through imports, inside packages too (lazy imports in functions
    count: they run; ``TYPE_CHECKING`` imports do not)."""
    modules = {_module_name(p): p for p in SOURCES}
    graph = {name: _edges(path, name, set(modules)) for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [name, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
