"""`vladva export`: a trained model -> a standalone `hf` or `sentence-transformers` folder with a model card."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.cli.options import deprecated_adapter_flag, resolve_weights_flag, weights_flag
from vladva.errors import UserError
from vladva.pretrained import resolve_base


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


@friendly_errors
def export_command(
    out_arg: Path | None = typer.Argument(None, metavar="OUT", help="New (or empty) folder to write."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The same as OUT."),
    model: str = typer.Option(
        "default", "--model", "-m", help="Base LVLM folder, 'default', or a merged VladVA folder."
    ),
    weights: Path | None = weights_flag(),
    adapter: Path | None = deprecated_adapter_flag(),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf or sentence-transformers."),
    results: Path | None = typer.Option(None, "--results", help="A `vladva eval` results.json for the card's table."),
    results_model: list[str] = typer.Option(
        [], "--results-model", help="Row of --results to show (repeatable); default: the rows that evaluate this model."
    ),
    name: str | None = typer.Option(None, "--name", help="Title of the model card (default: OUT's folder name)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights dtype: float32, bfloat16 or float16."),
) -> None:
    """Write a standalone folder (merged weights, processor, prompts, model card) that reloads to the
    same embeddings."""
    from vladva.export import ExportError, ExportRequest, export_model

    if (out_arg is None) == (out is None):
        raise UserError("give the output folder once: as OUT or as --out OUT")
    out = out or out_arg
    req = ExportRequest(
        base=resolve_base(model),
        out=out,
        weights=resolve_weights_flag(weights, adapter),
        format=fmt,
        results=results,
        results_models=tuple(results_model),
        name=name,
        dtype=dtype,
    )
    try:
        path = export_model(req, log=typer.echo)
    except ExportError as e:
        raise UserError(str(e)) from None
    typer.echo(
        f"wrote {fmt} export to {path}; load with VladVA.from_pretrained({str(path)!r})"
        + (" or sentence-transformers" if fmt == "sentence-transformers" else "")
        + f" (model card: {path / 'README.md'})"
    )
