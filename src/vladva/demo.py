"""`vladva demo`: the whole method end to end on the embedded default.

generate data -> load the shipped base LVLM (or pretrain it with `from_scratch`) -> VladVA
fine-tune -> evaluate the zero-shot base, the CLIP-style baseline and VladVA on every suite ->
print one table and write results.json / results.md / results.png -> build a search index of
the test images. Every step reuses its cached output on a second run.
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


def _finetune(cfg: DemoConfig, out: Path, data_dir: Path, base_dir: Path) -> Path:
    """Train VladVA (or reuse / resume a run with the same config) -> its final checkpoint, which
    records the fine-tuning compute (compute.json) for the report."""
    from vladva.train.config import TrainConfig
    from vladva.train.trainer import train_or_reuse

    overrides = [
        f"base_model={base_dir}",
        f"output_dir={out / 'vladva'}",
        f"seed={cfg.seed}",
        f"data.train={data_dir / 'train.jsonl'}",
        f"data.val={data_dir / 'val.jsonl'}",
        f"progress={str(cfg.progress).lower()}",
    ]
    overrides += (QUICK_TRAIN if cfg.quick else []) + list(cfg.train_overrides)
    tcfg = load_config(TrainConfig, cfg.train_recipe, overrides)
    return train_or_reuse(tcfg, log=lambda msg: _log(f"VladVA: {msg}"))


def run_demo(cfg: DemoConfig) -> dict:
    """Run every step; returns `{"report": ..., "paths": {...}}`."""
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, print_summary, write_report
    from vladva.eval.runner import EvalConfig, run_evaluation

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    data_dir = _data(cfg, out)
    base_dir, clip_dir = _base_models(cfg, out, data_dir)
    ckpt = _finetune(cfg, out, data_dir, base_dir)

    models = [
        load_model(f"zero-shot base={'zeroshot:' + str(base_dir)}"),
        load_model(f"CLIP-style={'clip:' + str(clip_dir)}"),
        load_model(f"VladVA={'vladva:' + str(base_dir) + ':' + str(ckpt)}"),
    ]
    ecfg = EvalConfig(
        data=str(data_dir),
        limit=cfg.eval_limit,
        seed=cfg.seed,
        cache_dir=str(out / "cache"),
        show_progress=cfg.progress,
    )
    results = run_evaluation(models, ecfg, log=_log)
    report = as_report(results, str(out / "eval"))
    paths = write_report(report, out / "eval")
    save_config(ecfg, out / "eval" / "eval_config.yaml")
    print_summary(report)
    for _kind, p in paths.items():
        _log(f"wrote {p}")

    if cfg.build_index:
        index_dir = _index(out, data_dir, models[2])
        paths["index"] = index_dir
    _log(f"done in {time.perf_counter() - t_start:.0f}s")
    return {"report": report, "paths": paths}


def _index(out: Path, data_dir: Path, model) -> Path:
    """A search index of the retrieval test images with their captions (from the Karpathy JSON, so
    the search page shows them), rebuilt when the model changed or the index has no captions."""
    import shutil

    from vladva.model_kinds import portable_spec
    from vladva.serve.build import build_index
    from vladva.serve.index import IDS_FILE, META_FILE

    index_dir = out / "index"
    found = sorted((data_dir / "retrieval").glob("dataset_*.json"))  # the Karpathy file's usual name
    if not found:
        raise FileNotFoundError(f"{data_dir / 'retrieval'}: no dataset_*.json to index")
    source = found[0]
    meta, ids = index_dir / META_FILE, index_dir / IDS_FILE
    if (
        meta.is_file()
        and ids.is_file()
        and json.loads(meta.read_text(encoding="utf-8")).get("model") == portable_spec(model.spec, index_dir)
        and all(e.get("captions") for e in json.loads(ids.read_text(encoding="utf-8"))["entries"])
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
