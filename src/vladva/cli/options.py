"""Options several commands share: the trained weights (`--weights`, once `--adapter`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from vladva.errors import UserError

T = TypeVar("T")

WEIGHTS_HELP = "Trained VladVA weights: a run folder (its latest checkpoint) or a checkpoint folder."


def weights_flag(help: str = WEIGHTS_HELP):
    """`--weights/-w`: the soft prompts + LoRA a run trained (a run or checkpoint folder)."""
    return typer.Option(None, "--weights", "-w", help=help)


def deprecated_adapter_flag():
    """`--adapter/-a`, the first name of `--weights`: still accepted so old commands run, not in --help."""
    return typer.Option(None, "--adapter", "-a", hidden=True, help="Deprecated name of --weights.")


def resolve_weights_flag(weights: Path | None, adapter: Path | None) -> Path | None:
    """The folder given as `--weights`, or as the deprecated `--adapter` (with a note on stderr)."""
    if adapter is None:
        return weights
    if weights is not None:
        raise UserError("give the trained weights once: --weights (--adapter is its old name)")
    typer.echo("note: --adapter is deprecated; use --weights (-w)", err=True)
    return adapter


def for_option(option: str, read: Callable[[Path], T], source: Path) -> T:
    """`read(source)`, with a `UserError` it raises prefixed by the option that named `source`
    (library errors name the file; the command says which of its options it came from)."""
    try:
        return read(source)
    except UserError as e:
        raise UserError(f"{option} {e}") from None
