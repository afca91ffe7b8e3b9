# vidseq on a fresh machine: two commands, each doing its own set-up first.
#   make quickstart              .venv, install, then `vidseq run pipelines/quickstart.yaml`
#   make test [ARGS="-m 'not slow'"] [WORKERS=2]   .venv, install, import check, then `python -m pytest ARGS`
#                                    in WORKERS pytest-xdist processes (0: one process)
# Set-up: .venv is made with `python3 -m venv` if missing; `pip install -e ".[test]"` runs only
# when pyproject.toml is newer than .venv/.installed and .venv lacks something it asks for (a change
# that check cannot see, e.g. new entry points: `rm .venv/.installed`); everything runs offline the
# way CI does (.ci/run), with ultralytics' settings inside .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# pytest-xdist processes, each test file whole in one of them (its module fixtures built once):
# 1,035 s -> 703 s for the suite on 2 cores. WORKERS=0 runs everything in one process.
WORKERS ?= 2

export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export YOLO_CONFIG_DIR := $(VIRTUAL_ENV)/ultralytics-config
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0

.PHONY: help install lint quickstart test

help:
	@echo "make quickstart                  set up .venv, then run pipelines/quickstart.yaml (about a minute)"
	@echo "make test [ARGS=\"-m 'not slow'\"] [WORKERS=2]  set up .venv, then python -m pytest ARGS in WORKERS processes"
	@echo "make install                     only the set-up (a no-op when .venv is up to date)"
	@echo "make lint                        ruff check and ruff format --check (make test runs it first)"

quickstart: install
	vidseq run pipelines/quickstart.yaml

test: install lint
	$(PY) -c "import torch, torchvision, cv2, decord, av; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(PY) -m pytest $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile) $(ARGS)

install: $(STAMP) | $(YOLO_CONFIG_DIR)

# ruff: lint and format, configured in pyproject.toml (`ruff format vidseq tests benchmarks` fixes the format)
lint: install
	$(PY) -m ruff check vidseq tests benchmarks
	$(PY) -m ruff format --check vidseq tests benchmarks

$(PY):
	$(PYTHON) -m venv $(VENV)

$(YOLO_CONFIG_DIR): | $(PY)
	mkdir -p $@

# pip runs only where .venv lacks this clone (editable) or a requirement of ".[test]" at a version
# pyproject.toml allows; a venv that has them all just gets its stamp.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -I -c "$$VIDSEQ_INSTALLED" 2>/dev/null || $(PY) -m pip install -e ".[test]"
	touch $@

define VIDSEQ_INSTALLED
import importlib.metadata as md, json, pathlib, tomllib
from packaging.requirements import Requirement
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
assert json.loads(md.distribution("vidseq").read_text("direct_url.json"))["url"] == pathlib.Path.cwd().as_uri()
for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
    assert (req.marker and not req.marker.evaluate()) or req.specifier.contains(md.version(req.name), prereleases=True)
endef
export VIDSEQ_INSTALLED
