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


def text_items(source: Path | str) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped, in file order."""
    source = Path(source)
    if not source.is_file():
        raise UserError(f"{source}: file not found")
    texts = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError(f"{source}: no non-empty lines")
    return texts


def manifest_captions(manifest: Path | str) -> list[str]:
    """Every short caption of a JSONL manifest, record by record."""
    from vladva.data.manifest import read_manifest

    return [c for r in read_manifest(manifest)[0] for c in r.captions]


def prompt_pairs(path: Path | str) -> list[tuple[str, str]]:
    """Candidate summary prompts, one `IMAGE PROMPT<TAB>TEXT PROMPT` per line (blank lines skipped)
    -> `[(image_prompt, text_prompt), ...]`, each stripped."""
    path = Path(path)
    pairs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise UserError(f"{path}:{i}: expected IMAGE PROMPT<TAB>TEXT PROMPT")
        a, b = line.split("\t", 1)
        pairs.append((a.strip(), b.strip()))
    if not pairs:
        raise UserError(f"{path}: no candidate prompts")
    return pairs
