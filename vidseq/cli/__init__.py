"""The ``vidseq`` command line: thin wrappers that parse, build a config and call one function.

Place in the data flow: the top. ``_app`` holds the typer app, the shared options and the one-line
error handling; ``data`` (probe, synth, dataset, extract), ``model`` (train, evaluate, predict)
and ``pipelines`` (run, config) register their commands on it when imported here.
"""

from vidseq.cli import data, model, pipelines  # noqa: F401 - importing registers the commands
from vidseq.cli._app import app, main

__all__ = ["app", "main"]
