"""Lists of items to embed or score, read from what a user points at: a folder of images, a JSONL
manifest, or a text file of one sentence (or one prompt pair) per line.

Errors are `UserError`s that name the file at fault; a command adds which of its options gave it.
"""

from __future__ import annotations

from pathlib import Path

from vladva.data.images import IMAGE_SUFFIXES, find_images
from vladva.errors import UserError


def image_items(source: Path | str) -> tuple[list[Path], list[str]]:
    """The images of a folder (recursive, sorted, each named by its path relative to the folder)
    or of a JSONL manifest (each named by its record id). Returns `(paths, names)`, aligned."""
    source = Path(source)
    if source.is_dir():
        paths = find_images(source)
        if not paths:
            raise UserError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return paths, [p.relative_to(source).as_posix() for p in paths]
    if source.suffix == ".jsonl":
        from vladva.data.manifest import read_manifest

        records, _ = read_manifest(source)
        return [r.image for r in records], [r.id for r in records]
    raise UserError(f"{source}: give a folder of images or a .jsonl manifest")


def read_text_lines(source: Path | str) -> list[tuple[int, str]]:
    """`(line number, stripped text)` of every non-blank line of a UTF-8 text file, in file order
    (lines end at `\n`, counted from 1; a leading BOM is dropped). A line that is not valid UTF-8
    is a `UserError` naming `file:line` and the column of the first bad byte."""
    source = Path(source)
    if not source.is_file():
        raise UserError(f"{source}: file not found")
    out = []
    for number, raw in enumerate(source.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"{source}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "save the file as UTF-8"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        if line.strip():
            out.append((number, line.strip()))
    return out


def text_items(source: Path | str) -> list[str]:
    """The lines of a UTF-8 text file, stripped, in file order: row i of an embedding is line i + 1.

    Blank lines at the end of the file are ignored; a blank line before the last text is a
    `UserError` naming it, since skipping it would shift every later row off its line."""
    source = Path(source)
    lines = read_text_lines(source)
    if not lines:
        raise UserError(f"{source}: no non-empty lines")
    filled = {number for number, _ in lines}
    blank = [n for n in range(1, lines[-1][0] + 1) if n not in filled]
    if blank:
        others = ", ".join(map(str, blank[1:6])) + (f" and {len(blank) - 6} more" if len(blank) > 6 else "")
        raise UserError(
            f"{source}:{blank[0]}: blank line"
            + (f" (also lines {others})" if others else "")
            + "; each line is one text and one output row, so remove blank lines (or put a text on them)"
        )
    return [text for _, text in lines]


def manifest_captions(manifest: Path | str) -> list[str]:
    """Every short caption of a JSONL manifest, record by record."""
    from vladva.data.manifest import read_manifest

    return [c for r in read_manifest(manifest)[0] for c in r.captions]


def prompt_pairs(path: Path | str) -> list[tuple[str, str]]:
    """Candidate summary prompts, one `IMAGE PROMPT<TAB>TEXT PROMPT` per line (blank lines skipped)
    -> `[(image_prompt, text_prompt), ...]`, each stripped."""
    path = Path(path)
    pairs = []
    for i, line in read_text_lines(path):
        if "\t" not in line:
            raise UserError(f"{path}:{i}: expected IMAGE PROMPT<TAB>TEXT PROMPT")
        a, b = line.split("\t", 1)
        pairs.append((a.strip(), b.strip()))
    if not pairs:
        raise UserError(f"{path}: no candidate prompts")
    return pairs
