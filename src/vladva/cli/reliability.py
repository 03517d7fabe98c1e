"""`vladva check-manifest`: validate training manifests and every image they name before training
(`vladva.data.check.check_manifest`). Exit code 0: all usable; 1: problems found."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError


@friendly_errors
def check_manifest_command(
    manifests: list[Path] = typer.Argument(..., help="JSONL manifest(s) to check (docs/data-layouts.md)."),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root", help="Accept image paths outside the manifest's folder."
    ),
    skip_images: bool = typer.Option(False, "--skip-images", help="Check the manifest lines only, do not open images."),
    show: int = typer.Option(20, "--show", min=0, help="Problems listed per manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Also check the captions against this model's tokenizer (a model spec, e.g. default or "
        "vladva:BASE_DIR): warn when it cannot read their words.",
    ),
) -> None:
    """Validate manifests and their images; list each problem with its file and line. Exit 1 if any.
    With --model, report the share of caption words the model's tokenizer maps to unknown."""
    from vladva.data.check import check_manifest

    tokenizer = None
    if model is not None:
        from vladva.model_kinds import ModelSpecError, load_tokenizer

        try:
            tokenizer = load_tokenizer(model)
        except ModelSpecError as e:
            raise UserError(str(e)) from None
        if tokenizer is None:
            typer.echo(f"note: model {model!r} has no tokenizer to check the captions against", err=True)
    results = [check_manifest(m, allow_outside_root, not skip_images, tokenizer) for m in manifests]
    if as_json:
        vocabulary = ("unknown_token_rate", "unknown_words", "vocabulary_warning")  # only with --model
        rows = [
            {k: v for k, v in asdict(r).items() if model is not None or k not in vocabulary} | {"ok": r.ok}
            for r in results
        ]
        typer.echo(json.dumps(rows, indent=1))
    else:
        for r in results:
            problems = r.problems()
            for p in problems[:show]:
                typer.echo(p, err=True)
            if len(problems) > show:
                typer.echo(f"... and {len(problems) - show} more", err=True)
            if r.vocabulary_warning:
                typer.echo(r.vocabulary_warning, err=True)
            typer.echo(("ok    " if r.ok else "FAIL  ") + r.summary())
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check-manifest")(check_manifest_command)
