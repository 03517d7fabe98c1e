"""Stages 1 (align) and 2 (instruct): LLaVA's recipe on the shapes world, over the healed LLM.

Each stage assembles the LVLM afresh (`assemble_llava`: same seed, so the same projector start
and `<image>` row), attaches LoRA to its language model, loads the previous stage's parts
(LoRA factors, final norm, projector) and trains through the one stage loop
(`vladva.toyworld.base.stage.run_stage`) with the generative tasks of the 4M base
(`vladva.toyworld.base.lvlm`: image -> long / short caption, instruction QA, one-word summaries
of images and sentences) in the chat format, plus the full LLM's plain-language answers. The
projector trains at `lr`, LoRA and the norm at `lora_lr` (0: frozen). The loss is the
cross-entropy on answer tokens, the LM head run only at those positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vladva.assemble.llava import assemble_llava
from vladva.assemble.llm import load_llm
from vladva.assemble.parts import load_parts, trained_parts
from vladva.model.lora import apply_lora
from vladva.model.weights import read_safetensors
from vladva.toyworld.base import checks
from vladva.toyworld.base.data import SceneVocab, Split
from vladva.toyworld.base.lvlm import ExampleBank, answer_loss, generative_step, num_image_tokens
from vladva.toyworld.base.smollm2.config import LlavaStageConfig, Smollm2RecipeConfig
from vladva.toyworld.base.smollm2.heal import PARTS_FILE, REPORT_FILE, generate_answers
from vladva.toyworld.base.stage import clear_stage_state, run_stage
from vladva.toyworld.base.training import StepBudget
from vladva.train.compute import write_compute


def build_stage_model(cfg: Smollm2RecipeConfig, parts: dict[str, torch.Tensor] | None):
    """`(LLaVA with LoRA attached to its LM, processor)`, the previous stage's parts loaded."""
    model, processor = assemble_llava(load_llm(cfg.llm, cfg.layers or None), cfg.vision, seed=cfg.seed)
    apply_lora(model, model.model.language_model, cfg.lora)
    if parts:
        load_parts(model, model.model.language_model, parts, merge_scaling=None)
    return model, processor


def stage_groups(model, scfg: LlavaStageConfig) -> list[tuple[list, float]]:
    """Projector at `lr`; LoRA and the LM's final norm at `lora_lr`."""
    projector = list(model.model.multi_modal_projector.parameters())
    lm = model.model.language_model
    lora = [p for n, p in lm.named_parameters() if "lora_" in n] + [lm.norm.weight]
    for p in projector + lora:
        p.requires_grad_(True)
    return [(projector, scfg.lr), (lora, scfg.lora_lr)]


def reference_4m() -> dict:
    """The shipped 4M base's held-out checks (src/vladva/pretrained/pretrain_report.json), to report beside."""
    from vladva.pretrained import PRETRAINED_ROOT

    path = PRETRAINED_ROOT / "pretrain_report.json"
    if not path.is_file():
        return {}
    r = json.loads(path.read_text(encoding="utf-8"))
    return {
        "caption_token_accuracy": r.get("caption_token_accuracy", {}).get("lvlm", {}).get("all"),
        "instruction_accuracy": r.get("instruction_accuracy", {}).get("all"),
        "summary_prompt_zero_shot": r.get("summary_prompt_zero_shot"),
        "note": "the 4M base's word-level tokens; its val subset sizes are in its pretrain_report.json",
    }


@torch.no_grad()
def heldout_caption_ce(model, bank: ExampleBank, indices: list[int], device, batch_size: int = 8) -> dict:
    """Cross-entropy (nats per answer token, with the image) of the long and the first short caption."""
    from vladva.toyworld.base.lvlm import IGNORE, collate
    from vladva.toyworld.base.tokenizer import LONG_CAPTION_PROMPT, SHORT_CAPTION_PROMPT

    model.to(device).eval()
    out = {}
    for key, prompt, answer in (
        ("long", LONG_CAPTION_PROMPT, lambda r: r.long_caption),
        ("short", SHORT_CAPTION_PROMPT, lambda r: r.captions[0]),
    ):
        rows = [i for i in indices if answer(bank.split.records[i])]
        total, tokens = 0.0, 0
        for s in range(0, len(rows), batch_size):
            exs = [bank.image_example(i, prompt, answer(bank.split.records[i])) for i in rows[s : s + batch_size]]
            batch = collate(exs, bank.pad, bank.split.images, device)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(answer_loss(model, batch)) * n
            tokens += n
        out[key] = round(total / tokens, 4) if tokens else None
    return out


@torch.no_grad()
def llava_checks(
    model, processor, val: Split, vocab: SceneVocab, cfg: Smollm2RecipeConfig, device, plain_prompts: list[str]
) -> dict:
    """Held-out caption token accuracy (with / without the image), instruction accuracy, the
    zero-shot summary-prompt retrieval, generated captions and plain-language answers."""
    c = cfg.checks
    n_img = num_image_tokens(model.config.vision_config)
    bank = ExampleBank(val, processor.tokenizer, vocab, n_img, chat=True)
    cats = checks.word_categories(vocab)
    idx = lambda n: list(range(min(n, len(val))))
    model.to(device).eval()
    out: dict = {}
    if c.caption_images > 0:
        out["caption_ce"] = heldout_caption_ce(model, bank, idx(c.caption_images), device)
        out["caption_token_accuracy"] = {
            "with_image": checks.caption_token_accuracy(model, bank, idx(c.caption_images), cats, True, device, 8),
            "without_image": checks.caption_token_accuracy(model, bank, idx(c.caption_images), cats, False, device, 8),
        }
    if c.instruction_images > 0:
        out["instruction_accuracy"] = checks.instruction_accuracy(model, bank, idx(c.instruction_images), device, 16)
    if c.retrieval_images > 1:
        out["summary_prompt_zero_shot"] = checks.summary_prompt_zero_shot(
            model, bank, idx(c.retrieval_images), device, 16
        )
    if c.generated_examples > 0:
        out["generated_examples"] = checks.generate_examples(
            model, processor, val, idx(c.generated_examples), device, c.max_new_tokens
        )
    if plain_prompts:
        answers = generate_answers(model, processor.tokenizer, plain_prompts, c.max_new_tokens)[0]
        out["plain_language"] = [{"prompt": p, "answer": a} for p, a in zip(plain_prompts, answers)]
    out["reference_4m_base"] = reference_4m()
    return out


def run_llava_stage(
    name: str,
    scfg: LlavaStageConfig,
    train: Split,
    val: Split | None,
    vocab: SceneVocab,
    cfg: Smollm2RecipeConfig,
    out: Path,
    device: torch.device,
    parts_in: Path,
    general: list[tuple[str, str]],
    plain_prompts: list[str],
    check: bool = True,
) -> dict:
    """One LLaVA stage into `out/NAME/` (parts.safetensors, compute.json, report.json,
    metrics.jsonl), starting from the parts file `parts_in`; resumable. Returns the report."""
    stage_dir = out / name
    model, processor = build_stage_model(cfg, read_safetensors(parts_in))
    groups = stage_groups(model, scfg)
    n_img = num_image_tokens(model.config.vision_config)
    bank = ExampleBank(train, processor.tokenizer, vocab, n_img, chat=True, general=general)
    sizes = {"long": scfg.batch_long, "short": scfg.batch_short, "text": scfg.batch_text}
    step = generative_step(model, bank, sizes, scfg.tasks, device, False, answer_loss)
    budget = StepBudget(scfg.steps, scfg.warmup, scfg.max_seconds, clock=cfg.clock)
    compute = run_stage(
        name,
        model,
        groups,
        step,
        budget,
        device,
        cfg.seed,
        scfg.weight_decay,
        scfg.log_every,
        stage_dir,
        scfg.checkpoint_every,
    )
    compute.extra["trainable_params"] = sum(p.numel() for g, lr in groups if lr > 0 for p in g)
    report: dict = {"stage": name, "compute": {k: v for k, v in compute.to_dict().items() if k != "extra"}}
    if check and val is not None:
        report.update(llava_checks(model, processor, val, vocab, cfg, device, plain_prompts))
    from safetensors.torch import save_file

    save_file(trained_parts(model, model.model.language_model), stage_dir / PARTS_FILE)
    (stage_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_compute(stage_dir / "compute.json", [compute])
    clear_stage_state(stage_dir)
    return report
