"""SugarCrepe++ (Dumpala et al., 2024): an image, two paraphrased captions and a hard negative;
ITT (image to text) and TOT (text only) accuracy per category and their mean."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vladva.eval.benchmarks import Benchmark, Column, DetailTable, PathOption, dig, metric, register_benchmark
from vladva.eval.loaders import ImageRef, read_category_files
from vladva.eval.scoring import rowwise, subsample, take

CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
SCORES = ("ITT", "TOT")


@dataclass
class ParaphraseSet:
    """SugarCrepe++ items of one category: image, two positive paraphrases, one hard negative."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    captions2: list[str]
    negatives: list[str]


def load_sugarcrepe_pp(folder: Path, image_root: Path | None = None) -> list[ParaphraseSet]:
    """`<category>.json` entries with `filename, caption, caption2, negative_caption`; images
    under `image_root` (default `folder/images`)."""
    keys = ("caption", "caption2", "negative_caption")
    files = read_category_files(folder, image_root, CATEGORIES, keys, "SugarCrepe++")
    return [ParaphraseSet(f.name, f.images, *(f.texts[k] for k in keys)) for f in files]


class SugarCrepePP(Benchmark):
    name = "sugarcrepe_pp"
    order = 30
    path = PathOption("sugarcrepe_pp", "--sugarcrepe-pp", "Folder of SugarCrepe++ <category>.json files.")
    extra_paths = (PathOption("sugarcrepe_pp_images", "--sugarcrepe-pp-images", "Image folder for SugarCrepe++."),)

    def load(self, path, cfg) -> list[ParaphraseSet]:
        return load_sugarcrepe_pp(path, self.option(cfg, "sugarcrepe_pp_images"))

    def score(self, enc, data: list[ParaphraseSet], cfg) -> tuple[dict, dict]:
        """ITT and TOT per category, and their mean over categories."""
        from vladva.eval import metrics as M

        out, counts = {}, {}
        for ps in data:
            idx = subsample(len(ps.images), cfg.limit, cfg.seed)
            img = enc.images(take(ps.images, idx), f"{ps.name}++ images")
            p1 = enc.texts(take(ps.captions, idx), f"{ps.name}++ captions")
            p2 = enc.texts(take(ps.captions2, idx), f"{ps.name}++ paraphrases")
            ng = enc.texts(take(ps.negatives, idx), f"{ps.name}++ negatives")
            out[ps.name] = M.sugarcrepe_pp_scores(
                rowwise(img, p1), rowwise(img, p2), rowwise(img, ng), rowwise(p1, p2), rowwise(p1, ng), rowwise(p2, ng)
            )
            counts[ps.name] = len(idx)
        out["mean"] = {s: sum(v[s] for v in out.values()) / len(data) for s in SCORES}
        return out, counts

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [(f"SC++ {s}", metric(self.name, "mean", s)) for s in SCORES]

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        res = self.results(models)
        if not res:
            return []
        cats = [c for c in (*CATEGORIES, "mean") if any(c in r for _, r in res)]
        header = ["model"] + [f"{c} {s}" for c in cats for s in SCORES]
        rows = [[name] + [dig(r, c, s) for c in cats for s in SCORES] for name, r in res]
        return [DetailTable("SugarCrepe++ (accuracy %)", header, rows)]


register_benchmark(SugarCrepePP())
