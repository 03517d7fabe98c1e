"""The on-disk format for image-text training data: a JSONL manifest beside image files.

Each line is one JSON object::

    {"id": "000017", "image": "images/000017.png",
     "captions": ["a red circle left of a blue square"],
     "long_caption": "The image shows two objects. ...",
     "meta": {...}}

- ``image``: path relative to the manifest's folder (absolute paths and ``..`` escapes are refused
  unless ``allow_outside_root``), required.
- ``captions``: one or more short captions (contrastive loss), required. A record with a single
  caption may give it as ``"caption": "..."`` instead (the name many image-text sets use, e.g.
  COCO / LAION metadata); giving both keys is an error.
- ``long_caption``: optional detailed caption (next-token loss).
- ``negative_captions``: optional list of captions that are false for the image (hard negatives,
  used when training with ``data.hard_negatives`` > 0).
- ``caption_negatives``: optional list aligned with ``captions``: for each caption, a list of
  minimal edits of it that are false for the image (e.g. attributes swapped: NegCLIP-style);
  ``[]`` where a caption has none. With ``data.hard_negatives`` > 0 the negatives of the caption
  drawn for a step come first, then ``negative_captions``.
- ``id``: optional; defaults to the line number. ``meta``: optional free-form data.

Readers name the file and line of every bad record; a lenient read skips and counts them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_KEYS = {"id", "image", "captions", "caption", "long_caption", "negative_captions", "caption_negatives", "meta"}


class ManifestError(ValueError):
    """A bad manifest record; the message names the file and line."""

    def __init__(self, path: Path | str, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class Record:
    """One image with its captions. `image` is an absolute path once read from a manifest."""

    id: str
    image: Path
    captions: list[str]
    long_caption: str | None = None
    meta: dict = field(default_factory=dict)
    # Captions false for the image (hard negatives); empty when the manifest has none.
    negative_captions: list[str] = field(default_factory=list)
    # Per caption (aligned with `captions`): minimal edits of it false for the image; [] when none.
    caption_negatives: list[list[str]] = field(default_factory=list)

    def to_json(self, root: Path) -> dict:
        image = self.image
        with contextlib.suppress(ValueError):
            image = image.relative_to(root)
        d = {"id": self.id, "image": image.as_posix(), "captions": self.captions}
        if self.long_caption is not None:
            d["long_caption"] = self.long_caption
        if self.negative_captions:
            d["negative_captions"] = self.negative_captions
        if any(self.caption_negatives):
            d["caption_negatives"] = self.caption_negatives
        if self.meta:
            d["meta"] = self.meta
        return d


@dataclass
class ReadReport:
    """What a lenient read skipped: `(line, reason)` per bad record."""

    path: str
    kept: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{self.path}: {self.kept} records kept, {len(self.skipped)} skipped"
        if self.skipped:
            s += "; first: " + "; ".join(f"line {ln}: {why}" for ln, why in self.skipped[:3])
        return s


def _check_caption(text, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} is empty")
    try:  # JSON escapes can spell lone surrogates ("\\udc80"), which no tokenizer can encode
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate at character {e.start})") from None
    return text.strip()


def parse_record(obj, root: Path, line: int, allow_outside_root: bool = False) -> Record:
    """Validate one decoded JSON line. Raises ValueError with a reason (without file/line)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - MANIFEST_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(MANIFEST_KEYS)}")
    if "image" not in obj:
        raise ValueError("missing key 'image'")
    if not isinstance(obj["image"], str) or not obj["image"]:
        raise ValueError("'image' must be a non-empty string path")
    if "\x00" in obj["image"]:
        raise ValueError("'image' path contains a NUL character")
    raw = Path(obj["image"])
    path = raw if raw.is_absolute() else root / raw
    if not allow_outside_root:
        if raw.is_absolute():
            raise ValueError(f"absolute image path {obj['image']!r} refused (paths are relative to the manifest)")
        resolved_root = root.resolve()
        if not path.resolve().is_relative_to(resolved_root):
            raise ValueError(f"image path {obj['image']!r} escapes the data root {resolved_root}")
    if "captions" in obj and "caption" in obj:
        raise ValueError("give 'captions' (a list) or 'caption' (one string), not both")
    if "captions" in obj:
        caps = obj["captions"]
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps:
            raise ValueError("'captions' must be a non-empty list of strings")
    elif "caption" in obj:
        caps = [obj["caption"]]
    else:
        raise ValueError("missing key 'captions' (a list of strings; or 'caption', one string)")
    captions = [_check_caption(c, "caption" if "caption" in obj else f"captions[{i}]") for i, c in enumerate(caps)]
    long_caption = obj.get("long_caption")
    if long_caption is not None:
        long_caption = _check_caption(long_caption, "long_caption")
    negs = obj.get("negative_captions", [])
    if not isinstance(negs, list):
        raise ValueError("'negative_captions' must be a list of strings")
    negative_captions = [_check_caption(c, f"negative_captions[{i}]") for i, c in enumerate(negs)]
    per_caption = obj.get("caption_negatives", [])
    if not isinstance(per_caption, list) or (per_caption and len(per_caption) != len(captions)):
        raise ValueError(
            f"'caption_negatives' must be a list with one list of strings per caption ({len(captions)} captions)"
        )
    caption_negatives = []
    for i, negs_i in enumerate(per_caption):
        if not isinstance(negs_i, list):
            raise ValueError(f"'caption_negatives[{i}]' must be a list of strings")
        caption_negatives.append([_check_caption(c, f"caption_negatives[{i}][{j}]") for j, c in enumerate(negs_i)])
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    rid = obj.get("id", str(line))
    return Record(str(rid), path, captions, long_caption, meta, negative_captions, caption_negatives)


def iter_manifest(
    path: Path | str, strict: bool = True, report: ReadReport | None = None, allow_outside_root: bool = False
) -> Iterator[Record]:
    """Yield records of a JSONL manifest. Strict mode raises `ManifestError` at the first bad line;
    otherwise bad lines are skipped and listed in `report`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = path.parent
    report = report if report is not None else ReadReport(str(path))
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                err = f"not valid UTF-8 ({e.reason} at byte {e.start})"
                if strict:
                    raise ManifestError(path, line_no, err) from None
                report.skipped.append((line_no, err))
                continue
            if not text.strip():
                continue
            try:
                rec = parse_record(json.loads(text), root, line_no, allow_outside_root)
            except RecursionError:
                err = "JSON nested too deeply"
                if strict:
                    raise ManifestError(path, line_no, err) from None
                report.skipped.append((line_no, err))
                continue
            except (ValueError, json.JSONDecodeError) as e:
                if strict:
                    raise ManifestError(path, line_no, str(e)) from None
                report.skipped.append((line_no, str(e)))
                continue
            report.kept += 1
            yield rec


def read_manifest(
    path: Path | str, strict: bool = True, allow_outside_root: bool = False
) -> tuple[list[Record], ReadReport]:
    report = ReadReport(str(path))
    records = list(iter_manifest(path, strict=strict, report=report, allow_outside_root=allow_outside_root))
    return records, report


def write_manifest(path: Path | str, records: Iterable[Record]) -> int:
    """Write records as JSONL (image paths relative to the manifest's folder), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(path.parent), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n
