"""Commands over pipeline and config files: ``run``, ``config show``, ``config check``.

Place in the data flow: the CLI's face of ``vidseq.pipeline`` and ``vidseq.config``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vidseq.cli._app import (
    CONFIG_OPTION,
    OVERRIDE_OPTION,
    app,
    config_app,
    console,
    friendly,
    load,
)
from vidseq.config import load_config, to_yaml
from vidseq.tracking import exit_on_interrupt  # cheap: no mlflow until a run starts


@app.command("run")
@friendly
@exit_on_interrupt  # SIGTERM / Ctrl-C: the MLflow runs end KILLED, one line, exit 143 / 130
def run_pipeline_command(
    pipeline: Path = typer.Argument(..., help="A pipeline file, e.g. pipelines/quickstart.yaml."),
    override: list[str] = typer.Option(
        [],
        "--override",
        "-o",
        help="section.key=value for every stage, stage.section.key=value for one (repeatable).",
    ),
    from_stage: str | None = typer.Option(None, "--from", help="Recompute this stage and the ones after it."),
    force: bool = typer.Option(False, "--force", help="Recompute every stage."),
    workdir: Path | None = typer.Option(None, help="Where stage outputs go (default: the pipeline's workdir)."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."
    ),
    experiment: str | None = typer.Option(None, help="MLflow experiment (default: the pipeline's)."),
    register: str | None = typer.Option(None, help="Register the trained model under this name."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Do not log to MLflow."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a stage pipeline (synth, extract, train, evaluate, predict), tracked in MLflow.

    Every stage's outputs go to WORKDIR/<stage>/<key>/, where the key is a digest of the
    stage's config and inputs: a stage whose key already finished is reused, so changing only
    a training option does not extract again. A failing stage stops the run with its error;
    running the same command again resumes at that stage. One MLflow parent run per pipeline
    run, a nested run per stage; the trained model is logged as a pyfunc model.
    """
    from vidseq.pipeline import run_pipeline
    from vidseq.tracking import ui_hint

    result = run_pipeline(
        pipeline,
        override,
        from_stage=from_stage,
        force=force,
        workdir=workdir,
        tracking=not no_tracking,
        tracking_uri=tracking_uri,
        experiment=experiment,
        register=register,
        progress=not quiet,
        echo=lambda line: console.print(line, highlight=False, markup=False),
    )
    reused = sum(1 for r in result.stages if r.status == "reused")
    console.print(
        f"\npipeline {result.pipeline.name}: {len(result.stages) - reused} stage(s) ran, "
        f"{reused} reused; outputs under {result.pipeline.workdir}",
        highlight=False,
    )
    headline = ("accuracy", "top5", "mean_class_accuracy", "macro_f1")
    for prefix, split in (("best_val_", "val"), ("test_", "test")):
        shown = [f"{k} {result.metrics[prefix + k]:.3f}" for k in headline if prefix + k in result.metrics]
        if shown:
            console.print(f"{split}: " + ", ".join(shown), highlight=False)
    if result.model_uri:
        console.print(
            f"model: {result.model_uri}  (mlflow.pyfunc.load_model(uri).predict([video paths]))",
            markup=False,
            highlight=False,
        )
    if result.tracking_uri:
        console.print(f"results: {ui_hint(result.tracking_uri, result.experiment_id)}", highlight=False, markup=False)


@config_app.command("show")
@friendly
def config_show(config: Path | None = CONFIG_OPTION, override: list[str] = OVERRIDE_OPTION) -> None:
    """Print the resolved configuration (defaults + file + overrides) as YAML."""
    typer.echo(to_yaml(load(config, override)), nl=False)


@config_app.command("check")
@friendly
def config_check(files: list[Path] = typer.Argument(..., help="Config files to validate.")) -> None:
    """Validate config files; exits 2 naming the first bad key."""
    for path in files:
        load_config(path)
        console.print(f"{path}: ok")
