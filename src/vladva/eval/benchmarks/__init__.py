"""The benchmark registry: one module per benchmark in this package, each registering itself.

A benchmark module holds everything about its benchmark: where its data sits under a `--data`
folder (`discover`), its path options (`EvalConfig.paths` keys and `vladva eval` flags), its
reader (`load`), its scorer (`score`), its summary-table columns and detail tables for
results.md, its bars in results.png and any charts of its own (`figures`). The runner, the
report, the plot and the CLI ask this registry and never name a benchmark. Adding one is one new module that ends with
`register_benchmark(MyBenchmark())`; every module here is imported on first use (`pkgutil`;
names starting with `_` are skipped, for helpers).

The CLI reads the registry to build `vladva eval`'s flags, so benchmark modules import heavy
code (torch, through `vladva.eval.metrics`) inside `score`, which keeps `vladva --help` fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vladva.eval.cache import CachedEncoder
    from vladva.eval.runner import EvalConfig

# (header, model entry of results.json -> the cell's value, or None when the model has none)
Column = tuple[str, Callable[[dict], object]]
# (label, path of keys into a model entry's metrics)
Bar = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class PathOption:
    """A path a benchmark reads: the `EvalConfig.paths` key and the `vladva eval` flag with its help."""

    key: str  # also the CLI parameter's name, so a valid Python identifier
    flag: str
    help: str


@dataclass
class DetailTable:
    """A detail table of results.md; `rows` hold raw values (the first is the model name), the report formats them."""

    title: str
    header: list[str]
    rows: list[list[object]]


def dig(d: object, *keys: str) -> object:
    """`d[k0][k1]...`, or None where a key is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out |= _flat(v, key)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def metric(*keys: str) -> Callable[[dict], object]:
    """A column getter: the value at `keys` in a model entry's metrics, or None."""
    return lambda model: dig(model, "metrics", *keys)


class Benchmark:
    """One benchmark. Subclass, set the class attributes, implement `load` and `score`, and add
    report columns, detail tables and chart bars where the benchmark has them."""

    name: str = ""  # the suite: `--suite NAME`, the key in results.json, the folder under --data
    folder: str = ""  # the folder under --data when it is not `name` (e.g. "paraphrase/retrieval")
    order: int = 100  # place among suites, summary columns, detail tables and chart bars
    path: PathOption  # where the data is, overriding the folder found under --data
    extra_paths: tuple[PathOption, ...] = ()  # further locations, e.g. an image root
    legend: str = ""  # results.md's note on its abbreviations and chance level, e.g. "SC = SugarCrepe (chance 50)"
    # results.png: the panel the chart bars go in, and the dashed chance line there (None: no line)
    chart_panel: str = "Compositional accuracy (two-way choices)"
    chart_chance: float | None = 50.0
    # CLIP_benchmark's `--task` this benchmark answers and the `--dataset` names that mean it
    # (`vladva eval --dataset/--task/--output`, vladva.eval.clip_benchmark)
    clip_benchmark_task: str = "image_caption_selection"
    clip_benchmark_names: tuple[str, ...] = ()

    @property
    def path_options(self) -> tuple[PathOption, ...]:
        return (self.path, *self.extra_paths)

    def data_folder(self, data_dir: Path) -> Path:
        """The benchmark's folder under a `--data` folder: `data_dir/<folder or name>/`."""
        return Path(data_dir) / (self.folder or self.name)

    def discover(self, data_dir: Path) -> Path | None:
        """Where the benchmark's data sits under a `--data` folder: `data_folder` if it exists."""
        folder = self.data_folder(data_dir)
        return folder if folder.is_dir() else None

    def load(self, path: Path, cfg: EvalConfig) -> object:
        """Read every file of the benchmark at `path` (all checked before any model runs)."""
        raise NotImplementedError

    def score(self, enc: CachedEncoder, data: object, cfg: EvalConfig) -> tuple[dict, dict]:
        """`(metrics, counts)` of one model on the loaded data: percentages and item counts."""
        raise NotImplementedError

    def summary_columns(self, models: list[dict]) -> list[Column]:
        """The benchmark's columns in the summary table (one row per model entry)."""
        return []

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        """Tables after the summary, e.g. every metric per category."""
        return []

    def chart_bars(self) -> list[Bar]:
        """Bars in results.png, in the panel `chart_panel` (percentages, chance at `chart_chance`)."""
        return []

    def chart_bars_for(self, models: list[dict]) -> list[Bar]:
        """The bars for these model entries: `chart_bars()`, unless the bars depend on the data
        (e.g. one per zero-shot task found)."""
        return self.chart_bars()

    def clip_benchmark_rows(self, metrics: dict) -> list[tuple[str, dict[str, float]]]:
        """`(dataset, metrics)` for CLIP_benchmark-style result files, fractions in [0, 1]. Default:
        one row named after the suite, every percentage / 100, nested keys joined by `/`."""
        return [(self.name, {k: v / 100 for k, v in _flat(metrics).items()})]

    def figures(self, models: list[dict], out_dir: Path) -> list[tuple[str, str]]:
        """Write the benchmark's own charts into `out_dir` (beside results.png) and return
        `(caption, file name)` of each one written, which results.md shows under the summary."""
        return []

    # -- helpers for subclasses

    def option(self, cfg: EvalConfig, key: str) -> Path | None:
        """The path given for option `key`, or None; always None for a key that is not one of
        this benchmark's `path_options` (a subclass without its parent's image flag does not
        read the parent's)."""
        value = cfg.paths.get(key) if any(opt.key == key for opt in self.path_options) else None
        return Path(value) if value else None

    def results(self, models: list[dict]) -> list[tuple[str, dict]]:
        """`(model name, its metrics for this benchmark)` for the models that have some."""
        return [(m["name"], r) for m in models if (r := dig(m, "metrics", self.name))]


_REGISTRY: dict[str, Benchmark] = {}
_discovered = False


def register_benchmark(benchmark: Benchmark, replace: bool = False) -> Benchmark:
    """Add `benchmark` to the registry; its path keys and flags must be new unless `replace`."""
    if not benchmark.name.isidentifier():
        raise ValueError(f"benchmark name {benchmark.name!r} must be an identifier (it is a results.json key)")
    if benchmark.name in _REGISTRY and not replace:
        raise ValueError(f"benchmark {benchmark.name!r} is already registered")
    taken = {
        value: other.name
        for other in _REGISTRY.values()
        if other.name != benchmark.name
        for opt in other.path_options
        for value in (opt.key, opt.flag)
    }
    for opt in benchmark.path_options:
        if not opt.key.isidentifier() or not opt.flag.startswith("--"):
            raise ValueError(f"benchmark {benchmark.name!r}: bad path option {opt}")
        for value in (opt.key, opt.flag):
            if value in taken:
                raise ValueError(f"benchmark {benchmark.name!r}: {value} is already used by {taken[value]!r}")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")


def benchmarks() -> list[Benchmark]:
    """Every registered benchmark, by `order` (then name)."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda b: (b.order, b.name))


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name`; `KeyError` naming the known ones otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown suite '{name}'; choose from {', '.join(suite_names())} or all")
    return _REGISTRY[name]


def suite_names() -> tuple[str, ...]:
    """The registered benchmarks' names, in order."""
    return tuple(b.name for b in benchmarks())


def path_options() -> list[PathOption]:
    """Every benchmark's path options, in benchmark order."""
    return [opt for b in benchmarks() for opt in b.path_options]


__all__ = [
    "Bar",
    "Benchmark",
    "Column",
    "DetailTable",
    "PathOption",
    "benchmarks",
    "dig",
    "get_benchmark",
    "metric",
    "path_options",
    "register_benchmark",
    "suite_names",
]
