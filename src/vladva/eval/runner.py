"""`vladva eval` as a library call: resolve benchmark paths, load each benchmark once, run every
requested suite for every model through the embedding cache, and return the results dict that
`vladva.eval.report` writes.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vladva.data.vocab import tokenizer_of, warn_unknown_tokens
from vladva.eval.benchmarks import benchmarks, get_benchmark, path_options, suite_names
from vladva.eval.cache import CachedEncoder, default_cache_dir
from vladva.eval.loaders import BenchmarkFormatError
from vladva.eval.models import LoadedModel

RESULTS_SCHEMA = "vladva.eval.results/1"


@dataclass
class EvalConfig:
    """What to evaluate. `data` is a folder in the `vladva data shapes` layout whose benchmark
    subfolders are discovered; `paths` gives benchmarks' locations explicitly, keyed by their path
    options (`retrieval_json`, `retrieval_images`, `sugarcrepe`, `sugarcrepe_images`, ...: see
    `vladva.eval.benchmarks.path_options`), and overrides the discovered folder."""

    data: str | None = None
    suites: list[str] = field(default_factory=lambda: ["all"])
    paths: dict[str, str] = field(default_factory=dict)
    split: str = "test"  # Karpathy split for retrieval, split folder for zero-shot tasks
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    limit: int = 0  # > 0: a seeded random subset of that many items per benchmark (quick looks)
    seed: int = 0
    batch_size: int = 32
    cache_dir: str | None = None  # None: default_cache_dir()
    use_cache: bool = True
    show_progress: bool = True

    def validate(self) -> None:
        known_suites = suite_names()
        unknown = [s for s in self.suites if s != "all" and s not in known_suites]
        if unknown:
            raise ValueError(f"unknown suite '{unknown[0]}'; choose from {', '.join(known_suites)} or all")
        known_paths = [opt.key for opt in path_options()]
        for key, value in self.paths.items():
            if key not in known_paths:
                raise ValueError(f"paths.{key}: not a benchmark path; known: {', '.join(known_paths)}")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"paths.{key} must be a path string, got {value!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("ks must be positive integers")


def discover_benchmarks(data_dir: Path) -> dict[str, Path]:
    """`{suite: path}` of the benchmarks whose data sits under `data_dir` (the `vladva data
    shapes` layout), in suite order."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BenchmarkFormatError(f"{data_dir}: data folder not found")
    return {b.name: path for b in benchmarks() if (path := b.discover(data_dir)) is not None}


def resolve_benchmarks(cfg: EvalConfig) -> dict[str, Path]:
    """`{suite: path}` for the suites to run, in suite order. `all` means every benchmark
    found; a named suite with no data is an error that says which flag provides it."""
    found = discover_benchmarks(Path(cfg.data)) if cfg.data else {}
    found |= {b.name: Path(cfg.paths[b.path.key]) for b in benchmarks() if cfg.paths.get(b.path.key)}
    if "all" in cfg.suites:
        if not found:
            where = f"under {cfg.data}" if cfg.data else "(no --data folder and no per-benchmark path given)"
            folders = ", ".join(f"{name}/" for name in suite_names())
            raise ValueError(f"no benchmark data found {where}; expected some of {folders}")
        return {s: found[s] for s in suite_names() if s in found}
    wanted = list(dict.fromkeys(cfg.suites))
    missing = [s for s in wanted if s not in found]
    if missing:
        flag = get_benchmark(missing[0]).path.flag
        raise ValueError(f"suite '{missing[0]}': no data (give --data with a {missing[0]}/ folder, or {flag})")
    return {s: found[s] for s in wanted}


def load_benchmarks(cfg: EvalConfig, paths: dict[str, Path]) -> dict[str, object]:
    """Read every benchmark once (all files checked before any model runs)."""
    return {suite: get_benchmark(suite).load(path, cfg) for suite, path in paths.items()}


def run_suite(suite: str, enc: CachedEncoder, data, cfg: EvalConfig) -> tuple[dict, dict]:
    """`(metrics, counts)` of the loaded benchmark `suite` for the model behind `enc`."""
    return get_benchmark(suite).score(enc, data, cfg)


def evaluate_model(model: LoadedModel, loaded: dict[str, object], cfg: EvalConfig, log=print) -> dict:
    """Run every loaded benchmark (`{suite: data}` from `load_benchmarks`) for one model -> the
    model's entry in results.json."""
    cache_dir = None if not cfg.use_cache else Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    enc = CachedEncoder(model.embedder, model.identity, cache_dir, cfg.batch_size, cfg.show_progress)
    metrics, counts, timings = {}, {}, {}
    for suite, data in loaded.items():
        t0 = time.perf_counter()
        metrics[suite], counts[suite] = run_suite(suite, enc, data, cfg)
        timings[suite] = round(time.perf_counter() - t0, 3)
        log(f"{model.name}: {suite} done in {timings[suite]:.1f}s")
    unk_rate, unk_words = warn_unknown_tokens(
        tokenizer_of(model.embedder), list(enc.texts_read), f"the texts {model.name!r} read in this evaluation"
    )
    return {
        "name": model.name,
        "spec": model.spec,
        "identity": model.identity,
        "params": model.params,
        "train_compute": model.train_compute,
        "metrics": metrics,
        "counts": counts,
        "timings_s": timings
        | {
            "encode_images": round(enc.stats.seconds["images"], 3),
            "encode_texts": round(enc.stats.seconds["texts"], 3),
        },
        "encoded": {
            "images": enc.stats.images_encoded,
            "texts": enc.stats.texts_encoded,
            "from_cache": enc.stats.cache_hits,
            "requested": dict(enc.stats.requested),
        },
        # share of the texts' word pieces the model's tokenizer maps to unknown (vladva.data.vocab)
        "unknown_token_rate": round(unk_rate, 4),
        "unknown_words": unk_words[:20],
    }


def environment() -> dict:
    """Package versions, git commit of the vladva source and the host, for reproducibility."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("vladva", "torch", "transformers", "peft", "accelerate", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    src = Path(__file__).resolve().parent
    commit = dirty = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        if commit:
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=src,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    return {
        "versions": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def run_evaluation(models: list[LoadedModel], cfg: EvalConfig, log=print) -> dict:
    """Evaluate `models` on the benchmarks `cfg` names -> the results dict (schema in docs/evaluation.md)."""
    from vladva.config import config_to_dict

    cfg.validate()
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name ({', '.join(names)}); name them with --model NAME=SPEC")
    t0 = time.perf_counter()
    paths = resolve_benchmarks(cfg)
    loaded = load_benchmarks(cfg, paths)
    entries = [evaluate_model(m, loaded, cfg, log) for m in models]
    return {
        "schema": RESULTS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {suite: str(p.resolve()) for suite, p in paths.items()},
        "seed": cfg.seed,
        "config": config_to_dict(cfg),
        **environment(),
        "total_seconds": round(time.perf_counter() - t0, 3),
        "models": entries,
    }


def evaluate_to_dir(
    model_args: list[str],
    cfg: EvalConfig,
    out_dir: Path | None,
    log=print,
    show_table: bool = True,
    clip_benchmark_output: str | None = None,
    clip_benchmark_datasets: dict[str, list[str]] | None = None,
) -> dict[str, Path | list[Path]]:
    """What `vladva eval` does, for callers such as the demo: load `[name=]spec` models, run,
    write eval_config.yaml, results.json/.md/.png into `out_dir` (when given) and, with
    `clip_benchmark_output` (a path template), one CLIP_benchmark-style JSON per dataset and model
    (`vladva.eval.clip_benchmark`); returns the written paths."""
    from vladva.config import save_config
    from vladva.eval.clip_benchmark import write_clip_benchmark_results
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, print_summary, write_report

    cfg.validate()
    if out_dir is None and clip_benchmark_output is None:
        raise ValueError("nowhere to write the results: give an output folder and/or a CLIP_benchmark output template")
    models = [load_model(m) for m in model_args]
    results = run_evaluation(models, cfg, log=log)
    paths: dict[str, Path | list[Path]] = {}
    report = as_report(results, str(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "eval_config.yaml")
        paths |= write_report(report, out_dir)
    if clip_benchmark_output is not None:
        paths["clip_benchmark"] = write_clip_benchmark_results(results, clip_benchmark_output, clip_benchmark_datasets)
    if show_table:
        print_summary(report)
    return paths
