"""The ``vidseq`` command line: thin wrappers that parse, build a config and call one function.

Place in the data flow: the top. ``_app`` holds the typer app, the shared options and the one-line
error handling; ``data`` (probe, synth, dataset, extract), ``model`` (train, evaluate, predict),
``pipelines`` (run, config) and ``tools`` (bench, doctor) register their commands on it when
imported here.
"""

from vidseq.cli import data, export, model, pipelines, tools  # noqa: F401 - importing registers the commands
from vidseq.cli._app import app, main

__all__ = ["app", "main"]
