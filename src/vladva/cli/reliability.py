"""`vladva check-manifest`: validate training manifests and every image they name before training.

Training skips bad lines and unreadable images and counts them (or stops at the first with
`data.strict=true`); this command finds all of them up front, naming file:line for manifest
problems and the image file for image problems. Exit code 0: all usable; 1: problems found.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


@dataclass
class ManifestCheck:
    """What `check_manifest` found in one manifest."""

    manifest: str
    records: int = 0  # well-formed records
    usable: int = 0  # well-formed records whose image loads
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason naming the file)
    duplicate_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_lines or self.bad_images or self.duplicate_ids)

    def summary(self) -> str:
        parts = [f"{len(self.bad_lines)} bad manifest line(s)", f"{len(self.bad_images)} unreadable image(s)"]
        if self.duplicate_ids:
            parts.append(f"{len(self.duplicate_ids)} duplicate id(s)")
        return f"{self.manifest}: {self.records} records, {self.usable} usable; " + ", ".join(parts)


def check_manifest(path: Path | str, allow_outside_root: bool = False, load_images: bool = True) -> ManifestCheck:
    """Read `path` leniently and open every image it names with `vladva.data.images.load_image`
    (the loader training uses: same size limits and conversions)."""
    from vladva.data.images import ImageLoadError, load_image
    from vladva.data.manifest import read_manifest

    records, report = read_manifest(path, strict=False, allow_outside_root=allow_outside_root)
    out = ManifestCheck(str(path), records=len(records), bad_lines=list(report.skipped))
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            out.duplicate_ids.append(rec.id)
        seen.add(rec.id)
        if load_images:
            try:
                load_image(rec.image)
            except ImageLoadError as e:
                out.bad_images.append((rec.id, str(e)))
                continue
        out.usable += 1
    return out


@friendly_errors
def check_manifest_command(
    manifests: list[Path] = typer.Argument(..., help="JSONL manifest(s) to check (docs/data-layouts.md)."),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root", help="Accept image paths outside the manifest's folder."
    ),
    skip_images: bool = typer.Option(False, "--skip-images", help="Check the manifest lines only, do not open images."),
    show: int = typer.Option(20, "--show", min=0, help="Problems listed per manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Validate manifests and their images; list each problem with its file and line. Exit 1 if any."""
    results = [check_manifest(m, allow_outside_root, load_images=not skip_images) for m in manifests]
    if as_json:
        typer.echo(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=1))
    else:
        for r in results:
            problems = [f"{r.manifest}:{line}: {why}" for line, why in r.bad_lines]
            problems += [f"record {rid}: {why}" for rid, why in r.bad_images]
            problems += [f"{r.manifest}: duplicate id {rid!r}" for rid in r.duplicate_ids]
            for p in problems[:show]:
                typer.echo(p, err=True)
            if len(problems) > show:
                typer.echo(f"... and {len(problems) - show} more", err=True)
            typer.echo(("ok    " if r.ok else "FAIL  ") + r.summary())
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check-manifest")(check_manifest_command)
