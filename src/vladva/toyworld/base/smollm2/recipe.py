"""The SmolLM2 base recipe end to end, resumable, and the copy of its small products into the package.

`run_smollm2(data, out, cfg)` runs, each stage skipped when finished (its `compute.json`
exists) and resumed from its checkpoint when interrupted:

    OUT/general_text.jsonl   the full LLM's plain-language answers (written once)
    OUT/heal/                stage 0: parts.safetensors (LoRA + norm), report.json, compute.json, metrics.jsonl
    OUT/align/               stage 1: parts (+ projector), report.json (held-out checks), ...
    OUT/instruct/            stage 2: parts, ...
    OUT/base-parts/          manifest.json + base_parts.safetensors: what ships (vladva.assemble.parts)
    OUT/base-lvlm/           the base LVLM built from base-parts (a plain LLaVA folder), report.json
    OUT/vladva/              the VladVA fine-tune (a `vladva train` run folder: checkpoints/, metrics.jsonl)
    OUT/dual/                the dual encoder on the same pairs (a `vladva train` run folder)
    OUT/smollm2_report.json  every stage's report and compute
    OUT/config.yaml          the resolved recipe

`ship_smollm2(out, dest)` copies the base parts, the VladVA and dual-encoder weights (LoRA, soft
prompts, head; base recorded as "smollm2"), the compute records and the report into
src/vladva/pretrained/smollm2/.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from vladva.config import config_to_dict, load_config, save_config
from vladva.toyworld.base.data import SceneVocab, load_split
from vladva.toyworld.base.smollm2.config import Smollm2RecipeConfig
from vladva.toyworld.base.smollm2.heal import GENERAL_FILE, PARTS_FILE, REPORT_FILE, run_heal
from vladva.toyworld.base.training import resolve_device
from vladva.train.compute import read_compute, write_compute

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
PRESET = CONFIG_DIR / "pretrain_smollm2.yaml"
QUICK_PRESET = CONFIG_DIR / "pretrain_smollm2_quick.yaml"
BASE_PARTS, BASE_DIR, VLADVA_DIR, DUAL_DIR = "base-parts", "base-lvlm", "vladva", "dual"
REPORT = "smollm2_report.json"
BASE_STAGES = ("heal", "align", "instruct")


def _log(msg: str) -> None:
    print(f"[smollm2] {msg}", flush=True)


def load_smollm2_config(
    config: Path | str | None = None, overrides: list[str] | None = None, quick: bool = False
) -> Smollm2RecipeConfig:
    """Defaults, the packaged preset (or the quick one), `config`, then `key=value` overrides."""
    from vladva.config import build_config, parse_overrides, read_config_file

    cfg = load_config(Smollm2RecipeConfig, QUICK_PRESET if quick else PRESET)
    if config is not None:
        cfg = build_config(Smollm2RecipeConfig, read_config_file(config), str(config), base=cfg)
    if overrides:
        cfg = build_config(Smollm2RecipeConfig, parse_overrides(overrides), "command line", base=cfg)
    return cfg


def _done(folder: Path) -> bool:
    return (folder / "compute.json").is_file()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def base_manifest(cfg: Smollm2RecipeConfig) -> dict:
    """The parts manifest: the LLM source (the wheel's GGUF by SHA-256, or a file / folder), layers,
    vision tower, seed and LoRA shape."""
    from vladva.assemble import llm as llm_mod

    if cfg.llm == "smollm2":
        llm = {
            "name": llm_mod.SMOLLM2_NAME,
            "package": llm_mod.SMOLLM2_PACKAGE,
            "file": llm_mod.SMOLLM2_FILE,
            "wheel": llm_mod.SMOLLM2_WHEEL,
            "sha256": llm_mod.SMOLLM2_SHA256,
        }
    else:
        source = llm_mod.resolve_llm(cfg.llm)
        llm = {"name": source.name, "spec": str(Path(cfg.llm).resolve()), "sha256": source.sha256}
    vision = cfg.vision if cfg.vision == "default" else str(Path(cfg.vision).resolve())
    return {
        "llm": llm,
        "layers": cfg.layers,
        "vision": vision,
        "seed": cfg.seed,
        "match_scale": True,
        "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "target_modules": list(cfg.lora.target_modules)},
    }


def _recipe_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_file() else CONFIG_DIR / name


def training_configs(cfg: Smollm2RecipeConfig, data: Path, out: Path):
    """`(VladVA TrainConfig, dual-encoder TrainConfig)`: the recipes with this run's base, data,
    output folders, seed and threads; the dual encoder gets the VladVA run's steps and contrastive
    batch (the same pairs, drawn in the same order)."""
    from vladva.train.config import TrainConfig

    common = [
        f"base_model={(out / BASE_DIR).resolve()}",
        f"data.train={(data / 'train.jsonl').resolve()}",
        f"data.val={(data / 'val.jsonl').resolve()}" if (data / "val.jsonl").is_file() else "data.val=null",
        f"seed={cfg.seed}",
        f"num_threads={cfg.threads}",
    ]
    vcfg = load_config(
        TrainConfig,
        _recipe_path(cfg.vladva_recipe),
        [*common, f"output_dir={(out / VLADVA_DIR).resolve()}", *cfg.vladva_overrides],
    )
    same_pairs = [
        f"optim.max_steps={vcfg.optim.max_steps}",
        f"data.contrastive_batch_size={vcfg.data.contrastive_batch_size}",
        f"data.caption_choice={vcfg.data.caption_choice}",
    ]
    dcfg = load_config(
        TrainConfig,
        _recipe_path(cfg.dual_recipe),
        [*common, f"output_dir={(out / DUAL_DIR).resolve()}", *same_pairs, *cfg.dual_overrides],
    )
    return vcfg, dcfg


def _train_run(tcfg, name: str) -> dict:
    """Train (or reuse / resume) one `vladva train` run; its summary."""
    from vladva.train.checkpoint import read_checkpoint_compute
    from vladva.train.trainer import train_or_reuse

    ckpt = train_or_reuse(tcfg, log=_log)
    evals = [
        json.loads(line)
        for line in (Path(tcfg.output_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if '"eval"' in line
    ]
    compute = read_checkpoint_compute(ckpt)
    return {
        "stage": name,
        "checkpoint": str(ckpt),
        "held_out_r1": [{"step": e["step"], **e["eval"]} for e in evals],
        "compute": {k: v for k, v in compute.to_dict().items() if k != "extra"} if compute else None,
    }


def run_smollm2(data_dir: Path | str, out_dir: Path | str, cfg: Smollm2RecipeConfig) -> dict:
    """Run the recipe's `cfg.stages` on `data_dir/train.jsonl` (checks on val.jsonl); returns the
    report also written to `out_dir/smollm2_report.json`."""
    from vladva.assemble.parts import build_base, write_parts
    from vladva.model.weights import read_safetensors
    from vladva.toyworld.base.smollm2.llava_stages import llava_checks, run_llava_stage

    data, out = Path(data_dir), Path(out_dir)
    if not (data / "train.jsonl").is_file():
        raise FileNotFoundError(f"{data / 'train.jsonl'}: no training manifest (vladva data shapes --out {data})")
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    # The base stages run in order; a pending stage not in `stages` stops them there.
    pending = [s for s in BASE_STAGES if not _done(out / s)]
    runnable = []
    for name in pending:
        if name not in cfg.stages:
            break
        runnable.append(name)
    build = not (out / BASE_DIR / REPORT_FILE).is_file() and len(runnable) == len(pending)
    train = val = vocab = None
    if runnable or build:
        train = load_split(data / "train.jsonl", cfg.max_train_records)
        val_path = data / "val.jsonl"
        val = load_split(val_path, cfg.max_val_records) if val_path.is_file() else None
        train.require_scenes("the SmolLM2 recipe")
        vocab = SceneVocab.from_scenes(train.scenes)
        _log(f"data: {len(train)} train / {len(val) if val else 0} val records; {torch.get_num_threads()} thread(s)")

    def general_pairs(heldout: bool) -> list[tuple[str, str]]:
        rows = [json.loads(x) for x in (out / GENERAL_FILE).read_text(encoding="utf-8").splitlines() if x.strip()]
        return [(r["prompt"], r["answer"]) for r in rows if r["heldout"] == heldout]

    def plain() -> list[str]:
        return [p for p, _ in general_pairs(True)][: cfg.checks.plain_prompts]

    runs = {
        "heal": lambda: run_heal(train, val, cfg, out, device),
        "align": lambda: run_llava_stage(
            "align", cfg.align, train, val, vocab, cfg, out, device, out / "heal" / PARTS_FILE,
            general_pairs(False), plain(),
        ),
        "instruct": lambda: run_llava_stage(
            "instruct", cfg.instruct, train, val, vocab, cfg, out, device, out / "align" / PARTS_FILE,
            general_pairs(False), plain(), check=False,  # the built base is checked instead
        ),
    }  # fmt: skip
    for name in BASE_STAGES:
        folder = out / name
        if _done(folder):
            _log(f"{name}: finished earlier, reusing {folder}")
            continue
        if name not in runnable:
            _log(f"{name}: not in stages; stopping the base here")
            break
        _log(f"{name}: {'resuming' if (folder / 'stage_state.pt').is_file() else 'starting'}")
        runs[name]()
        _log(f"{name}: done ({read_compute(folder / 'compute.json')[-1].seconds:.0f} s)")
    if build:
        parts = read_safetensors(out / "instruct" / PARTS_FILE)
        write_parts(out / BASE_PARTS, parts, base_manifest(cfg))
        stages = [read_compute(out / s / "compute.json")[-1] for s in BASE_STAGES]
        write_compute(out / BASE_PARTS / "compute.json", stages)
        build_base(out / BASE_PARTS, out / BASE_DIR)
        write_compute(out / BASE_DIR / "compute.json", stages)
        _log(f"built {out / BASE_DIR} from {out / BASE_PARTS}")
        report = {"stage": "base"}
        if val is not None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            base = AutoModelForImageTextToText.from_pretrained(out / BASE_DIR)
            processor = AutoProcessor.from_pretrained(out / BASE_DIR)
            report.update(llava_checks(base, processor, val, vocab, cfg, device, plain()))
        (out / BASE_DIR / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    vcfg, dcfg = training_configs(cfg, data, out)
    trained = {}
    for name, tcfg in (("vladva", vcfg), ("dual", dcfg)):
        if name in cfg.stages:
            if not (out / BASE_DIR / REPORT_FILE).is_file():
                raise ValueError(
                    f"stage {name!r} needs the base LVLM {out / BASE_DIR}: run heal, align, instruct first"
                )
            pairs = tcfg.data.contrastive_batch_size
            _log(f"{name}: {tcfg.optim.max_steps} steps of {pairs} pairs into {tcfg.output_dir}")
            trained[name] = _train_run(tcfg, name)
    report = {
        "config": config_to_dict(cfg),
        "heal": _read_json(out / "heal" / REPORT_FILE),
        "align": _read_json(out / "align" / REPORT_FILE),
        "instruct": _read_json(out / "instruct" / REPORT_FILE),
        "base": _read_json(out / BASE_DIR / REPORT_FILE),
        **trained,
        "seconds_this_run": round(time.perf_counter() - t0, 1),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _log(f"wrote {out / REPORT}")
    return report


def _copy_weights(run_dir: Path, dest: Path) -> None:
    """A run's final checkpoint as a weights folder (no trainer state), its base recorded as "smollm2"."""
    from vladva.model.weights import CONFIG_FILE, LORA_SUBDIR, WEIGHTS_FILE, resolve_weights_dir
    from vladva.pretrained import SMOLLM2_BASE
    from vladva.train.compute import COMPUTE_FILE

    ckpt = resolve_weights_dir(run_dir)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(ckpt / WEIGHTS_FILE, dest / WEIGHTS_FILE)
    if (ckpt / LORA_SUBDIR).is_dir():
        shutil.copytree(ckpt / LORA_SUBDIR, dest / LORA_SUBDIR)
    if (ckpt / COMPUTE_FILE).is_file():
        shutil.copy2(ckpt / COMPUTE_FILE, dest / COMPUTE_FILE)
    meta = json.loads((ckpt / CONFIG_FILE).read_text(encoding="utf-8"))
    meta["base_model"] = SMOLLM2_BASE
    (dest / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def ship_smollm2(out_dir: Path | str, dest: Path | str | None = None) -> dict[str, int]:
    """Copy the small trained products of `run_smollm2` into `dest` (default: the package's
    pretrained/smollm2/). Returns the size in bytes of each file copied."""
    from vladva.assemble.parts import MANIFEST_FILE
    from vladva.assemble.parts import PARTS_FILE as BASE_PARTS_FILE
    from vladva.pretrained import PRETRAINED_ROOT, SMOLLM2_PARTS

    out = Path(out_dir)
    dest = Path(dest) if dest is not None else PRETRAINED_ROOT / SMOLLM2_PARTS
    if not (out / BASE_PARTS / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{out / BASE_PARTS}: no base parts yet; run the recipe's stages first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_FILE, BASE_PARTS_FILE, "compute.json"):
        shutil.copy2(out / BASE_PARTS / name, dest / name)
    for name in (REPORT,):
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    for run in (VLADVA_DIR, DUAL_DIR):
        if (out / run / "checkpoints").is_dir():
            _copy_weights(out / run, dest / run)
    return {str(p.relative_to(dest)): p.stat().st_size for p in sorted(dest.rglob("*")) if p.is_file()}
