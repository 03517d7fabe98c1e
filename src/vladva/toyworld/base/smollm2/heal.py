"""Stage 0, "heal": the truncated LLM made a language model again by distillation.

The first K decoder layers of SmolLM2 followed by its final norm and LM head are not a language
model (next-token cross-entropy ~17 nats, worse than uniform: the head reads layer-K states
wrongly). Text-only, the student (LoRA r16 on every linear layer + the final norm) learns the full
model's next-token distribution: forward KL(teacher || student) at every real position of ChatML
sequences: the world's short and long captions (as answers to the caption prompts, without the
image), its instruction QA, and plain-language answers the full model wrote once
(`general_text.jsonl`). Reported before and after: held-out caption cross-entropy, held-out KL,
and greedy answers to held-out plain-language prompts from the full model and the student.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from vladva.assemble.llava import chat_template_for
from vladva.assemble.llm import load_llm
from vladva.assemble.parts import trained_parts
from vladva.model.lora import apply_lora
from vladva.toyworld.base.data import Split
from vladva.toyworld.base.lvlm import IGNORE, ExampleBank, _qa_pairs, answer_loss, collate
from vladva.toyworld.base.smollm2.config import GeneralTextConfig, HealConfig, Smollm2RecipeConfig
from vladva.toyworld.base.smollm2.prompts import general_prompt_split
from vladva.toyworld.base.stage import StepOutput, clear_stage_state, run_stage
from vladva.toyworld.base.tokenizer import LONG_CAPTION_PROMPT, SHORT_CAPTION_PROMPT
from vladva.toyworld.base.training import StepBudget
from vladva.train.compute import write_compute

GENERAL_FILE = "general_text.jsonl"
PARTS_FILE = "parts.safetensors"
REPORT_FILE = "report.json"


def chat_tokenizer(tokenizer):
    """The LLM's tokenizer with the ChatML template the LVLM uses (no injected system prompt)."""
    tokenizer.chat_template = chat_template_for(tokenizer)
    if tokenizer.chat_template is None:
        raise ValueError("the SmolLM2 recipe needs a ChatML tokenizer (<|im_start|> / <|im_end|>)")
    return tokenizer


def user_turns(tokenizer, prompts: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int, sample: bool = False, temperature: float = 1.0
) -> tuple[list[str], list[bool]]:
    """Answers of a causal LM (or LLaVA, text only) to chat user turns, batched with left padding:
    `(texts, finished)`, finished = ended with the end token rather than the length limit."""
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(user_turns(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = side
    device = model.get_input_embeddings().weight.device
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    options = {"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}
    out = model.generate(
        input_ids=enc["input_ids"].to(device),
        attention_mask=enc["attention_mask"].to(device),
        max_new_tokens=max_new_tokens,
        eos_token_id=end,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=sample,
        **options,
    )[:, enc["input_ids"].shape[1] :].cpu()
    texts = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    return texts, [bool((row == end).any()) for row in out]


def trim_to_sentence(text: str) -> str:
    """An answer cut by the length limit, up to its last full sentence (whole when it has none)."""
    cut = max(text.rfind(c) for c in ".!?")
    return text[: cut + 1] if cut > 0 else text


def general_text(teacher, tokenizer, cfg: GeneralTextConfig, out: Path, seed: int) -> list[dict]:
    """The full LLM's answers to the plain-language prompts, written once to `out` (JSONL:
    prompt, answer, heldout, finished) and read from there after."""
    if out.is_file():
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    train, heldout = general_prompt_split()
    if cfg.max_prompts:
        train, heldout = train[: cfg.max_prompts], heldout[: max(1, cfg.max_prompts // 4)]
    jobs = [(p, False) for p in train for _ in range(cfg.completions_per_prompt)] + [(p, True) for p in heldout]
    torch.manual_seed(seed)
    rows = []
    for s in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[s : s + cfg.batch_size]
        texts, finished = generate_answers(
            teacher, tokenizer, [p for p, _ in chunk], cfg.max_new_tokens, sample=True, temperature=cfg.temperature
        )
        for (prompt, held), text, done in zip(chunk, texts, finished):
            rows.append(
                {
                    "prompt": prompt,
                    "answer": text if done else trim_to_sentence(text),
                    "heldout": held,
                    "finished": done,
                }
            )
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    return rows


def distillation_sampler(bank: ExampleBank, general: list[tuple[str, str]], cfg: HealConfig):
    """`rng -> one text example` drawn by the heal task weights (captions and QA without the image)."""
    split = bank.split
    tasks = [
        ("short", cfg.short_caption),
        ("long", cfg.long_caption if bank.long_idx else 0.0),
        ("qa", cfg.instruction),
        ("general", cfg.general if general else 0.0),
    ]
    names, weights = zip(*[(n, w) for n, w in tasks if w > 0])

    def sample(rng: random.Random) -> dict:
        task = rng.choices(names, weights=weights)[0]
        if task == "general":
            return bank.text_example(None, *rng.choice(general))
        if task == "long":
            return bank.text_example(None, LONG_CAPTION_PROMPT, split.records[rng.choice(bank.long_idx)].long_caption)
        r = split.records[rng.randrange(len(split))]
        qa = _qa_pairs(r)
        if task == "qa" and qa:
            return bank.text_example(None, *rng.choice(qa))
        return bank.text_example(None, SHORT_CAPTION_PROMPT, rng.choice(r.captions))

    return sample


def _cut(example: dict, max_tokens: int) -> dict:
    return {k: v[:max_tokens] if isinstance(v, list) else v for k, v in example.items()}


def distillation_kl(student, teacher, batch: dict) -> torch.Tensor:
    """Token-mean KL(teacher || student) of the next-token distributions at every position whose
    next token is real. Both models are causal LMs over the same vocabulary."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    keep = batch["attention_mask"][:, 1:].bool()
    with torch.no_grad():
        t_hidden = teacher.model(**inputs).last_hidden_state[:, :-1][keep]
        t_logp = torch.log_softmax(teacher.lm_head(t_hidden).float(), dim=-1)
    s_hidden = student.model(**inputs).last_hidden_state[:, :-1][keep]
    s_logp = torch.log_softmax(student.lm_head(s_hidden).float(), dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()


@torch.no_grad()
def heldout_scores(student, teacher, caption_batches: list[dict], kl_batches: list[dict]) -> dict:
    """Caption cross-entropy (nats/token, on the answers) of student and teacher, and the student's KL."""
    student.eval()
    ce = [float(answer_loss(student, b)) for b in caption_batches]
    ce_t = [float(answer_loss(teacher, b)) for b in caption_batches]
    kl = [float(distillation_kl(student, teacher, b)) for b in kl_batches]
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None
    return {"caption_ce": mean(ce), "teacher_caption_ce": mean(ce_t), "distill_kl": mean(kl)}


def _batches(examples: list[dict], pad: int, size: int = 16) -> list[dict]:
    return [collate(examples[s : s + size], pad, None, torch.device("cpu")) for s in range(0, len(examples), size)]


def heldout_sets(val: Split, tokenizer, general_rows: list[dict], cfg: HealConfig) -> tuple[list[dict], list[dict]]:
    """Held-out batches: val long captions as answers (caption CE), and a mix of val world text and
    held-out plain-language answers (KL)."""
    bank = ExampleBank(val, tokenizer, None, 0, chat=True)
    n = cfg.eval_sequences
    caps = [
        _cut(bank.text_example(None, LONG_CAPTION_PROMPT, val.records[i].long_caption), cfg.max_tokens)
        for i in bank.long_idx[: max(1, n // 2)]
    ]
    held = [(r["prompt"], r["answer"]) for r in general_rows if r["heldout"]]
    sampler = distillation_sampler(bank, held, cfg)
    rng = random.Random(1234)
    mixed = [_cut(sampler(rng), cfg.max_tokens) for _ in range(max(1, n // 2))]
    return _batches(caps, bank.pad), _batches(mixed, bank.pad)


def run_heal(train: Split, val: Split | None, cfg: Smollm2RecipeConfig, out: Path, device: torch.device) -> dict:
    """Stage 0 into `out/heal/` (parts.safetensors: LoRA factors + norm; compute.json; report.json;
    metrics.jsonl); resumable. Returns the report."""
    stage_dir = out / "heal"
    h = cfg.heal
    teacher, tok = load_llm(cfg.llm, h.teacher_layers or None)
    teacher.requires_grad_(False)
    teacher.to(device).eval()
    tok = chat_tokenizer(tok)
    rows = general_text(teacher, tok, cfg.general, out / GENERAL_FILE, cfg.seed)
    held_prompts = [r["prompt"] for r in rows if r["heldout"]][: cfg.checks.plain_prompts]

    student, stok = load_llm(cfg.llm, cfg.layers or None)
    stok = chat_tokenizer(stok)
    apply_lora(student, student.model, cfg.lora)
    student.model.norm.weight.requires_grad_(True)
    student.to(device)
    trainable = [p for p in student.parameters() if p.requires_grad]

    caption_batches, kl_batches = heldout_sets(val or train, stok, rows, h) if val is not None else ([], [])
    before_path = stage_dir / "before.json"
    if before_path.is_file():
        before = json.loads(before_path.read_text(encoding="utf-8"))
    else:
        before = heldout_scores(student, teacher, caption_batches, kl_batches) if caption_batches else {}
        before["answers"] = generate_answers(student, stok, held_prompts, cfg.checks.max_new_tokens)[0]
        stage_dir.mkdir(parents=True, exist_ok=True)
        before_path.write_text(json.dumps(before, indent=2) + "\n", encoding="utf-8")

    bank = ExampleBank(train, stok, None, 0, chat=True)
    sample = distillation_sampler(bank, [(r["prompt"], r["answer"]) for r in rows if not r["heldout"]], h)

    def step(rng: random.Random) -> StepOutput:
        exs = [_cut(sample(rng), h.max_tokens) for _ in range(h.batch_size)]
        batch = collate(exs, bank.pad, None, device)
        loss = distillation_kl(student, teacher, batch)
        loss.backward()
        tokens = sum(len(e["ids"]) for e in exs)
        return StepOutput(loss.item(), examples=len(exs), tokens=tokens)

    budget = StepBudget(h.steps, h.warmup, h.max_seconds, clock=cfg.clock)
    compute = run_stage(
        "heal",
        student,
        [(trainable, h.lr)],
        step,
        budget,
        device,
        cfg.seed,
        h.weight_decay,
        h.log_every,
        stage_dir,
        h.checkpoint_every,
    )
    after = heldout_scores(student, teacher, caption_batches, kl_batches) if caption_batches else {}
    after["answers"] = generate_answers(student, stok, held_prompts, cfg.checks.max_new_tokens)[0]
    teacher_answers = generate_answers(teacher, tok, held_prompts, cfg.checks.max_new_tokens)[0]
    report = {
        "stage": "heal",
        "student_layers": cfg.layers,
        "teacher_layers": h.teacher_layers or "all",
        "before": {k: v for k, v in before.items() if k != "answers"},
        "after": {k: v for k, v in after.items() if k != "answers"},
        "plain_language": [
            {"prompt": p, "full_model": t, "truncated_before": b, "truncated_after": a}
            for p, t, b, a in zip(held_prompts, teacher_answers, before["answers"], after["answers"])
        ],
        "general_text": {
            "completions": sum(not r["heldout"] for r in rows),
            "finished": sum(r["finished"] for r in rows if not r["heldout"]),
            "heldout_prompts": sum(r["heldout"] for r in rows),
        },
        "compute": {k: v for k, v in compute.to_dict().items() if k != "extra"},
    }
    from safetensors.torch import save_file

    save_file(trained_parts(student, student.model, with_projector=False), stage_dir / PARTS_FILE)
    (stage_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_compute(stage_dir / "compute.json", [compute])
    clear_stage_state(stage_dir)
    return report


__all__ = ["IGNORE", "distillation_kl", "generate_answers", "run_heal"]
