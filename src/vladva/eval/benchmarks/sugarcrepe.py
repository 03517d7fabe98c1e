"""SugarCrepe (Hsieh et al., 2023): an image, its caption and a hard negative that replaces, swaps
or adds an object, attribute or relation; accuracy per category."""

from __future__ import annotations

from pathlib import Path

from vladva.eval.benchmarks import Bar, Benchmark, Column, PathOption, metric, register_benchmark
from vladva.eval.loaders import PairSet, read_category_files
from vladva.eval.scoring import score_pair_sets

CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")


def load_sugarcrepe(folder: Path, image_root: Path | None = None) -> list[PairSet]:
    """One `<category>.json` per category, `{"0": {"filename", "caption", "negative_caption"},
    ...}`; images under `image_root` (default `folder/images`)."""
    files = read_category_files(folder, image_root, CATEGORIES, ("caption", "negative_caption"), "SugarCrepe")
    return [PairSet(f.name, f.images, f.texts["caption"], f.texts["negative_caption"]) for f in files]


class SugarCrepe(Benchmark):
    name = "sugarcrepe"
    order = 20
    path = PathOption("sugarcrepe", "--sugarcrepe", "Folder of SugarCrepe <category>.json files.")
    extra_paths = (
        PathOption("sugarcrepe_images", "--sugarcrepe-images", "Image folder for SugarCrepe (e.g. COCO val2017)."),
    )
    legend = "SC = SugarCrepe (chance 50)"
    clip_benchmark_names = ("sugar_crepe", *(f"sugar_crepe/{c}" for c in CATEGORIES))
    label = "SC"  # the prefix of its summary columns and chart bars
    categories = CATEGORIES  # the categories it reports (it reads whichever files exist)

    def load(self, path, cfg) -> list[PairSet]:
        return load_sugarcrepe(path, self.option(cfg, "sugarcrepe_images"))

    def score(self, enc, data: list[PairSet], cfg) -> tuple[dict, dict]:
        """Per category: percent of items whose caption scores strictly above the negative."""
        from vladva.eval import metrics as M

        return score_pair_sets(enc, data, cfg.limit, cfg.seed, lambda pos, neg, _groups: M.pair_accuracy(pos, neg))

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [(f"{self.label} {c}", metric(self.name, c)) for c in self.categories]

    def chart_bars(self) -> list[Bar]:
        return [(f"{self.label} {c}", (self.name, c)) for c in self.categories]

    def clip_benchmark_rows(self, metrics: dict) -> list[tuple[str, dict[str, float]]]:
        """CLIP_benchmark's datasets `sugar_crepe/<category>`, each with `acc` as a fraction."""
        return [(f"sugar_crepe/{c}", {"acc": v / 100}) for c, v in metrics.items() if isinstance(v, (int, float))]


register_benchmark(SugarCrepe())
