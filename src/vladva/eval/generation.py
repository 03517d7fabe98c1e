"""Is generation kept? Caption token accuracy and greedy captions of a VladVA model.

The paper reports that discriminative fine-tuning keeps the LVLM's ability to generate. Two
measures on held-out images with reference (long) captions:

- `caption_token_accuracy`: image + prompt, then the reference caption fed token by token
  (teacher forcing): the share of caption tokens (and the closing EOS) that the model's argmax
  next-token prediction gets right, and the mean negative log-likelihood per token.
- `greedy_captions`: image + prompt, then greedy decoding until EOS.

`prompt=None` uses the model's own image prompt with its trained soft prompt (the layout the
next-token loss trains on: image, summary prompt, caption); a string uses that instruction
instead, without the soft prompt (e.g. the base's own captioning instruction), which asks whether
generation in general survived the LoRA update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vladva.model.inputs import TowerInputBuilder


def _builder(model, prompt: str | None) -> tuple[TowerInputBuilder, bool]:
    """`(input builder, inject the soft prompt)` for `prompt` (None: the model's own)."""
    if prompt is None:
        return model.inputs, True
    prompts = dataclasses.replace(model.config.prompts, image_prompt=prompt)
    return TowerInputBuilder(model.processor, model.family, prompts, 0), False


def _caption_ids(tokenizer, caption: str, max_tokens: int) -> list[int]:
    """The caption's tokens as the next-token loss sees them (leading space), cut to `max_tokens`;
    EOS closes it only when nothing was cut (a cut caption has not ended)."""
    ids = tokenizer(" " + caption.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        return ids[:max_tokens]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


@torch.no_grad()
def caption_token_accuracy(
    model,
    images: Sequence,
    captions: Sequence[str],
    prompt: str | None = None,
    batch_size: int = 16,
    max_tokens: int = 256,
) -> dict:
    """Teacher-forced next-token accuracy (%) and mean NLL (nats per token) of `captions` after
    image + `prompt`; `images` are PIL images, one reference caption each."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per image and at least one image, got {len(images)} / {len(captions)}")
    builder, soft = _builder(model, prompt)
    was_training = model.training
    model.eval()
    correct, total, nll = 0, 0, 0.0
    try:
        for s in range(0, len(images), batch_size):
            rows = [_caption_ids(builder.tokenizer, c, max_tokens) for c in captions[s : s + batch_size]]
            batch = builder.continuation_inputs(list(images[s : s + batch_size]), rows).to(model.device)
            logits, targets = model.caption_logits(model.image_hidden(batch, soft_prompt=soft), batch.labels)
            correct += int((logits.argmax(dim=-1) == targets).sum())
            total += int(targets.numel())
            nll += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
    finally:
        model.train(was_training)
    return {
        "token_accuracy": round(100.0 * correct / total, 2),
        "nll": round(nll / total, 4),
        "tokens": total,
        "captions": len(images),
    }


@torch.no_grad()
def greedy_captions(model, images: Sequence, prompt: str | None = None, max_new_tokens: int = 96) -> list[str]:
    """Greedy continuation of image + `prompt` for each PIL image, until EOS or `max_new_tokens`.
    No key-value cache: each token re-reads the sequence (the soft prompt is injected by position),
    which is fine for a few short captions."""
    builder, soft = _builder(model, prompt)
    tokenizer = builder.tokenizer
    head = model.model.get_output_embeddings()
    was_training = model.training
    model.eval()
    out = []
    try:
        for image in images:
            ids: list[int] = []
            for _ in range(max_new_tokens):
                batch = builder.continuation_inputs([image], [ids]).to(model.device)
                hidden = model.image_hidden(batch, soft_prompt=soft)
                nxt = int(head(hidden[0, -1]).argmax())
                if nxt == tokenizer.eos_token_id:
                    break
                ids.append(nxt)
            out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return out


def generation_report(
    model,
    images: Sequence,
    captions: Sequence[str],
    prompts: dict[str, str | None],
    samples: int = 3,
    max_new_tokens: int = 96,
    batch_size: int = 16,
) -> dict:
    """For each named prompt (`{"summary": None, "caption": "Describe the image in detail:"}`):
    the caption token accuracy over every image and the greedy captions of the first `samples`
    images -> `{name: {"prompt", "token_accuracy", "nll", "tokens", "captions", "samples": [...]}}`."""
    out = {}
    for name, prompt in prompts.items():
        row = {"prompt": prompt if prompt is not None else model.config.prompts.image_prompt}
        row |= caption_token_accuracy(model, images, captions, prompt, batch_size)
        row["samples"] = greedy_captions(model, list(images[:samples]), prompt, max_new_tokens) if samples else []
        out[name] = row
    return out
