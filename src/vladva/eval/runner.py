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

from vladva.eval import loaders as L
from vladva.eval import suites as S
from vladva.eval.cache import CachedEncoder, default_cache_dir
from vladva.eval.models import LoadedModel

RESULTS_SCHEMA = "vladva.eval.results/1"


@dataclass
class EvalConfig:
    """What to evaluate. `data` is a folder in the `vladva data shapes` layout whose benchmark
    subfolders are discovered; an explicit per-benchmark path overrides the discovered one."""

    data: str | None = None
    suites: list[str] = field(default_factory=lambda: ["all"])
    retrieval_json: str | None = None  # Karpathy JSON (COCO / Flickr30k)
    retrieval_images: str | None = None  # image root for it (default: the JSON's folder)
    split: str = "test"
    sugarcrepe: str | None = None
    sugarcrepe_images: str | None = None
    sugarcrepe_pp: str | None = None
    sugarcrepe_pp_images: str | None = None
    winoground: str | None = None
    aro: str | None = None
    aro_images: str | None = None
    zeroshot: str | None = None
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    limit: int = 0  # > 0: a seeded random subset of that many items per benchmark (quick looks)
    seed: int = 0
    batch_size: int = 32
    cache_dir: str | None = None  # None: default_cache_dir()
    use_cache: bool = True
    show_progress: bool = True

    def validate(self) -> None:
        unknown = [s for s in self.suites if s != "all" and s not in L.SUITES]
        if unknown:
            raise ValueError(f"unknown suite '{unknown[0]}'; choose from {', '.join(L.SUITES)} or all")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("ks must be positive integers")


def resolve_benchmarks(cfg: EvalConfig) -> dict[str, Path]:
    """`{suite: path}` for the suites to run, in `L.SUITES` order. `all` means every benchmark
    found; a named suite with no data is an error that says which flag provides it."""
    found = L.discover(Path(cfg.data)) if cfg.data else {}
    explicit = {
        "retrieval": cfg.retrieval_json,
        "sugarcrepe": cfg.sugarcrepe,
        "sugarcrepe_pp": cfg.sugarcrepe_pp,
        "winoground": cfg.winoground,
        "aro": cfg.aro,
        "zeroshot": cfg.zeroshot,
    }
    found |= {k: Path(v) for k, v in explicit.items() if v}
    wanted = list(L.SUITES) if "all" in cfg.suites else list(dict.fromkeys(cfg.suites))
    if "all" in cfg.suites:
        if not found:
            where = f"under {cfg.data}" if cfg.data else "(no --data folder and no per-benchmark path given)"
            raise ValueError(
                f"no benchmark data found {where}; expected retrieval/, sugarcrepe/, winoground/, aro/ or zeroshot/"
            )
        return {s: found[s] for s in wanted if s in found}
    missing = [s for s in wanted if s not in found]
    if missing:
        flag = "--coco-json" if missing[0] == "retrieval" else f"--{missing[0].replace('_', '-')}"
        raise ValueError(f"suite '{missing[0]}': no data (give --data with a {missing[0]}/ folder, or {flag})")
    return {s: found[s] for s in wanted}


def load_benchmarks(cfg: EvalConfig, paths: dict[str, Path]) -> dict[str, object]:
    """Read every benchmark once (all files checked before any model runs)."""

    def opt(p):
        return Path(p) if p else None

    readers = {
        "retrieval": lambda p: L.load_karpathy(p, opt(cfg.retrieval_images), cfg.split),
        "sugarcrepe": lambda p: L.load_sugarcrepe(p, opt(cfg.sugarcrepe_images)),
        "sugarcrepe_pp": lambda p: L.load_sugarcrepe_pp(p, opt(cfg.sugarcrepe_pp_images)),
        "winoground": L.load_winoground,
        "aro": lambda p: L.load_aro(p, opt(cfg.aro_images)),
        "zeroshot": lambda p: [L.load_zeroshot(t, cfg.split) for t in L.zeroshot_task_dirs(p)],
    }
    return {suite: readers[suite](path) for suite, path in paths.items()}


def run_suite(suite: str, enc: CachedEncoder, data, cfg: EvalConfig) -> tuple[dict, dict]:
    if suite == "retrieval":
        return S.run_retrieval(enc, data, cfg.ks, cfg.limit, cfg.seed)
    if suite == "sugarcrepe":
        return S.run_pairs(enc, data, cfg.limit, cfg.seed)
    if suite == "sugarcrepe_pp":
        return S.run_sugarcrepe_pp(enc, data, cfg.limit, cfg.seed)
    if suite == "winoground":
        return S.run_winoground(enc, data, cfg.limit, cfg.seed)
    if suite == "aro":
        return S.run_aro(enc, data, cfg.limit, cfg.seed)
    if suite == "zeroshot":
        out, counts = {}, {}
        for task in data:
            out[task.name], counts[task.name] = S.run_zeroshot(enc, task, cfg.limit, cfg.seed)
        return out, counts
    raise ValueError(f"unknown suite {suite!r}")


def evaluate_model(model: LoadedModel, benchmarks: dict[str, object], cfg: EvalConfig, log=print) -> dict:
    """Run every loaded benchmark for one model -> the model's entry in results.json."""
    cache_dir = None if not cfg.use_cache else Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    enc = CachedEncoder(model.embedder, model.identity, cache_dir, cfg.batch_size, cfg.show_progress)
    metrics, counts, timings = {}, {}, {}
    for suite, data in benchmarks.items():
        t0 = time.perf_counter()
        metrics[suite], counts[suite] = run_suite(suite, enc, data, cfg)
        timings[suite] = round(time.perf_counter() - t0, 3)
        log(f"{model.name}: {suite} done in {timings[suite]:.1f}s")
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
        },
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
    benchmarks = load_benchmarks(cfg, paths)
    entries = [evaluate_model(m, benchmarks, cfg, log) for m in models]
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
    model_args: list[str], cfg: EvalConfig, out_dir: Path, log=print, show_table: bool = True
) -> dict[str, Path]:
    """What `vladva eval` does, for callers such as the demo: load `[name=]spec` models, run,
    write eval_config.yaml, results.json/.md/.png into `out_dir`; returns the written paths."""
    from vladva.config import save_config
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, print_summary, write_report

    cfg.validate()
    models = [load_model(m) for m in model_args]
    results = run_evaluation(models, cfg, log=log)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "eval_config.yaml")
    report = as_report(results, str(out_dir))
    paths = write_report(report, out_dir)
    if show_table:
        print_summary(report)
    return paths
