"""What the benchmark readers share (see docs/data-layouts.md for the layouts themselves).

Each benchmark's own reader lives in its module in `vladva.eval.benchmarks`; here are the pieces
they have in common: image references, the format error, JSON and field checks, and the one
reader of SugarCrepe-style folders (one `<category>.json` per category) that SugarCrepe and
SugarCrepe++ both use. Readers check every file they need up front and name the file, entry and
key at fault, so a half-downloaded benchmark fails before any model runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vladva.data.images import IMAGE_SUFFIXES

if TYPE_CHECKING:  # PIL is imported when an image is loaded, so reading the registry stays light
    from PIL import Image


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not match its layout; the message names file, entry and key."""


@dataclass(frozen=True)
class ImageRef:
    """An image file, optionally cropped to `box` = `(x, y, width, height)` in pixels."""

    path: Path
    box: tuple[float, float, float, float] | None = None

    def load(self) -> Image.Image:
        from vladva.data.images import load_image

        image = load_image(self.path)
        box = self.pixel_box(image.width, image.height)
        return image if box is None else image.crop(box)

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """`(left, top, right, bottom)` of the crop in a `width x height` image, clamped to it with
        at least one pixel kept (VG boxes sometimes overhang the border); None for no crop or a
        box that covers the whole image (the same pixels as the image itself)."""
        if self.box is None:
            return None
        x, y, w, h = self.box
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(width, max(left + 1, int(x + w))), min(height, max(top + 1, int(y + h)))
        return None if (left, top, right, bottom) == (0, 0, width, height) else (left, top, right, bottom)


@dataclass
class PairSet:
    """Two-way choice items (SugarCrepe, ARO): image, positive caption, hard negative caption;
    `groups` labels each item for macro averages (ARO relation or attribute pair); empty for SugarCrepe."""

    name: str
    images: list[ImageRef]
    positives: list[str]
    negatives: list[str]
    groups: list[str] = field(default_factory=list)


def read_json(path: Path):
    """The parsed JSON file at `path`; a missing file or bad JSON is a `BenchmarkFormatError`."""
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{path}: not valid JSON ({e})") from None


def required_text(entry: dict, key: str, where: str) -> str:
    """`entry[key]`, which must be a non-empty string; `where` names the entry in errors."""
    if key not in entry:
        raise BenchmarkFormatError(f"{where}: missing key '{key}'")
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkFormatError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def existing_image(path: Path, where: str) -> Path:
    """`path` if it is a file, else a `BenchmarkFormatError` naming the entry."""
    if not path.is_file():
        raise BenchmarkFormatError(f"{where}: image not found: {path}")
    return path


def find_image(folder: Path, stem: str, where: str) -> Path:
    """`folder/stem` with the first of `IMAGE_SUFFIXES` that exists."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise BenchmarkFormatError(f"{where}: image not found: {folder / stem}.png (or .jpg)")


def json_entries(data, path: Path) -> list[tuple[str, dict]]:
    """SugarCrepe files are `{"0": {...}, ...}`; some copies are lists. Both -> (key, entry)."""
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(str(i), e) for i, e in enumerate(data)]
    else:
        raise BenchmarkFormatError(f"{path}: top level must be an object or a list of entries")
    for key, entry in items:
        if not isinstance(entry, dict):
            raise BenchmarkFormatError(f"{path}: entry {key} must be an object, got {type(entry).__name__}")
    return items


@dataclass
class CategoryFile:
    """One `<category>.json` of a SugarCrepe-style folder: `texts[key][i]` belongs to `images[i]`."""

    name: str
    images: list[ImageRef]
    texts: dict[str, list[str]]


def read_category_files(
    folder: Path, image_root: Path | None, categories: Sequence[str], keys: Sequence[str], title: str
) -> list[CategoryFile]:
    """Whichever `folder/<category>.json` exist, in `categories` order. Each entry has a
    `filename` (under `image_root`, default `folder/images`) and a non-empty string per `keys`;
    `title` names the benchmark when no file is found."""
    folder = Path(folder)
    root = Path(image_root) if image_root is not None else folder / "images"
    files = []
    for category in categories:
        path = folder / f"{category}.json"
        if not path.is_file():
            continue
        images, texts = [], {k: [] for k in keys}
        for key, entry in json_entries(read_json(path), path):
            where = f"{path}: entry {key}"
            images.append(ImageRef(existing_image(root / required_text(entry, "filename", where), where)))
            for k in keys:
                texts[k].append(required_text(entry, k, where))
        files.append(CategoryFile(category, images, texts))
    if not files:
        raise BenchmarkFormatError(
            f"{folder}: no {title} files (expected some of {', '.join(c + '.json' for c in categories)})"
        )
    return files
