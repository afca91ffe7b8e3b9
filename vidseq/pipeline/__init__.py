"""Stage pipelines: ``synth -> extract -> train -> evaluate -> predict`` from one YAML file.

Place in the data flow: on top of the library, below only the CLI. A pipeline file lists its
stages and their config; ``run_pipeline`` runs them in order, reuses every stage whose key (a
digest of its config and its inputs) already finished, and tracks the run in MLflow.

    from vidseq.pipeline import run_pipeline
    result = run_pipeline("pipelines/quickstart.yaml", ["train.epochs=10"])
    result.metrics["test_accuracy"], result.model_uri
"""

from vidseq.pipeline.runner import (
    PipelineError,
    PipelineResult,
    StageRecord,
    run_pipeline,
    stage_directories,
)
from vidseq.pipeline.spec import STAGE_NAMES, Pipeline, Stage, load_pipeline
from vidseq.pipeline.stages import StageError

__all__ = [
    "STAGE_NAMES",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "Stage",
    "StageError",
    "StageRecord",
    "load_pipeline",
    "run_pipeline",
    "stage_directories",
]
