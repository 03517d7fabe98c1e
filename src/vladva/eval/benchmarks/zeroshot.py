"""Zero-shot classification: class-name prompts from templates, one task per folder; top-k accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vladva.data.images import IMAGE_SUFFIXES
from vladva.eval.benchmarks import Bar, Benchmark, Column, DetailTable, PathOption, dig, metric, register_benchmark
from vladva.eval.loaders import BenchmarkFormatError, ImageRef
from vladva.eval.scoring import subsample, take


@dataclass
class ZeroShotSet:
    """Zero-shot classification: `labels[i]` indexes `classnames`; templates contain `{c}`."""

    name: str
    classnames: list[str]
    templates: list[str]
    images: list[ImageRef]
    labels: list[int]


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


class ZeroShot(Benchmark):
    name = "zeroshot"
    order = 60
    path = PathOption(
        "zeroshot", "--zeroshot", "A zero-shot task folder (classnames.txt, templates.txt, test/) or a folder of them."
    )
    chart_panel = "Zero-shot classification top-1"
    chart_chance = None  # 1 / classes, different per task
    clip_benchmark_task = "zeroshot_classification"

    def load(self, path, cfg) -> list[ZeroShotSet]:
        return [load_zeroshot(task, cfg.split) for task in zeroshot_task_dirs(path)]

    def score(self, enc, data: list[ZeroShotSet], cfg) -> tuple[dict, dict]:
        """Per task: top-1 (and top-5, or top-(n_classes-1) for small tasks) with template-averaged
        class embeddings."""
        import torch

        from vladva.eval import metrics as M

        out, counts = {}, {}
        for zs in data:
            idx = subsample(len(zs.images), cfg.limit, cfg.seed)
            prompts = [t.replace("{c}", c) for c in zs.classnames for t in zs.templates]
            text = enc.texts(prompts, f"{zs.name} prompts").view(len(zs.classnames), len(zs.templates), -1)
            logits = enc.images(take(zs.images, idx), f"{zs.name} images") @ M.class_prototypes(text).T
            labels = torch.tensor(take(zs.labels, idx))
            out[zs.name] = M.topk_accuracy(logits, labels, M.zeroshot_ks(len(zs.classnames)))
            counts[zs.name] = {"images": len(idx), "classes": len(zs.classnames)}
        return out, counts

    def clip_benchmark_rows(self, metrics: dict) -> list[tuple[str, dict[str, float]]]:
        """One row per task folder (the dataset is its name): `acc1`, `acc5` (or `acc{k}` for the
        k this task reports) as fractions, CLIP_benchmark's names."""
        return [
            (task, {k.replace("top", "acc"): v / 100 for k, v in accs.items() if isinstance(v, (int, float))})
            for task, accs in metrics.items()
            if isinstance(accs, dict)
        ]

    def chart_bars(self) -> list[Bar]:
        return []  # one bar per task: the tasks are known only from the results (see `chart_bars_for`)

    def chart_bars_for(self, models: list[dict]) -> list[Bar]:
        tasks = sorted({t for _, r in self.results(models) for t in r})
        return [(f"ZS {t}", (self.name, t, "top1")) for t in tasks]

    def summary_columns(self, models: list[dict]) -> list[Column]:
        tasks = sorted({t for _, r in self.results(models) for t in r})
        return [(f"ZS {t} top1", metric(self.name, t, "top1")) for t in tasks]

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        res = self.results(models)
        if not res:
            return []
        keys = sorted({(t, k) for _, r in res for t, v in r.items() for k in v})
        rows = [[name] + [dig(r, t, k) for t, k in keys] for name, r in res]
        return [DetailTable("Zero-shot classification (accuracy %)", ["model"] + [f"{t} {k}" for t, k in keys], rows)]


register_benchmark(ZeroShot())
