"""`vladva data shard`: convert a JSONL manifest and its images into webdataset tar shards.

Registered from the `scale` area: it adds `shard` to the existing `data` command group (or, if
no `data` group is installed, a top-level `vladva shard`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


@friendly_errors
def shard_command(
    manifest: Path = typer.Option(
        ..., "--manifest", help="JSONL manifest (docs/data-layouts.md), e.g. DATA/train.jsonl."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and shards.json (created if missing)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Samples per shard (the last shard may hold fewer)."),
    prefix: str = typer.Option("train", "--prefix", help="Shard file names: PREFIX-000000.tar, ..."),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Stop at the first bad manifest line or unreadable image instead of skipping and counting it.",
    ),
) -> None:
    """Write webdataset shards (KEY.png/.jpg + KEY.json per sample) for streaming, multi-process training:
    train with data.train=OUT."""
    import logging

    from vladva.data.shards import write_shards

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = write_shards(manifest, out, shard_size, prefix, strict)
    typer.echo(
        f"wrote {report.samples} samples into {len(report.shards)} shards in {out} "
        f"({shard_size} per shard); skipped {len(report.skipped)}. Index: {out / 'shards.json'}"
    )


def register(app: typer.Typer) -> None:
    for group in app.registered_groups:
        if group.name == "data" and group.typer_instance is not None:
            group.typer_instance.command("shard")(shard_command)
            return
    app.command("shard")(shard_command)
