"""Image-text retrieval on a Karpathy split (COCO, Flickr30k): recall@k in both directions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vladva.eval.benchmarks import Bar, Benchmark, Column, DetailTable, PathOption, metric, register_benchmark
from vladva.eval.loaders import BenchmarkFormatError, ImageRef, read_json, required_text
from vladva.eval.scoring import subsample, take


@dataclass
class RetrievalSet:
    """Karpathy-split retrieval data: `caption_image[j]` is the index of caption j's image.
    `caption_true_for[j]`, when the data ships caption_truth.json with image lists, holds every
    gallery image index caption j is true for; `caption_true_count[j]` the count it records.
    `image_ids[i]`: image i's Karpathy `imgid` as a string (its position in the JSON when absent)."""

    name: str
    images: list[ImageRef]
    captions: list[str]
    caption_image: list[int]
    caption_true_for: list[list[int]] | None = None
    caption_true_count: list[int] | None = None
    image_ids: list[str] = field(default_factory=list)


def load_karpathy(json_path: Path, image_root: Path | None = None, split: str = "test") -> RetrievalSet:
    """COCO / Flickr30k Karpathy JSON. An image is `image_root/filepath/filename` (falling back
    to `image_root/filename`, as Flickr30k has no filepath); `image_root` defaults to the JSON's
    folder. Only images of `split` are kept. Reads `caption_truth.json` beside the JSON if there."""
    json_path = Path(json_path)
    data = read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BenchmarkFormatError(f"{json_path}: expected an object with an 'images' list (Karpathy split format)")
    root = Path(image_root) if image_root is not None else json_path.parent
    images: list[ImageRef] = []
    captions: list[str] = []
    caption_image: list[int] = []
    sentids: list[str] = []
    image_ids: list[str] = []
    imgid_to_index: dict[str, int] = {}
    for n, entry in enumerate(data["images"]):
        where = f"{json_path}: images[{n}]"
        if not isinstance(entry, dict):
            raise BenchmarkFormatError(f"{where} must be an object")
        if entry.get("split", split) != split:
            continue
        filename = required_text(entry, "filename", where)
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
        image_ids.append(str(entry.get("imgid", n)))
        imgid_to_index[image_ids[-1]] = len(images)
        for k, sent in enumerate(sentences):
            if not isinstance(sent, dict):
                raise BenchmarkFormatError(f"{where}.sentences[{k}] must be an object")
            captions.append(required_text(sent, "raw", f"{where}.sentences[{k}]"))
            caption_image.append(len(images))
            sentids.append(str(sent.get("sentid", len(sentids))))
        images.append(ImageRef(found))
    if not images:
        raise BenchmarkFormatError(f"{json_path}: no images with split '{split}'")
    out = RetrievalSet(str(data.get("dataset", json_path.stem)), images, captions, caption_image, image_ids=image_ids)
    truth_path = json_path.parent / "caption_truth.json"
    if truth_path.is_file():
        _attach_caption_truth(out, truth_path, sentids, imgid_to_index)
    return out


def _attach_caption_truth(rs: RetrievalSet, path: Path, sentids: list[str], imgid_to_index: dict[str, int]) -> None:
    """caption_truth.json maps sentid -> either the list of imgids the caption is true for, or
    the number of gallery images it is true for (optionally under a top-level "captions" key)."""
    data = read_json(path)
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


class Retrieval(Benchmark):
    name = "retrieval"
    order = 10
    path = PathOption("retrieval_json", "--coco-json", "Karpathy-split JSON (COCO or Flickr30k) for retrieval.")
    extra_paths = (
        PathOption("retrieval_images", "--images", "Image root for --coco-json (default: the JSON's folder)."),
    )
    chart_panel = "Retrieval recall"
    chart_chance = None
    clip_benchmark_task = "zeroshot_retrieval"
    clip_benchmark_names = ("mscoco_captions", "flickr30k", "flickr8k")

    detail_title = "Retrieval (recall %, ties against the model)"

    def discover(self, data_dir: Path) -> Path | None:
        """The first `retrieval/dataset_*.json` (the Karpathy file's usual name)."""
        found = sorted(self.data_folder(data_dir).glob("dataset_*.json"))
        return found[0] if found else None

    def load(self, path, cfg) -> RetrievalSet:
        return load_karpathy(path, self.option(cfg, "retrieval_images"), cfg.split)

    def score(self, enc, data: RetrievalSet, cfg) -> tuple[dict, dict]:
        """Image<->text recall at `cfg.ks` over the whole gallery; `cfg.limit` keeps that many images
        (and all their captions). Adds `t2i_valid_R@k` when caption_truth.json lists images per
        caption, and `t2i_unique_R@k` (text->image over captions true for exactly one image) when
        it counts them."""
        import torch

        from vladva.eval import metrics as M

        rs = data
        keep = subsample(len(rs.images), cfg.limit, cfg.seed)
        new_index = {old: new for new, old in enumerate(keep)}
        cap_idx = [j for j, i in enumerate(rs.caption_image) if i in new_index]
        caption_image = torch.tensor([new_index[rs.caption_image[j]] for j in cap_idx])
        sim = (
            enc.images(take(rs.images, keep), "retrieval images")
            @ enc.texts(take(rs.captions, cap_idx), "retrieval captions").T
        )
        true_for = None
        if rs.caption_true_for is not None:
            true_for = torch.zeros(len(cap_idx), len(keep), dtype=torch.bool)
            for row, j in enumerate(cap_idx):
                for i in rs.caption_true_for[j]:
                    if i in new_index:
                        true_for[row, new_index[i]] = True
        out = M.retrieval_recalls(sim, caption_image, cfg.ks, true_for)
        counts = {"images": len(keep), "captions": len(cap_idx)}
        if rs.caption_true_count is not None and cfg.limit <= 0:
            unique = [row for row, j in enumerate(cap_idx) if rs.caption_true_count[j] == 1]
            if unique:
                ranks = M.best_positive_rank(sim.T[unique], M.positive_mask(caption_image[unique], len(keep)))
                out |= {f"t2i_unique_{k}": v for k, v in M.recall_at_k(ranks, cfg.ks).items()}
                counts["unique_captions"] = len(unique)
        return out, counts

    def summary_columns(self, models: list[dict]) -> list[Column]:
        cols: list[Column] = [
            (f"{label} R@{k}", metric(self.name, f"{direction}_R@{k}"))
            for direction, label in (("t2i", "T→I"), ("i2t", "I→T"))
            for k in (1, 5, 10)
        ]
        return cols + [
            ("T→I valid R@1", metric(self.name, "t2i_valid_R@1")),
            ("T→I unique R@1", metric(self.name, "t2i_unique_R@1")),
        ]

    def chart_bars(self) -> list[Bar]:
        return [
            (f"{label} R@{k}", (self.name, f"{direction}_R@{k}"))
            for direction, label in (("t2i", "T→I"), ("i2t", "I→T"))
            for k in (1, 5, 10)
        ]

    def clip_benchmark_rows(self, metrics: dict) -> list[tuple[str, dict[str, float]]]:
        """CLIP_benchmark's names: `image_retrieval_recall@k` is text->image (an image is retrieved),
        `text_retrieval_recall@k` image->text; fractions."""
        ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith(("t2i_R@", "i2t_R@"))})
        out = {}
        for k in ks:
            for name, key in (("image_retrieval", f"t2i_R@{k}"), ("text_retrieval", f"i2t_R@{k}")):
                if isinstance(metrics.get(key), (int, float)):
                    out[f"{name}_recall@{k}"] = metrics[key] / 100
        return [(self.name, out)]

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        res = self.results(models)
        if not res:
            return []
        keys = sorted({k for _, r in res for k in r}, key=lambda k: (k.split("_R@")[0], int(k.split("@")[1])))
        rows = [[name] + [r.get(k) for k in keys] for name, r in res]
        return [DetailTable(self.detail_title, ["model"] + keys, rows)]


register_benchmark(Retrieval())
