"""Winoground (Thrush et al., 2022): two images and two captions that use the same words in a
different order; text, image and group scores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vladva.eval.benchmarks import Bar, Benchmark, Column, PathOption, metric, register_benchmark
from vladva.eval.loaders import BenchmarkFormatError, ImageRef, find_image, required_text
from vladva.eval.scoring import rowwise, subsample, take

SCORES = ("text", "image", "group")


@dataclass
class WinogroundSet:
    """Winoground: caption_0[i] describes images_0[i], caption_1[i] describes images_1[i]."""

    images_0: list[ImageRef]
    images_1: list[ImageRef]
    captions_0: list[str]
    captions_1: list[str]
    tags: list[str]


def load_winoground(path: Path) -> WinogroundSet:
    """Winoground as `examples.jsonl` + `images/<image_k>.png`, or a local Hugging Face dataset
    folder written by `datasets.save_to_disk` (needs the optional `datasets` package; its images
    are exported once to PNGs in `path/_vladva_images`)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        path = path.parent
    jsonl = path / "examples.jsonl"
    if not jsonl.is_file():
        if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
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
        out.images_0.append(ImageRef(find_image(path / "images", required_text(entry, "image_0", where), where)))
        out.images_1.append(ImageRef(find_image(path / "images", required_text(entry, "image_1", where), where)))
        out.captions_0.append(required_text(entry, "caption_0", where))
        out.captions_1.append(required_text(entry, "caption_1", where))
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


class Winoground(Benchmark):
    name = "winoground"
    order = 40
    path = PathOption("winoground", "--winoground", "Winoground folder (examples.jsonl + images/) or saved HF dataset.")
    legend = "Wino = Winoground (chance 25 / 25 / 16.7)"
    chart_panel = "Winoground (chance 25 / 25 / 16.7)"
    chart_chance = None
    clip_benchmark_names = ("winoground",)
    label = "Wino"  # the prefix of its summary columns

    def load(self, path, cfg) -> WinogroundSet:
        return load_winoground(path)

    def score(self, enc, data: WinogroundSet, cfg) -> tuple[dict, dict]:
        import torch

        from vladva.eval import metrics as M

        ws = data
        idx = subsample(len(ws.captions_0), cfg.limit, cfg.seed)
        i0 = enc.images(take(ws.images_0, idx), "winoground image_0")
        i1 = enc.images(take(ws.images_1, idx), "winoground image_1")
        c0 = enc.texts(take(ws.captions_0, idx), "winoground caption_0")
        c1 = enc.texts(take(ws.captions_1, idx), "winoground caption_1")
        sim = torch.stack(
            [
                torch.stack([rowwise(c0, i0), rowwise(c0, i1)], dim=1),
                torch.stack([rowwise(c1, i0), rowwise(c1, i1)], dim=1),
            ],
            dim=1,
        )  # (n, caption, image)
        return M.winoground_scores(sim), {"examples": len(idx)}

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [(f"{self.label} {s}", metric(self.name, s)) for s in SCORES]

    def chart_bars(self) -> list[Bar]:
        return [(f"Wino {s}", (self.name, s)) for s in SCORES]


register_benchmark(Winoground())
