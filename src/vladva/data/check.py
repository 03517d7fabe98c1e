"""Checking a training manifest before training: every bad line, unreadable image and duplicate id.

Training skips bad lines and unreadable images and counts them (or stops at the first with
`data.strict=true`); `check_manifest` finds all of them up front, naming file:line for manifest
problems and the image file for image problems (`vladva check-manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ManifestCheck:
    """What `check_manifest` found in one manifest."""

    manifest: str
    records: int = 0  # well-formed records
    usable: int = 0  # well-formed records whose image loads
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason naming the file)
    duplicate_ids: list[str] = field(default_factory=list)
    # Against a model's tokenizer (`tokenizer=`): the share of caption word pieces it cannot read,
    # the words behind them, and the warning printed when the share is above the threshold.
    unknown_token_rate: float | None = None
    unknown_words: list[str] = field(default_factory=list)
    vocabulary_warning: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.bad_lines or self.bad_images or self.duplicate_ids)

    def problems(self) -> list[str]:
        """One line per problem: `manifest:line: reason`, `record ID: reason`, duplicate ids."""
        lines = [f"{self.manifest}:{line}: {why}" for line, why in self.bad_lines]
        lines += [f"record {rid}: {why}" for rid, why in self.bad_images]
        lines += [f"{self.manifest}: duplicate id {rid!r}" for rid in self.duplicate_ids]
        return lines

    def summary(self) -> str:
        parts = [f"{len(self.bad_lines)} bad manifest line(s)", f"{len(self.bad_images)} unreadable image(s)"]
        if self.duplicate_ids:
            parts.append(f"{len(self.duplicate_ids)} duplicate id(s)")
        if self.unknown_token_rate is not None:
            parts.append(f"{100 * self.unknown_token_rate:.1f}% of caption word pieces unknown to the model")
        return f"{self.manifest}: {self.records} records, {self.usable} usable; " + ", ".join(parts)


def check_manifest(
    path: Path | str, allow_outside_root: bool = False, load_images: bool = True, tokenizer=None
) -> ManifestCheck:
    """Read `path` leniently and open every image it names with `vladva.data.images.load_image`
    (the loader training uses: same size limits and conversions). With a model's `tokenizer`, also
    measure how many word pieces of the captions and long captions it cannot read
    (`vladva.data.vocab.warn_unknown_tokens`; the warning lands in `vocabulary_warning`)."""
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
    if tokenizer is not None:
        from vladva.data.vocab import warn_unknown_tokens

        texts = [c for r in records for c in r.captions] + [r.long_caption for r in records if r.long_caption]
        out.unknown_token_rate, words = warn_unknown_tokens(
            tokenizer, texts, f"the captions of {path}", warn=lambda m: setattr(out, "vocabulary_warning", m)
        )
        out.unknown_words = words[:50]
    return out
