"""The `vladva` command line: one app, subcommands registered by each area's module.

Each module in `vladva.cli` exposes `register(app: typer.Typer)` and keeps heavy imports
(torch, transformers) inside its commands so `vladva --help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="vladva",
    help="Turn a generative vision-language model into a discriminative image-text embedder (VladVA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order is the order in `vladva --help`.
_AREAS = (
    "demo",
    "data",
    "base",
    "baseline",
    "train",
    "embed",
    "export",
    "evaluate",
    "ablate",
    "serving",
    "reliability",
    "scale",
)


def _register_all() -> None:
    for area in _AREAS:
        name = f"vladva.cli.{area}"
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(app)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True)) -> None:
    if version:
        from vladva import __version__

        typer.echo(__version__)
        raise typer.Exit()


_register_all()


def main() -> None:
    app()
