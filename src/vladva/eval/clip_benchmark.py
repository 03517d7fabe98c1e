"""CLIP_benchmark's habits for `vladva eval`: its `--dataset` / `--task` names and its result files.

CLIP_benchmark (LAION-AI/CLIP_benchmark) writes one JSON per (dataset, model):

    {"dataset": "mscoco_captions", "model": "...", "pretrained": "...", "task": "zeroshot_retrieval",
     "metrics": {"image_retrieval_recall@5": 0.52, "text_retrieval_recall@5": 0.71}, "language": "en"}

with metrics as fractions, to a path templated by `{dataset}`, `{model}`, `{pretrained}`, `{task}`
and `{language}`. `write_clip_benchmark_results` writes the same files from a vladva results dict,
so scripts and tables built on CLIP_benchmark (`clip_benchmark build *.json`) read vladva's
numbers. Each benchmark converts its own metrics (`Benchmark.clip_benchmark_rows`) and names its
task and dataset names (`clip_benchmark_task`, `clip_benchmark_names`).
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Formatter

from vladva.eval.benchmarks import benchmarks, get_benchmark, suite_names

TASKS = ("zeroshot_retrieval", "zeroshot_classification", "image_caption_selection")
PLACEHOLDERS = ("dataset", "model", "pretrained", "task", "language")


def dataset_suites(datasets: list[str]) -> dict[str, list[str]]:
    """`--dataset` values -> `{suite: [the names asked for]}`: a vladva suite name, or a
    CLIP_benchmark dataset name a benchmark declares (`mscoco_captions`, `flickr30k` and
    `flickr8k` -> retrieval, `sugar_crepe[/CATEGORY]` -> sugarcrepe, `winoground`). A name that
    matches none is a `ValueError` listing the accepted ones."""
    out: dict[str, list[str]] = {}
    for name in datasets:
        suite = next((b.name for b in benchmarks() if name == b.name or name in b.clip_benchmark_names), None)
        if suite is None:
            known = [n for b in benchmarks() for n in (b.name, *b.clip_benchmark_names)]
            raise ValueError(
                f"--dataset {name!r}: not a benchmark vladva reads; choose from {', '.join(known)} "
                "(the data itself comes from --data / --dataset_root or the per-benchmark path flags)"
            )
        out.setdefault(suite, []).append(name)
    return out


def task_suites(task: str) -> list[str]:
    """The suites that answer CLIP_benchmark's `--task` (`auto`: all of them)."""
    if task == "auto":
        return list(suite_names())
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: expected one of {', '.join((*TASKS, 'auto'))}")
    return [b.name for b in benchmarks() if b.clip_benchmark_task == task]


def clip_benchmark_records(results: dict, asked: dict[str, list[str]] | None = None) -> list[dict]:
    """One CLIP_benchmark record per (model, dataset) of a `run_evaluation` results dict. `asked`
    (from `dataset_suites`) renames a suite's row to the dataset name the user gave (e.g.
    `mscoco_captions`) and keeps only the asked rows of multi-row suites (`sugar_crepe/add_att`).
    `model` is the model's display name, `pretrained` its spec."""
    asked = asked or {}
    records = []
    for m in results["models"]:
        for suite, metrics in (m.get("metrics") or {}).items():
            benchmark = get_benchmark(suite)
            rows = benchmark.clip_benchmark_rows(metrics)
            names = asked.get(suite, [])
            row_names = {d for d, _ in rows}
            if names and all(n in row_names and n != suite for n in names):  # e.g. sugar_crepe/add_att
                rows = [(d, v) for d, v in rows if d in names]
            elif len(rows) == 1 and rows[0][0] == suite:  # e.g. retrieval asked as mscoco_captions
                rows = [(next((n for n in names if n != suite), suite), rows[0][1])]
            records += [
                {
                    "dataset": dataset,
                    "model": m["name"],
                    "pretrained": m["spec"],
                    "task": benchmark.clip_benchmark_task,
                    "metrics": values,
                    "language": "en",
                }
                for dataset, values in rows
            ]
    return records


def _slug(value: str) -> str:
    return value.replace("/", "_").replace(":", "_").replace("=", "_").replace(" ", "_")


def output_paths(template: str, records: list[dict]) -> list[Path]:
    """The file of each record: `template` formatted with the record's slugged fields (`/`, `:`
    and spaces become `_`). A template that would give two records the same file gets
    `_{dataset}` and / or `_{model}` inserted before its suffix, so no result overwrites another."""
    bad = [name for _, name, _, _ in Formatter().parse(template) if name and name not in PLACEHOLDERS]
    if bad:
        raise ValueError(f"--output {template!r}: unknown placeholder {{{bad[0]}}}; use {', '.join(PLACEHOLDERS)}")

    def fmt(t: str) -> list[str]:
        return [t.format(**{k: _slug(str(r[k])) for k in PLACEHOLDERS}) for r in records]

    paths = fmt(template)
    for field in ("dataset", "model"):
        if len(set(paths)) == len(paths):
            break
        if f"{{{field}}}" not in template:
            stem, dot, suffix = template.rpartition(".")
            template = f"{stem}_{{{field}}}.{suffix}" if dot else f"{template}_{{{field}}}"
            paths = fmt(template)
    return [Path(p) for p in paths]


def write_clip_benchmark_results(results: dict, template: str, asked: dict[str, list[str]] | None = None) -> list[Path]:
    """Write one CLIP_benchmark-style JSON per (dataset, model) of `results` to the paths
    `template` gives (`output_paths`); returns them."""
    records = clip_benchmark_records(results, asked)
    paths = output_paths(template, records)
    for path, record in zip(paths, records):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return paths
