"""The whole base-model recipe: tokenizer, vision tower, base LVLM, text-only control, CLIP
baseline, then the held-out checks. `run_pretrain` writes the shipped layout::

    OUT/config.yaml              resolved config
    OUT/pretrain_report.json     probes, caption/instruction accuracy, zero-shot summary R@1, compute
    OUT/vision-tower/            CLIPVisionModel + image processor + tokenizer + compute.json
    OUT/base-lvlm/               LlavaForConditionalGeneration + LlavaProcessor + compute.json
    OUT/clip-baseline/           CLIPModel + tokenizer + image processor + compute.json

Stages already finished in OUT (their compute.json exists) are reused with `resume=True`, so a
long run can be split over several shorter ones (e.g. on a GPU with a per-command time limit).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vladva.config import save_config
from vladva.toyworld.base.clip_baseline import ClipBaselineConfig, ClipBaselineEmbedder, train_clip_baseline
from vladva.toyworld.base.data import SceneVocab, Split, load_split, make_image_processor
from vladva.toyworld.base.lvlm import (
    ExampleBank,
    LvlmPretrainConfig,
    build_lvlm,
    build_text_lm,
    num_image_tokens,
    train_generative,
)
from vladva.toyworld.base.tokenizer import TokenizerConfig, train_word_tokenizer
from vladva.toyworld.base.training import resolve_device
from vladva.toyworld.base.vision import VisionPretrainConfig, pooled_patch_features, train_vision_tower
from vladva.train.compute import StageCompute, read_compute, write_compute

STAGES = ("vision", "lvlm", "text_lm", "clip")
VISION_DIR, LVLM_DIR, CLIP_DIR = "vision-tower", "base-lvlm", "clip-baseline"


@dataclass
class PretrainChecksConfig:
    """Sizes of the held-out checks (val images); 0 skips a check."""

    probe_train_images: int = 4000
    probe_val_images: int = 1000
    caption_images: int = 500
    instruction_images: int = 300
    retrieval_images: int = 300
    generated_examples: int = 4


@dataclass
class PretrainConfig:
    """The base-model recipe. `device`: cpu, cuda or auto; `threads`: CPU threads for torch;
    `stages`: which stages to train (the others are loaded from OUT if there, else skipped)."""

    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    threads: int = 2
    max_train_records: int = 0  # 0: all
    max_val_records: int = 0
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    resume: bool = True
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    vision: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    lvlm: LvlmPretrainConfig = field(default_factory=LvlmPretrainConfig)
    text_lm_steps: int = 0  # 0: as many as the LVLM
    clip: ClipBaselineConfig = field(default_factory=ClipBaselineConfig)
    checks: PretrainChecksConfig = field(default_factory=PretrainChecksConfig)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"stages: unknown stage {bad[0]!r}; known: {', '.join(STAGES)}")
        if self.device not in ("cpu", "auto") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be cpu, cuda or auto, got {self.device!r}")


def _texts_for_tokenizer(split: Split) -> list[str]:
    out = []
    for r in split.records:
        out.extend(r.captions)
        if r.long_caption:
            out.append(r.long_caption)
        for qa in (r.meta.get("qa") or []) if isinstance(r.meta, dict) else []:
            out.extend(str(x) for x in qa)
    return out


def _done(folder: Path) -> bool:
    return (folder / "compute.json").is_file()


def _log(msg: str) -> None:
    print(f"[vladva base] {msg}", flush=True)


def _prepare_run(data_dir: Path | str, out_dir: Path | str, cfg: PretrainConfig):
    """Check the data, pick the device and threads, save the resolved config ->
    (out folder, train manifest, val manifest, device)."""
    data_dir, out = Path(data_dir), Path(out_dir)
    train_path, val_path = data_dir / "train.jsonl", data_dir / "val.jsonl"
    if not train_path.is_file():
        raise FileNotFoundError(
            f"{train_path}: no training manifest (make one with `vladva data shapes --out {data_dir}`)"
        )
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.threads))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out, train_path, val_path, device


def run_pretrain(data_dir: Path | str, out_dir: Path | str, cfg: PretrainConfig) -> dict:
    """Run the recipe on `data_dir/train.jsonl` (checks on `data_dir/val.jsonl` when present).
    Returns the report dict also written to `out_dir/pretrain_report.json`."""
    from transformers import AutoTokenizer, CLIPVisionModel, LlavaForConditionalGeneration, LlavaProcessor

    out, train_path, val_path, device = _prepare_run(data_dir, out_dir, cfg)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    t0 = time.perf_counter()
    train = load_split(train_path, cfg.max_train_records, cfg.vision.tower.image_size)
    val = load_split(val_path, cfg.max_val_records, cfg.vision.tower.image_size) if val_path.is_file() else None
    _log(
        f"loaded {len(train)} train / {len(val) if val else 0} val records "
        f"in {time.perf_counter() - t0:.1f}s on {device}"
    )
    train.require_scenes("the base-model recipe")
    vocab = SceneVocab.from_scenes(train.scenes)
    vdir, ldir, cdir = out / VISION_DIR, out / LVLM_DIR, out / CLIP_DIR
    report: dict = {
        "data": str(Path(data_dir)),
        "train_records": len(train),
        "val_records": len(val) if val else 0,
        "device": str(device),
        "vocab": vocab.to_dict(),
    }

    # Tokenizer + stage 1: the vision tower everything else starts from.
    if cfg.resume and _done(vdir):
        _log(f"reusing {vdir}")
        tower = CLIPVisionModel.from_pretrained(vdir)
        tokenizer = AutoTokenizer.from_pretrained(vdir)
        vision_compute = read_compute(vdir / "compute.json")[0]
    elif "vision" in cfg.stages:
        tokenizer = train_word_tokenizer(_texts_for_tokenizer(train), cfg.tokenizer)
        _log(f"tokenizer: {len(tokenizer)} tokens")
        tower, vision_compute = train_vision_tower(train, vocab, cfg.vision, device, cfg.seed, cfg.bf16)
        tower.save_pretrained(vdir)
        tokenizer.save_pretrained(vdir)
        make_image_processor(cfg.vision.tower.image_size).save_pretrained(vdir)
        (vdir / "vocab.json").write_text(json.dumps(vocab.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_compute(vdir / "compute.json", [vision_compute])
    else:
        raise ValueError(f"stage 'vision' is not in stages and {vdir} has no finished tower to reuse")
    tokenizer.padding_side = cfg.tokenizer.padding_side
    report["tokenizer_size"] = len(tokenizer)
    if val is not None and cfg.checks.probe_train_images > 0:
        report["vision_probes"] = _vision_probes(tower, train, val, vocab, cfg, device)
        _log(f"vision probes: {report['vision_probes']}")

    # Stage 3: the base LVLM, and its text-only control.
    n_img = num_image_tokens(tower.config)
    bank = ExampleBank(train, tokenizer, vocab, n_img)
    lvlm = None
    if cfg.resume and _done(ldir):
        _log(f"reusing {ldir}")
        lvlm = LlavaForConditionalGeneration.from_pretrained(ldir)
    elif "lvlm" in cfg.stages:
        lvlm = build_lvlm(tower, tokenizer, cfg.lvlm.lm)
        lvlm, compute = train_generative(lvlm, bank, cfg.lvlm, device, cfg.seed, cfg.bf16, stage="lvlm")
        lvlm.save_pretrained(ldir)
        processor = LlavaProcessor(
            image_processor=make_image_processor(cfg.vision.tower.image_size),
            tokenizer=tokenizer,
            patch_size=tower.config.patch_size,
            vision_feature_select_strategy="default",
            image_token="<image>",
            num_additional_image_tokens=1,
        )
        processor.save_pretrained(ldir)
        write_compute(ldir / "compute.json", [vision_compute, compute])
    lvlm_compute = read_compute(ldir / "compute.json")[-1] if _done(ldir) else None

    text_lm = None
    text_lm_compute = None
    if "text_lm" in cfg.stages and val is not None and cfg.checks.caption_images > 0:
        steps = cfg.text_lm_steps or cfg.lvlm.steps
        tcfg = dataclasses.replace(cfg.lvlm, steps=steps)
        text_lm, text_lm_compute = train_generative(
            build_text_lm(tokenizer, cfg.lvlm.lm),
            ExampleBank(train, tokenizer, vocab, n_img),
            tcfg,
            device,
            cfg.seed,
            cfg.bf16,
            stage="text_lm",
            text_only=True,
        )

    # Stage 2: the CLIP-style baseline, given at least the LVLM stage's wall time.
    clip = None
    if cfg.resume and _done(cdir):
        _log(f"reusing {cdir}")
        clip = ClipBaselineEmbedder.from_pretrained(cdir)
    elif "clip" in cfg.stages:
        min_seconds = lvlm_compute.seconds if (cfg.clip.match_lvlm_seconds and lvlm_compute is not None) else 0.0
        clip, compute = train_clip_baseline(train, tokenizer, tower, cfg.clip, device, cfg.seed, cfg.bf16, min_seconds)
        clip.save_pretrained(cdir)
        write_compute(cdir / "compute.json", [vision_compute, compute])

    report["compute"] = {
        name: [s.to_dict() for s in read_compute(d / "compute.json")]
        for name, d in ((VISION_DIR, vdir), (LVLM_DIR, ldir), (CLIP_DIR, cdir))
        if _done(d)
    }
    for s in report["compute"].values():
        for st in s:
            st.get("extra", {}).pop("loss_curve", None)
    if text_lm_compute is not None:
        report["compute"]["text_lm"] = text_lm_compute.to_dict()
        report["compute"]["text_lm"]["extra"].pop("loss_curve", None)
    if val is not None:
        report.update(_held_out_checks(lvlm, text_lm, clip, tokenizer, val, vocab, n_img, cfg, device, ldir))
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _log(f"wrote {out / 'pretrain_report.json'}")
    return report


def _vision_probes(tower, train: Split, val: Split, vocab: SceneVocab, cfg: PretrainConfig, device) -> dict:
    from vladva.toyworld.base.probes import probe_features

    ntr = min(len(train), cfg.checks.probe_train_images)
    nva = min(len(val), cfg.checks.probe_val_images)
    ftr = pooled_patch_features(tower, train.images[:ntr], device=device)
    fva = pooled_patch_features(tower, val.images[:nva], device=device)
    tower.cpu()
    out = probe_features(ftr, train.scenes[:ntr], fva, val.scenes[:nva], vocab)
    out["train_images"], out["val_images"] = ntr, nva
    return out


def _held_out_checks(
    lvlm, text_lm, clip, tokenizer, val: Split, vocab, n_img, cfg: PretrainConfig, device, ldir: Path
) -> dict:
    from vladva.toyworld.base import checks

    c = cfg.checks
    out: dict = {}
    bank = ExampleBank(val, tokenizer, vocab, n_img)
    cats = checks.word_categories(vocab)
    idx = lambda n: list(range(min(n, len(val))))
    if lvlm is not None:
        if c.caption_images > 0:
            out["caption_token_accuracy"] = {
                "lvlm": checks.caption_token_accuracy(lvlm, bank, idx(c.caption_images), cats, True, device)
            }
            if text_lm is not None:
                out["caption_token_accuracy"]["text_lm"] = checks.caption_token_accuracy(
                    text_lm, bank, idx(c.caption_images), cats, False, device
                )
            _log(
                "caption token accuracy: "
                f"{ {k: v['all']['accuracy'] for k, v in out['caption_token_accuracy'].items()} }"
            )
        if c.instruction_images > 0:
            out["instruction_accuracy"] = checks.instruction_accuracy(lvlm, bank, idx(c.instruction_images), device)
            _log(f"instruction accuracy: {out['instruction_accuracy'].get('all')}")
        if c.generated_examples > 0:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(ldir)
            out["generated_examples"] = checks.generate_examples(
                lvlm, processor, val, idx(c.generated_examples), device
            )
        if c.retrieval_images > 1:
            out["summary_prompt_zero_shot"] = checks.summary_prompt_zero_shot(
                lvlm, bank, idx(c.retrieval_images), device
            )
            _log(f"zero-shot summary prompt: {out['summary_prompt_zero_shot']}")
        lvlm.cpu()
    if clip is not None and c.retrieval_images > 1:
        clip.model.to(device)
        clip.device = device
        out["clip_baseline_retrieval"] = checks.clip_retrieval(clip, val, idx(c.retrieval_images))
        clip.model.cpu()
        clip.device = torch.device("cpu")
        _log(f"CLIP baseline retrieval: {out['clip_baseline_retrieval']}")
    return out


def train_baseline_only(
    data_dir: Path | str, out_dir: Path | str, cfg: PretrainConfig, vision_dir: Path | str | None = None
) -> dict:
    """`vladva baseline train`: the CLIP baseline alone, on a given stage-1 tower (a vision-tower
    folder or a base-LVLM folder, whose tower is taken) or, without one, a freshly pretrained tower.
    Writes the CLIP folder at `out_dir` and returns its held-out retrieval check."""
    out, train_path, val_path, device = _prepare_run(data_dir, out_dir, cfg)
    train = load_split(train_path, cfg.max_train_records, cfg.vision.tower.image_size)
    stages: list[StageCompute] = []
    if vision_dir is not None:
        tower, tokenizer = _load_tower(Path(vision_dir))
        if (Path(vision_dir) / "compute.json").is_file():
            stages.append(read_compute(Path(vision_dir) / "compute.json")[0])
    else:
        train.require_scenes("vision-tower pretraining (or pass --vision DIR)")
        vocab = SceneVocab.from_scenes(train.scenes)
        tokenizer = train_word_tokenizer(_texts_for_tokenizer(train), cfg.tokenizer)
        tower, vc = train_vision_tower(train, vocab, cfg.vision, device, cfg.seed, cfg.bf16)
        stages.append(vc)
    _check_vocabulary(tokenizer, train)
    clip, compute = train_clip_baseline(train, tokenizer, tower, cfg.clip, device, cfg.seed, cfg.bf16)
    clip.save_pretrained(out)
    write_compute(out / "compute.json", stages + [compute])
    result: dict = {"compute": [s.to_dict() for s in stages + [compute]]}
    if val_path.is_file() and cfg.checks.retrieval_images > 1:
        from vladva.toyworld.base.checks import clip_retrieval

        val = load_split(val_path, cfg.max_val_records, cfg.vision.tower.image_size)
        result["retrieval"] = clip_retrieval(clip, val, list(range(min(len(val), cfg.checks.retrieval_images))))
    for s in result["compute"]:
        s.get("extra", {}).pop("loss_curve", None)
    (out / "baseline_report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _load_tower(path: Path):
    """A CLIPVisionModel and its tokenizer from a vision-tower folder or a base-LVLM folder."""
    from transformers import AutoConfig, AutoTokenizer, CLIPVisionModel

    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no config.json; --vision needs a vision-tower or base-lvlm folder from `vladva base pretrain`"
        )
    kind = AutoConfig.from_pretrained(path).model_type
    if kind == "clip_vision_model":
        tower = CLIPVisionModel.from_pretrained(path)
    elif kind == "llava":
        from transformers import LlavaForConditionalGeneration

        lvlm = LlavaForConditionalGeneration.from_pretrained(path)
        tower = CLIPVisionModel(lvlm.config.vision_config)
        tower.load_state_dict(lvlm.model.vision_tower.state_dict())
    else:
        raise ValueError(f"{path}: model type {kind!r} is neither a CLIP vision tower nor a LLaVA model")
    return tower.eval(), AutoTokenizer.from_pretrained(path)


def _check_vocabulary(tokenizer, train: Split, limit: int = 2000) -> None:
    """A tower's tokenizer trained on other data maps new words to <unk>: warn with the rate."""
    texts = [c for r in train.records[:limit] for c in r.captions]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids)
    unk = sum(x.count(tokenizer.unk_token_id) for x in ids)
    if total and unk / total > 0.01:
        _log(f"warning: {100 * unk / total:.1f}% of caption tokens are <unk> for the given tokenizer")
