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
- A negative (in either list) is a string, or ``{"text": ..., "kind": ...}`` naming the kind of
  edit that made it (e.g. ``swap_att``; docs/data-layouts.md lists the shapes generator's kinds).
  A string is a negative of unknown kind (`UNTYPED`); ``data.negative_kinds`` selects by kind.
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
NEGATIVE_KEYS = {"text", "kind"}
# The kind of a negative written as a plain string (what `data.negative_kinds` calls it).
UNTYPED = "untyped"


class ManifestError(ValueError):
    """A bad manifest record; the message names the file and line."""

    def __init__(self, path: Path | str, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class Negative:
    """A caption false for its image, and the kind of edit that made it (None: unknown)."""

    text: str
    kind: str | None = None

    @property
    def kind_name(self) -> str:
        """`kind`, or `UNTYPED` for a negative of unknown kind."""
        return self.kind or UNTYPED

    def to_json(self) -> str | dict:
        """A plain string when the kind is unknown (the older form), else `{"text", "kind"}`."""
        return self.text if self.kind is None else {"text": self.text, "kind": self.kind}


def as_negatives(items) -> list[Negative]:
    """`Negative`s from negatives and plain strings (strings are of unknown kind)."""
    return [x if isinstance(x, Negative) else Negative(x) for x in items]


@dataclass
class Record:
    """One image with its captions. `image` is an absolute path once read from a manifest."""

    id: str
    image: Path
    captions: list[str]
    long_caption: str | None = None
    meta: dict = field(default_factory=dict)
    # Captions false for the image (hard negatives); empty when the manifest has none.
    negative_captions: list[Negative] = field(default_factory=list)
    # Per caption (aligned with `captions`): minimal edits of it false for the image; [] when none.
    caption_negatives: list[list[Negative]] = field(default_factory=list)

    def __post_init__(self):
        # plain strings are accepted (here and wherever negatives are read) as negatives of unknown kind
        self.negative_captions = as_negatives(self.negative_captions)
        self.caption_negatives = [as_negatives(negs) for negs in self.caption_negatives]

    def to_json(self, root: Path) -> dict:
        image = self.image
        with contextlib.suppress(ValueError):
            image = image.relative_to(root)
        d = {"id": self.id, "image": image.as_posix(), "captions": self.captions}
        if self.long_caption is not None:
            d["long_caption"] = self.long_caption
        if self.negative_captions:
            d["negative_captions"] = [n.to_json() for n in as_negatives(self.negative_captions)]
        if any(self.caption_negatives):
            d["caption_negatives"] = [[n.to_json() for n in as_negatives(negs)] for negs in self.caption_negatives]
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


def parse_negative(entry, what: str) -> Negative:
    """A negative as a manifest writes it: a string, or `{"text": str, "kind": str | null}`."""
    if isinstance(entry, dict):
        unknown = set(entry) - NEGATIVE_KEYS
        if unknown:
            raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}; allowed: {sorted(NEGATIVE_KEYS)}")
        if "text" not in entry:
            raise ValueError(f"{what}: missing key 'text'")
        kind = entry.get("kind")
        if kind is not None and (not isinstance(kind, str) or not kind.strip()):
            raise ValueError(f"{what}: 'kind' must be a non-empty string or null")
        return Negative(_check_caption(entry["text"], f"{what}.text"), kind.strip() if kind else None)
    if not isinstance(entry, str):
        raise ValueError(f'{what} must be a string or {{"text", "kind"}}, got {type(entry).__name__}')
    return Negative(_check_caption(entry, what))


def parse_negatives(obj: dict, n_captions: int) -> tuple[list[Negative], list[list[Negative]]]:
    """`(negative_captions, caption_negatives)` of a decoded record (manifest line or shard JSON)."""
    negs = obj.get("negative_captions", [])
    if not isinstance(negs, list):
        raise ValueError("'negative_captions' must be a list of strings")
    negative_captions = [parse_negative(c, f"negative_captions[{i}]") for i, c in enumerate(negs)]
    per_caption = obj.get("caption_negatives", [])
    if not isinstance(per_caption, list) or (per_caption and len(per_caption) != n_captions):
        raise ValueError(
            f"'caption_negatives' must be a list with one list of strings per caption ({n_captions} captions)"
        )
    caption_negatives = []
    for i, negs_i in enumerate(per_caption):
        if not isinstance(negs_i, list):
            raise ValueError(f"'caption_negatives[{i}]' must be a list of strings")
        caption_negatives.append([parse_negative(c, f"caption_negatives[{i}][{j}]") for j, c in enumerate(negs_i)])
    return negative_captions, caption_negatives


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
    negative_captions, caption_negatives = parse_negatives(obj, len(captions))
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
