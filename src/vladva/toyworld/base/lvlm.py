"""Stage 3: the base LVLM, a small `LlavaForConditionalGeneration` pretrained generatively.

It stands in for LLaVA-1.5: the stage-1 CLIP tower, a 2-layer projector and a Llama LM. Like a
real LVLM it learns to caption (long and short), to answer instructions in one word, to answer
"Summary above image in one word:" with a word naming something in the image, and, text only,
to model captions and to answer "<sentence> Summary above sentence in one word:". The last two
give the paper's zero-shot summary-prompt baseline something to stand on.

Sequences are built directly as token ids, exactly as `LlavaProcessor` builds them, in one of
two formats (`ExampleBank(chat=...)`): plain, `<s> <image>*64 prompt answer </s>` (the word-level
4M base), or the tokenizer's chat template, `<|im_start|>user\n<image>*64 prompt<|im_end|>\n
<|im_start|>assistant\n answer <|im_end|>` (a real chat LLM, vladva.toyworld.base.smollm2); the
loss is on the answer and its end token only. Training runs the one generative stage loop
(`vladva.toyworld.base.stage.run_stage`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from vladva.toyworld.base.data import SceneVocab, Split, to_pixel_values
from vladva.toyworld.base.stage import StepOutput, run_stage
from vladva.toyworld.base.tokenizer import (
    IMAGE_SUMMARY_PROMPT,
    LONG_CAPTION_PROMPT,
    SHORT_CAPTION_PROMPT,
    TEXT_SUMMARY_PROMPT,
)
from vladva.toyworld.base.training import StepBudget, autocast

IGNORE = -100


@dataclass
class LanguageModelConfig:
    """`LlamaConfig` sizes: ~3M parameters at the defaults with a ~100-word vocabulary."""

    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 512
    tie_word_embeddings: bool = True

    def to_hf(self, tokenizer):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=self.tie_word_embeddings,
        )


@dataclass
class TaskMix:
    """Relative weights of the tasks within a group (0 turns a task off)."""

    short_caption: float = 1.0
    instruction: float = 2.0
    image_summary: float = 1.0
    text_caption: float = 1.0
    text_long_caption: float = 0.5
    text_summary: float = 1.0
    # Plain-language prompt -> answer pairs given to the bank (`ExampleBank.general`), e.g. what a
    # full LLM wrote: keeps a real LLM's own language alive while it learns the world (0: off).
    general_text: float = 0.0


@dataclass
class LvlmPretrainConfig:
    """Each step: `batch_long` image -> long caption, `batch_short` image -> short caption /
    instruction answer / one-word summary, and `batch_text` text-only sequences; the loss is the
    sum of the three groups' mean token losses."""

    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    tasks: TaskMix = field(default_factory=TaskMix)
    steps: int = 4000
    batch_long: int = 16
    batch_short: int = 32
    batch_text: int = 32
    lr: float = 1e-3
    projector_lr_scale: float = 1.0
    vision_lr_scale: float = 0.0  # 0 keeps the stage-1 tower frozen, as LLaVA's pretraining does
    weight_decay: float = 0.05
    warmup: int = 100
    max_seconds: float = 0.0
    log_every: int = 50

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("lvlm.steps must be >= 1")
        if self.batch_long + self.batch_short + self.batch_text < 1:
            raise ValueError("lvlm: at least one of batch_long, batch_short, batch_text must be > 0")


def build_lvlm(vision_tower, tokenizer, lm: LanguageModelConfig):
    """A fresh `LlavaForConditionalGeneration` whose vision tower is a copy of `vision_tower` (a `CLIPVisionModel`)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=vision_tower.config,
        text_config=lm.to_hf(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=lm.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(cfg)
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    _set_generation_defaults(model, tokenizer)
    return model


def build_text_lm(tokenizer, lm: LanguageModelConfig):
    """A `LlamaForCausalLM` the same size as the LVLM's LM: the text-only control."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(lm.to_hf(tokenizer))
    _set_generation_defaults(model, tokenizer)
    return model


def _set_generation_defaults(model, tokenizer) -> None:
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    gc.do_sample = False
    gc.max_new_tokens = 64


def num_image_tokens(vision_config) -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2


class ChatFormat:
    """Sequences in the tokenizer's chat template: a user turn (`<image>` expanded to the image
    tokens, then the prompt; or `context\nprompt`), the generation prompt, then the answer and the
    template's turn end (`<|im_end|>`, the tokenizer's eos). A text with neither context nor prompt
    is plain text (no template). Heads are tokenised once and cached."""

    def __init__(self, tokenizer, image_id: int, n_image_tokens: int, separator: str = "\n"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("ExampleBank(chat=True) needs a tokenizer with a chat template")
        self.tok, self.image_id, self.n_image_tokens, self.separator = tokenizer, image_id, n_image_tokens, separator
        self._heads: dict[tuple[bool, str], list[int]] = {}

    def head(self, with_image: bool, text: str) -> list[int]:
        key = (with_image, text)
        if key not in self._heads:
            parts = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
            rendered = self.tok.apply_chat_template(
                [{"role": "user", "content": parts}], add_generation_prompt=True, tokenize=False
            )
            ids = self.tok(rendered, add_special_tokens=False)["input_ids"]
            at = ids.index(self.image_id) if with_image else -1
            if at >= 0:  # as LlavaProcessor does: one placeholder becomes the image's tokens
                ids = ids[:at] + [self.image_id] * self.n_image_tokens + ids[at + 1 :]
            self._heads[key] = ids
        return self._heads[key]

    def text_head(self, context: str | None, prompt: str | None) -> list[int]:
        if not context and not prompt:
            return []
        return self.head(False, self.separator.join(t for t in (context, prompt) if t))


class ExampleBank:
    """Token ids of every text the tasks use, encoded once. Build sequences with `image_example`
    / `text_example`; `sample_*` draw one training example of a group.

    `chat`: build sequences with the tokenizer's chat template (`ChatFormat`) instead of the plain
    `<s> ... </s>` format. `general`: plain-language `(prompt, answer)` pairs for the
    `general_text` task."""

    def __init__(
        self,
        split: Split,
        tokenizer,
        vocab: SceneVocab | None,
        n_image_tokens: int,
        chat: bool = False,
        general: list[tuple[str, str]] | None = None,
    ):
        self.split, self.tok, self.vocab = split, tokenizer, vocab
        self.bos, self.eos, self.pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.n_image_tokens = n_image_tokens
        self.chat = ChatFormat(tokenizer, self.image_id, n_image_tokens) if chat else None
        self.general = list(general or [])
        self._cache: dict[str, list[int]] = {}
        texts = {LONG_CAPTION_PROMPT, SHORT_CAPTION_PROMPT, IMAGE_SUMMARY_PROMPT, TEXT_SUMMARY_PROMPT}
        for r in split.records:
            texts.update(r.captions)
            if r.long_caption:
                texts.add(r.long_caption)
            for qa in _qa_pairs(r):
                texts.update(qa)
        if vocab is not None:
            texts.update(vocab.shapes + vocab.colours + vocab.sizes)
        texts = sorted(texts)
        for t, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"]):
            self._cache[t] = ids
        self.long_idx = [i for i, r in enumerate(split.records) if r.long_caption]
        self.attr_words = set(vocab.shapes + vocab.colours) if vocab is not None else set()

    def ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def _tail(self, answer: str | None) -> list[int]:
        return self.ids(answer) + [self.eos] if answer is not None else []

    def image_example(self, i: int, prompt: str, answer: str | None) -> dict:
        """`<s> <image>*n prompt [answer </s>]` (or its chat form); labels cover the answer and its end."""
        if self.chat is not None:
            head = self.chat.head(True, prompt)
        else:
            head = [self.bos] + [self.image_id] * self.n_image_tokens + self.ids(prompt)
        tail = self._tail(answer)
        return {"ids": head + tail, "labels": [IGNORE] * len(head) + tail, "image": i}

    def text_example(self, context: str | None, prompt: str | None, answer: str | None) -> dict:
        """`<s> [context prompt] [answer </s>]` (or its chat form); labels cover the answer and its end."""
        if self.chat is not None:
            head = self.chat.text_head(context, prompt)
        else:
            head = [self.bos] + (self.ids(context) if context else []) + (self.ids(prompt) if prompt else [])
        tail = self._tail(answer)
        return {"ids": head + tail, "labels": [IGNORE] * len(head) + tail, "image": None}

    def image_summary_words(self, i: int) -> list[str]:
        """Words a one-word summary of image i may be: the colour and shape of each object."""
        scene = self.split.scenes[i]
        return [w for o in scene.objects for w in (o.colour, o.shape)] if scene is not None else []

    def text_summary_words(self, text: str) -> list[str]:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        return [w for w in words if w in self.attr_words]

    def sample_long(self, rng: random.Random) -> dict:
        i = rng.choice(self.long_idx)
        return self.image_example(i, LONG_CAPTION_PROMPT, self.split.records[i].long_caption)

    def sample_short(self, rng: random.Random, mix: TaskMix) -> dict:
        i = rng.randrange(len(self.split))
        r = self.split.records[i]
        options = [("short_caption", mix.short_caption)]
        qa = _qa_pairs(r)
        if qa:
            options.append(("instruction", mix.instruction))
        words = self.image_summary_words(i)
        if words:
            options.append(("image_summary", mix.image_summary))
        task = _choose(rng, options)
        if task == "instruction":
            q, a = rng.choice(qa)
            return self.image_example(i, q, a)
        if task == "image_summary":
            return self.image_example(i, IMAGE_SUMMARY_PROMPT, rng.choice(words))
        return self.image_example(i, SHORT_CAPTION_PROMPT, rng.choice(r.captions))

    def sample_text(self, rng: random.Random, mix: TaskMix) -> dict:
        r = self.split.records[rng.randrange(len(self.split))]
        caption = rng.choice(r.captions)
        words = self.text_summary_words(caption)
        options = [("text_caption", mix.text_caption)]
        if r.long_caption:
            options.append(("text_long_caption", mix.text_long_caption))
        if words:
            options.append(("text_summary", mix.text_summary))
        if self.general and mix.general_text > 0:
            options.append(("general_text", mix.general_text))
        task = _choose(rng, options)
        if task == "general_text":
            return self.text_example(None, *rng.choice(self.general))
        if task == "text_summary":
            return self.text_example(caption, TEXT_SUMMARY_PROMPT, rng.choice(words))
        if task == "text_long_caption":
            return self.text_example(None, None, r.long_caption)
        return self.text_example(None, None, caption)


def _qa_pairs(record) -> list[tuple[str, str]]:
    qa = record.meta.get("qa") if isinstance(record.meta, dict) else None
    if not qa:
        return []
    return [(str(q), str(a)) for q, a in qa]


def _choose(rng: random.Random, options: list[tuple[str, float]]) -> str:
    options = [(n, w) for n, w in options if w > 0] or options[:1]
    return rng.choices([n for n, _ in options], weights=[w for _, w in options])[0]


def collate(
    examples: list[dict], pad_id: int, images: torch.Tensor | None, device: torch.device, right_pad: bool = True
) -> dict:
    """Pad a list of examples into `input_ids`, `attention_mask`, `labels` `(b, max_len)` and, when
    any example has an image, `pixel_values` `(n_with_image, 3, H, W)` in row order."""
    n = max(len(e["ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        k = len(e["ids"])
        sl = slice(0, k) if right_pad else slice(n - k, n)
        ids[row, sl] = torch.tensor(e["ids"])
        mask[row, sl] = 1
        labels[row, sl] = torch.tensor(e["labels"])
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
    with_image = [e["image"] for e in examples if e["image"] is not None]
    if with_image:
        if images is None:
            raise ValueError("examples refer to images but no image tensor was given")
        batch["pixel_values"] = to_pixel_values(images[torch.tensor(with_image)], device)
    return batch


def model_loss(model, batch: dict) -> torch.Tensor:
    """The model's own loss (`labels` in the batch): the LM head runs at every position."""
    return model(**batch).loss


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Token-mean cross-entropy on the labelled positions, the LM head run only there (a real LLM's
    ~50k-way head at every image and prompt position would dominate the step). `model` is LLaVA or
    a causal LM (`model.model` gives the final hidden states, `model.lm_head` the logits)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def lvlm_groups(model, cfg: LvlmPretrainConfig, text_only: bool = False) -> list[tuple[list, float]]:
    """The 4M base's parameter groups: vision tower, projector, language model (+ head) with their
    learning rates (a text-only LM: all its parameters at `cfg.lr`)."""
    if text_only:
        return [(list(model.parameters()), cfg.lr)]
    m = model.model
    return [
        (list(m.vision_tower.parameters()), cfg.lr * cfg.vision_lr_scale),
        (list(m.multi_modal_projector.parameters()), cfg.lr * cfg.projector_lr_scale),
        (list(m.language_model.parameters()) + list(model.lm_head.parameters()), cfg.lr),
    ]


def generative_step(
    model,
    bank: ExampleBank,
    sizes: dict[str, int],
    mix: TaskMix,
    device: torch.device,
    bf16: bool = False,
    loss_fn=model_loss,
    text_mix: TaskMix | None = None,
):
    """The step function of a generative stage (`run_stage`): per group (`sizes`: "long", "short",
    "text", "long_text" -> examples), draw the examples, collate, forward, backward. The step's
    loss is the sum of the groups' token-mean losses. `text_mix` (default `mix`) draws the "text" group."""

    def step(rng: random.Random) -> StepOutput:
        out = StepOutput(0.0)
        for group, size in sizes.items():
            if size <= 0:
                continue
            if group == "long":
                exs = [bank.sample_long(rng) for _ in range(size)]
            elif group == "short":
                exs = [bank.sample_short(rng, mix) for _ in range(size)]
            elif group == "long_text":
                exs = [
                    bank.text_example(None, None, bank.split.records[rng.choice(bank.long_idx)].long_caption)
                    for _ in range(size)
                ]
            else:
                exs = [bank.sample_text(rng, text_mix or mix) for _ in range(size)]
            batch = collate(exs, bank.pad, bank.split.images, device)
            with autocast(device, bf16):
                loss = loss_fn(model, batch)
            loss.backward()
            out.loss += loss.item()
            out.extra[f"loss_{group}"] = loss.item()
            out.examples += size
            out.long_captions += size if group in ("long", "long_text") else 0
            out.tokens += sum(len(e["ids"]) for e in exs)  # unpadded, image placeholders included
        return out

    return step


def train_generative(
    model,
    bank: ExampleBank,
    cfg: LvlmPretrainConfig,
    device: torch.device,
    seed: int = 0,
    bf16: bool = False,
    stage: str = "lvlm",
    text_only: bool = False,
):
    """Train `model` (LLaVA, or with `text_only` a causal LM) on the bank's tasks: the 4M base's
    groups (`lvlm_groups`) through the one stage loop. Returns `(model on CPU, StageCompute)`;
    `StageCompute.extra["loss_curve"]` holds (step, loss) pairs."""
    sizes = {"long": cfg.batch_long, "short": cfg.batch_short, "text": cfg.batch_text}
    text_mix = None
    if text_only:
        # The control sees the same captions, as text: long ones in place of image -> long caption.
        sizes = {"long_text": cfg.batch_long, "text": cfg.batch_text + cfg.batch_short}
        text_mix = TaskMix(text_caption=1.0, text_long_caption=0.0, text_summary=cfg.tasks.text_summary)
    step = generative_step(model, bank, sizes, cfg.tasks, device, bf16, model_loss, text_mix)
    budget = StepBudget(cfg.steps, cfg.warmup, cfg.max_seconds)
    groups = lvlm_groups(model, cfg, text_only)
    compute = run_stage(stage, model, groups, step, budget, device, seed, cfg.weight_decay, cfg.log_every)
    return model.cpu(), compute
