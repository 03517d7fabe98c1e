"""Readers for the public benchmarks' on-disk layouts (see docs/data-layouts.md).

Each reader turns one layout into a small dataclass of image references and texts; scoring
lives in `vladva.eval.suites`. Readers check every file they need up front and name the file,
entry and key at fault, so a half-downloaded benchmark fails before any model runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vladva.data.images import load_image

SUGARCREPE_CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
SUGARCREPE_PP_CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
ARO_FILES = {"relation": "visual_genome_relation.json", "attribution": "visual_genome_attribution.json"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not match its layout; the message names file, entry and key."""


@dataclass(frozen=True)
class ImageRef:
    """An image file, optionally cropped to `box` = `(x, y, width, height)` in pixels."""

    path: Path
    box: tuple[float, float, float, float] | None = None

    def load(self) -> Image.Image:
        image = load_image(self.path)
        if self.box is None:
            return image
        x, y, w, h = self.box
        # Clamp to the image and keep at least one pixel: VG boxes sometimes overhang the border.
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(image.width, max(left + 1, int(x + w))), min(image.height, max(top + 1, int(y + h)))
        return image.crop((left, top, right, bottom))

    def fingerprint(self) -> str:
        """Identity for the embedding cache: path, size, modification time and crop box."""
        st = self.path.stat()
        return f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.box}"


@dataclass
class RetrievalSet:
    """Karpathy-split retrieval data: `caption_image[j]` is the index of caption j's image.
    `caption_true_for[j]`, when the data ships caption_truth.json with image lists, holds every
    gallery image index caption j is true for; `caption_true_count[j]` the count it records."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    caption_image: list[int]
    caption_true_for: list[list[int]] | None = None
    caption_true_count: list[int] | None = None


@dataclass
class PairSet:
    """SugarCrepe-style items: image, positive caption, hard negative caption; `groups` labels
    each item for macro averages (ARO relation or attribute pair); empty for SugarCrepe."""

    name: str
    images: list[ImageRef]
    positives: list[str]
    negatives: list[str]
    groups: list[str] = field(default_factory=list)


@dataclass
class ParaphraseSet:
    """SugarCrepe++ items: image, two positive paraphrases, one hard negative."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    captions2: list[str]
    negatives: list[str]


@dataclass
class WinogroundSet:
    """Winoground: caption_0[i] describes images_0[i], caption_1[i] describes images_1[i]."""

    images_0: list[ImageRef]
    images_1: list[ImageRef]
    captions_0: list[str]
    captions_1: list[str]
    tags: list[str]


@dataclass
class ZeroShotSet:
    """Zero-shot classification: `labels[i]` indexes `classnames`; templates contain `{c}`."""

    name: str
    classnames: list[str]
    templates: list[str]
    images: list[ImageRef]
    labels: list[int]


def _read_json(path: Path):
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{path}: not valid JSON ({e})") from None


def _text(entry: dict, key: str, where: str) -> str:
    if key not in entry:
        raise BenchmarkFormatError(f"{where}: missing key '{key}'")
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkFormatError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise BenchmarkFormatError(f"{where}: image not found: {path}")
    return path


def _entries(data, path: Path) -> list[tuple[str, dict]]:
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


# ----------------------------------------------------------------------------- retrieval


def load_karpathy(json_path: Path, image_root: Path | None = None, split: str = "test") -> RetrievalSet:
    """COCO / Flickr30k Karpathy JSON. An image is `image_root/filepath/filename` (falling back
    to `image_root/filename`, as Flickr30k has no filepath); `image_root` defaults to the JSON's
    folder. Only images of `split` are kept. Reads `caption_truth.json` beside the JSON if there."""
    json_path = Path(json_path)
    data = _read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BenchmarkFormatError(f"{json_path}: expected an object with an 'images' list (Karpathy split format)")
    root = Path(image_root) if image_root is not None else json_path.parent
    images: list[ImageRef] = []
    captions: list[str] = []
    caption_image: list[int] = []
    sentids: list[str] = []
    imgid_to_index: dict[str, int] = {}
    for n, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{n}]"
        if not isinstance(entry, dict):
            raise BenchmarkFormatError(f"{where} must be an object")
        if entry.get("split", split) != split:
            continue
        filename = _text(entry, "filename", where)
        candidates = [root / entry["filepath"] / filename] if entry.get("filepath") else []
        candidates.append(root / filename)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise BenchmarkFormatError(
                f"{where}: image not found (looked for {', '.join(map(str, candidates))}); "
                "pass the image folder with --images"
            )
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise BenchmarkFormatError(f"{where}: 'sentences' must be a non-empty list")
        imgid_to_index[str(entry.get("imgid", n))] = len(images)
        for k, sent in enumerate(sentences):
            if not isinstance(sent, dict):
                raise BenchmarkFormatError(f"{where}.sentences[{k}] must be an object")
            captions.append(_text(sent, "raw", f"{where}.sentences[{k}]"))
            caption_image.append(len(images))
            sentids.append(str(sent.get("sentid", len(sentids))))
        images.append(ImageRef(found))
    if not images:
        raise BenchmarkFormatError(f"{json_path}: no images with split '{split}'")
    out = RetrievalSet(str(data.get("dataset", json_path.stem)), images, captions, caption_image)
    truth_path = json_path.parent / "caption_truth.json"
    if truth_path.is_file():
        _attach_caption_truth(out, truth_path, sentids, imgid_to_index)
    return out


def _attach_caption_truth(rs: RetrievalSet, path: Path, sentids: list[str], imgid_to_index: dict[str, int]) -> None:
    """caption_truth.json maps sentid -> either the list of imgids the caption is true for, or
    the number of gallery images it is true for (optionally under a top-level "captions" key)."""
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("captions"), (dict, list)):
        data = data["captions"]
    if isinstance(data, list):
        data = {str(i): v for i, v in enumerate(data)}
    if not isinstance(data, dict):
        raise BenchmarkFormatError(f"{path}: expected an object mapping sentid to image ids or a count")
    true_for: list[list[int]] = []
    counts: list[int] = []
    for sid in sentids:
        value = data.get(sid)
        if isinstance(value, dict):  # {"count": n, "images": [...]} style
            value = value.get("images", value.get("true_for", value.get("count")))
        if isinstance(value, list):
            idx = [imgid_to_index[str(v)] for v in value if str(v) in imgid_to_index]
            true_for.append(idx)
            counts.append(len(idx))
        elif isinstance(value, int) and not isinstance(value, bool):
            counts.append(value)
        elif value is not None:
            raise BenchmarkFormatError(f"{path}: sentid {sid}: expected a list of image ids or a count, got {value!r}")
    if len(true_for) == len(sentids):
        rs.caption_true_for = true_for
    if len(counts) == len(sentids):
        rs.caption_true_count = counts


# ----------------------------------------------------------------------------- compositionality


def load_sugarcrepe(folder: Path, image_root: Path | None = None) -> list[PairSet]:
    """SugarCrepe: one `<category>.json` per category, `{"0": {"filename", "caption",
    "negative_caption"}, ...}`; images under `image_root` (default `folder/images`)."""
    folder = Path(folder)
    root = Path(image_root) if image_root is not None else folder / "images"
    sets = []
    for category in SUGARCREPE_CATEGORIES:
        path = folder / f"{category}.json"
        if not path.is_file():
            continue
        images, pos, neg = [], [], []
        for key, entry in _entries(_read_json(path), path):
            where = f"{path}: entry {key}"
            images.append(ImageRef(_existing(root / _text(entry, "filename", where), where)))
            pos.append(_text(entry, "caption", where))
            neg.append(_text(entry, "negative_caption", where))
        sets.append(PairSet(category, images, pos, neg))
    if not sets:
        raise BenchmarkFormatError(
            f"{folder}: no SugarCrepe files (expected some of {', '.join(c + '.json' for c in SUGARCREPE_CATEGORIES)})"
        )
    return sets


def load_sugarcrepe_pp(folder: Path, image_root: Path | None = None) -> list[ParaphraseSet]:
    """SugarCrepe++: `<category>.json` entries with `filename, caption, caption2, negative_caption`."""
    folder = Path(folder)
    root = Path(image_root) if image_root is not None else folder / "images"
    sets = []
    for category in SUGARCREPE_PP_CATEGORIES:
        path = folder / f"{category}.json"
        if not path.is_file():
            continue
        images, c1, c2, neg = [], [], [], []
        for key, entry in _entries(_read_json(path), path):
            where = f"{path}: entry {key}"
            images.append(ImageRef(_existing(root / _text(entry, "filename", where), where)))
            c1.append(_text(entry, "caption", where))
            c2.append(_text(entry, "caption2", where))
            neg.append(_text(entry, "negative_caption", where))
        sets.append(ParaphraseSet(category, images, c1, c2, neg))
    if not sets:
        raise BenchmarkFormatError(
            f"{folder}: no SugarCrepe++ files "
            f"(expected some of {', '.join(c + '.json' for c in SUGARCREPE_PP_CATEGORIES)})"
        )
    return sets


def _find_image(folder: Path, stem: str, where: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise BenchmarkFormatError(f"{where}: image not found: {folder / stem}.png (or .jpg)")


def load_winoground(path: Path) -> WinogroundSet:
    """Winoground as `examples.jsonl` + `images/<image_k>.png`, or a local Hugging Face dataset
    folder written by `datasets.save_to_disk` (needs the optional `datasets` package; its images
    are exported once to PNGs in `path/_vladva_images`)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        path = path.parent
    jsonl = path / "examples.jsonl"
    if not jsonl.is_file():
        if (
            (path / "dataset_info.json").is_file()
            or (path / "state.json").is_file()
            or (path / "dataset_dict.json").is_file()
        ):
            return _load_winoground_hf(path)
        raise BenchmarkFormatError(f"{path}: no examples.jsonl (nor a saved Hugging Face dataset)")
    out = WinogroundSet([], [], [], [], [])
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{jsonl}:{n}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkFormatError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(entry, dict):
            raise BenchmarkFormatError(f"{where}: each line must be a JSON object")
        out.images_0.append(ImageRef(_find_image(path / "images", _text(entry, "image_0", where), where)))
        out.images_1.append(ImageRef(_find_image(path / "images", _text(entry, "image_1", where), where)))
        out.captions_0.append(_text(entry, "caption_0", where))
        out.captions_1.append(_text(entry, "caption_1", where))
        out.tags.append(str(entry.get("collapsed_tag") or entry.get("tag") or ""))
    if not out.captions_0:
        raise BenchmarkFormatError(f"{jsonl}: no examples")
    return out


def _load_winoground_hf(path: Path) -> WinogroundSet:
    try:
        import datasets
    except ImportError:
        raise BenchmarkFormatError(
            f"{path}: a saved Hugging Face dataset needs the optional 'datasets' package "
            "(pip install datasets), or convert it to examples.jsonl + images/"
        ) from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["test"] if "test" in ds else next(iter(ds.values()))
    export = path / "_vladva_images"
    export.mkdir(exist_ok=True)
    out = WinogroundSet([], [], [], [], [])
    for n, row in enumerate(ds):
        refs = []
        for k in (0, 1):
            target = export / f"{row.get('id', n)}_img_{k}.png"
            if not target.is_file():
                row[f"image_{k}"].convert("RGB").save(target)
            refs.append(ImageRef(target))
        out.images_0.append(refs[0])
        out.images_1.append(refs[1])
        out.captions_0.append(row["caption_0"])
        out.captions_1.append(row["caption_1"])
        out.tags.append(str(row.get("collapsed_tag") or row.get("tag") or ""))
    return out


def load_aro(folder: Path, image_root: Path | None = None) -> list[PairSet]:
    """ARO VG-Relation / VG-Attribution: lists of entries with `image_path` (relative to
    `image_root`, default `folder/images`), `bbox_x/y/w/h`, `true_caption`, `false_caption` and
    `relation_name` or `attributes`. Items are grouped by relation / attribute pair for the
    macro average."""
    folder = Path(folder)
    root = Path(image_root) if image_root is not None else folder / "images"
    sets = []
    for name, filename in ARO_FILES.items():
        path = folder / filename
        if not path.is_file():
            continue
        data = _read_json(path)
        if not isinstance(data, list):
            raise BenchmarkFormatError(f"{path}: top level must be a list of entries")
        ps = PairSet(name, [], [], [], [])
        for n, entry in enumerate(data):
            where = f"{path}: entry {n}"
            if not isinstance(entry, dict):
                raise BenchmarkFormatError(f"{where} must be an object")
            try:
                box = tuple(float(entry[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
            except KeyError as e:
                raise BenchmarkFormatError(f"{where}: missing key '{e.args[0]}'") from None
            except (TypeError, ValueError):
                raise BenchmarkFormatError(f"{where}: bbox_x/y/w/h must be numbers") from None
            ps.images.append(ImageRef(_existing(root / _text(entry, "image_path", where), where), box))
            ps.positives.append(_text(entry, "true_caption", where))
            ps.negatives.append(_text(entry, "false_caption", where))
            if name == "relation":
                ps.groups.append(_text(entry, "relation_name", where))
            else:
                attrs = entry.get("attributes")
                if not isinstance(attrs, list) or not attrs:
                    raise BenchmarkFormatError(f"{where}: 'attributes' must be a non-empty list")
                ps.groups.append("_".join(map(str, attrs)))
        sets.append(ps)
    if not sets:
        raise BenchmarkFormatError(f"{folder}: no ARO files (expected {' and/or '.join(ARO_FILES.values())})")
    return sets


# ----------------------------------------------------------------------------- zero-shot


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise BenchmarkFormatError(f"{path}: empty")
    return lines


def zeroshot_task_dirs(folder: Path) -> list[Path]:
    """`folder` itself if it holds classnames.txt, else its subfolders that do."""
    folder = Path(folder)
    if (folder / "classnames.txt").is_file():
        return [folder]
    tasks = sorted(p for p in folder.iterdir() if (p / "classnames.txt").is_file()) if folder.is_dir() else []
    if not tasks:
        raise BenchmarkFormatError(
            f"{folder}: no zero-shot task (a folder with classnames.txt, templates.txt and test/<class>/)"
        )
    return tasks


def load_zeroshot(task_dir: Path, split: str = "test") -> ZeroShotSet:
    """Class folders: `classnames.txt` (label = line index), `templates.txt` (with `{c}`),
    `<split>/<classname>/*.png`. A folder may also be named by the label index or with `_`
    for spaces (ImageNet-style copies)."""
    task_dir = Path(task_dir)
    classnames = _lines(task_dir / "classnames.txt")
    templates = _lines(task_dir / "templates.txt")
    for n, t in enumerate(templates, start=1):
        if "{c}" not in t:
            raise BenchmarkFormatError(f"{task_dir / 'templates.txt'}:{n}: template has no {{c}} placeholder: {t!r}")
    split_dir = task_dir / split
    if not split_dir.is_dir():
        raise BenchmarkFormatError(f"{split_dir}: folder not found")
    label_of = {c: i for i, c in enumerate(classnames)}
    label_of |= {c.replace(" ", "_"): i for i, c in enumerate(classnames)}
    label_of |= {str(i): i for i in range(len(classnames))}
    images, labels = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in label_of:
            raise BenchmarkFormatError(f"{class_dir}: folder name is not a class in {task_dir / 'classnames.txt'}")
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(ImageRef(f))
                labels.append(label_of[class_dir.name])
    if not images:
        raise BenchmarkFormatError(f"{split_dir}: no images in class folders")
    return ZeroShotSet(task_dir.name, classnames, templates, images, labels)


# ----------------------------------------------------------------------------- discovery

SUITES = ("retrieval", "sugarcrepe", "sugarcrepe_pp", "winoground", "aro", "zeroshot")


def discover(data_dir: Path) -> dict[str, Path]:
    """Which benchmark folders exist under `data_dir` (the `vladva data shapes` layout):
    `{suite: path}`; retrieval maps to its Karpathy JSON file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BenchmarkFormatError(f"{data_dir}: data folder not found")
    found: dict[str, Path] = {}
    retrieval = sorted((data_dir / "retrieval").glob("dataset_*.json"))
    if retrieval:
        found["retrieval"] = retrieval[0]
    for suite in ("sugarcrepe", "sugarcrepe_pp", "winoground", "aro", "zeroshot"):
        if (data_dir / suite).is_dir():
            found[suite] = data_dir / suite
    return found
