"""``vidseq export``: a trained model as files that run outside vidseq's PyTorch classes.

Place in the data flow: the CLI's face of ``vidseq.predict.export`` (the writing side; an
exported folder runs with ``vidseq predict --model DIR``, ``vidseq.predict.exported``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vidseq.cli._app import app, console, friendly


@app.command("export")
@friendly
def export_command(
    model: str = typer.Argument(
        ..., help="best.pt of `vidseq train`, a model folder, or an MLflow model URI (models:/NAME/1, runs:/ID/model)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write: new, empty, or a previous export (replaced)."),
    format: str = typer.Option("onnx", "--format", help="onnx (onnxruntime; the onnx extra) or torchscript."),  # noqa: A002
    opset: int = typer.Option(18, min=13, help="--format onnx: the ONNX opset."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI for models:/ and runs:/ URIs."),
) -> None:
    """Export the backbone and the temporal head (with the streams' fusion) plus manifest.json.

    The backbone takes normalised frames (N, 3, S, S) and gives features (N, D); the head takes
    features (B, T, D) with lengths (B,) and gives class probabilities (B, C); batch and time are
    dynamic. manifest.json records the inputs and outputs, the preprocessing (input size, fit,
    mean/std), the sampling, the streams, the labels and each file's sha256. The motion stream
    is OpenCV optical flow, not a network: it is not exported (the manifest gives its settings).
    Each exported part is checked against PyTorch before the folder is written.
    `vidseq predict --model DIR` runs the folder.
    """
    from vidseq.cli.model import _local_model
    from vidseq.predict.export import export_model

    result = export_model(_local_model(model, tracking_uri), out, format=format, opset=opset)
    manifest = result.manifest
    streams = ", ".join(s["name"] for s in manifest["streams"])
    console.print(
        f"wrote {result.out}: {', '.join(result.files)} and manifest.json "
        f"({manifest['model']['name']} over {streams}; {len(manifest['labels'])} labels)",
        highlight=False,
        markup=False,
    )
    checks = manifest["checks"]["max_abs_difference_vs_pytorch"]
    console.print(
        "max difference vs PyTorch: " + ", ".join(f"{part} {value:.2g}" for part, value in checks.items()),
        highlight=False,
    )
    console.print(f"run it: vidseq predict VIDEOS --model {result.out}", highlight=False, markup=False)
