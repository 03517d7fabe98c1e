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
    # Plain click help: rich markup would eat "[...]" in specs (vladva:BASE[:WEIGHTS]) and its
    # panels cut long words ("visual_genome_attribution.j…"); every sub-app sets the same.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # click's default wraps help at 80 even on wide terminals
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


def _first_sentence(text: str | None) -> str | None:
    """`"Embed images. Details..."` -> `"Embed images."`: the whole first sentence, never cut."""
    if not text:
        return None
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _whole_short_helps(typer_app: typer.Typer) -> None:
    """Give every command (and sub-app) its docstring's first sentence as the one-line help of
    `vladva --help`; click would otherwise cut it at 45 characters, mid-sentence."""
    for info in typer_app.registered_commands:
        if info.short_help is None:
            info.short_help = _first_sentence(info.help or (info.callback.__doc__ if info.callback else None))
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        helps = [h for h in (group.short_help, group.help, sub.info.help) if isinstance(h, str)]  # else unset
        group.short_help = _first_sentence(helps[0]) if helps else None
        _whole_short_helps(sub)


def _register_all() -> None:
    for area in _AREAS:
        name = f"vladva.cli.{area}"
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(app)
    _whole_short_helps(app)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True)) -> None:
    from vladva.threads import export_threads_env

    export_threads_env()  # before any command imports torch: threads from the cores and the load
    if version:
        from vladva import __version__

        typer.echo(__version__)
        raise typer.Exit()


_register_all()


def main() -> None:
    app()
