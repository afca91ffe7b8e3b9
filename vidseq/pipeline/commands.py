"""One-command jobs that compose training with MLflow tracking (``vidseq train --track``).

Place in the data flow: beside the stage pipelines (``stages.tracked_train`` is the train stage
both use); the CLI parses flags into a config and calls ``train_command``, then prints what it
returns. Everything here decides; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vidseq.config import VidseqConfig
from vidseq.errors import VidseqError
from vidseq.pipeline.stages import tracked_train
from vidseq.tracking import flatten, open_tracker, standard_tags, ui_hint
from vidseq.training.distributed import is_main_process
from vidseq.training.runs import holds_run
from vidseq.training.train import TrainResult


@dataclass
class TrainCommandResult:
    """A finished ``vidseq train``: the training result (None on ranks other than 0), the MLflow
    run id and where to look at it (None without tracking)."""

    result: TrainResult | None
    run_id: str | None = None
    hint: str | None = None


def train_command(
    cfg: VidseqConfig,
    *,
    resume: bool,
    overwrite: bool,
    track: bool,
    tracking_uri: str | None,
    experiment: str,
    register: str | None,
    progress: bool,
    echo: Callable[[str], None] = lambda line: None,
) -> TrainCommandResult:
    """Train on ``cfg.train.features`` into ``cfg.train.out``, logged to MLflow when ``track`` (or a
    ``tracking_uri``) asks for it. The tracking store is checked before any work; a run folder that
    already holds a run is refused unless ``resume`` or ``overwrite``; runs a killed earlier process
    left RUNNING are closed first (``echo`` says which)."""
    main_process = is_main_process()
    tracking = (track or tracking_uri is not None) and main_process
    tracker = open_tracker(uri=tracking_uri, experiment=experiment, enabled=tracking)
    if tracking and holds_run(cfg.train.out) and not (resume or overwrite):
        raise VidseqError(
            f"{cfg.train.out} already holds a training run: pass --resume to continue it or --overwrite to start again"
        )
    if stale := tracker.close_stale_runs():
        echo(
            f"marked KILLED {len(stale)} MLflow run(s) left RUNNING by a process that is gone: "
            + ", ".join(f"{r.name} {r.run_id} ({r.owner})" for r in stale)
        )
    params = flatten(cfg.model_dump(mode="json", include={"model", "train", "evaluate"}))
    with tracker.run("train", params=params, tags=standard_tags()) as run:
        result, outcome = tracked_train(
            cfg,
            features=cfg.train.features,
            out=cfg.train.out,
            run=run,
            resume=resume,
            overwrite=overwrite,
            progress=progress and main_process,
            register=register,
        )
        run.log_metrics(outcome.metrics)
    if not main_process:
        return TrainCommandResult(None)
    if not tracking:
        return TrainCommandResult(result)
    return TrainCommandResult(result, run.run_id, ui_hint(tracker.uri, tracker.experiment_id))
