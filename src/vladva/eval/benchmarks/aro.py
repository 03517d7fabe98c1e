"""ARO VG-Relation and VG-Attribution (Yuksekgonul et al., 2023): a box crop against a true and a
false caption that swaps the relation's or the attributes' order; macro and micro accuracy."""

from __future__ import annotations

from pathlib import Path

from vladva.eval.benchmarks import Bar, Benchmark, Column, DetailTable, PathOption, dig, metric, register_benchmark
from vladva.eval.loaders import BenchmarkFormatError, ImageRef, PairSet, existing_image, read_json, required_text
from vladva.eval.scoring import score_pair_sets

FILES = {"relation": "visual_genome_relation.json", "attribution": "visual_genome_attribution.json"}
SUMMARIES = ("macro", "micro")


def load_aro(folder: Path, image_root: Path | None = None) -> list[PairSet]:
    """Lists of entries with `image_path` (relative to `image_root`, default `folder/images`),
    `bbox_x/y/w/h`, `true_caption`, `false_caption` and `relation_name` or `attributes`. Items are
    grouped by relation / attribute pair for the macro average."""
    folder = Path(folder)
    root = Path(image_root) if image_root is not None else folder / "images"
    sets = []
    for name, filename in FILES.items():
        path = folder / filename
        if not path.is_file():
            continue
        data = read_json(path)
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
            ps.images.append(ImageRef(existing_image(root / required_text(entry, "image_path", where), where), box))
            ps.positives.append(required_text(entry, "true_caption", where))
            ps.negatives.append(required_text(entry, "false_caption", where))
            if name == "relation":
                ps.groups.append(required_text(entry, "relation_name", where))
            else:
                attrs = entry.get("attributes")
                if not isinstance(attrs, list) or not attrs:
                    raise BenchmarkFormatError(f"{where}: 'attributes' must be a non-empty list")
                ps.groups.append("_".join(map(str, attrs)))
        sets.append(ps)
    if not sets:
        raise BenchmarkFormatError(f"{folder}: no ARO files (expected {' and/or '.join(FILES.values())})")
    return sets


class ARO(Benchmark):
    name = "aro"
    order = 50
    path = PathOption("aro", "--aro", "Folder with visual_genome_relation.json / visual_genome_attribution.json.")
    extra_paths = (PathOption("aro_images", "--aro-images", "Image folder for ARO (default: <aro>/images)."),)
    legend = "ARO macro (chance 50)"

    def load(self, path, cfg) -> list[PairSet]:
        return load_aro(path, self.option(cfg, "aro_images"))

    def score(self, enc, data: list[PairSet], cfg) -> tuple[dict, dict]:
        """Per file: macro (mean over relations or attribute pairs, as the ARO paper reports) and
        micro accuracy on the box crops, plus the per-group accuracies."""
        from vladva.eval import metrics as M

        def summarise(pos, neg, groups):
            return M.macro_micro_accuracy(pos, neg, groups) | {"per_group": M.grouped_accuracy(pos, neg, groups)}

        return score_pair_sets(enc, data, cfg.limit, cfg.seed, summarise, label="aro ")

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [(label, metric(*keys)) for label, keys in self.chart_bars()]

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        res = self.results(models)
        if not res:
            return []
        header = ["model"] + [f"{f} {s}" for f in FILES for s in SUMMARIES]
        rows = [[name] + [dig(r, f, s) for f in FILES for s in SUMMARIES] for name, r in res]
        return [DetailTable("ARO (accuracy %; macro = mean over relations / attribute pairs)", header, rows)]

    def chart_bars(self) -> list[Bar]:
        return [("ARO rel", (self.name, "relation", "macro")), ("ARO attr", (self.name, "attribution", "macro"))]


register_benchmark(ARO())
