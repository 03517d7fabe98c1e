"""Held-out checks of the pretrained base models, gathered into `pretrain_report.json`.

- caption token accuracy (teacher forcing) overall and on attribute, relation and count words,
  for the LVLM and for a text-only LM of the same size: the gap is what the image contributes;
- instruction-answer accuracy (all answer tokens right = what greedy decoding would produce);
- greedy captions next to the ground truth;
- the zero-shot summary-prompt embedding: text->image and image->text R@1 vs chance, the
  paper's first baseline; and the CLIP baseline's R@1 on the same images.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from vladva.toyworld.base.data import SceneVocab, Split, to_pixel_values
from vladva.toyworld.base.lvlm import IGNORE, ExampleBank, _qa_pairs, collate
from vladva.toyworld.base.tokenizer import (
    IMAGE_SUMMARY_PROMPT,
    LONG_CAPTION_PROMPT,
    SHORT_CAPTION_PROMPT,
    TEXT_SUMMARY_PROMPT,
)

# Words of spatial and size relations and of positions in the shapes world's captions.
RELATION_WORDS = frozenset(
    {
        "left",
        "right",
        "above",
        "below",
        "under",
        "higher",
        "lower",
        "bigger",
        "larger",
        "smaller",
        "top",
        "bottom",
        "centre",
        "middle",
        "between",
        "next",
        "beside",
        "near",
    }
)
COUNT_WORDS = frozenset({"one", "two", "three", "four", "five", "six", "single", "1", "2", "3", "4", "5", "6"})


def word_categories(vocab: SceneVocab) -> dict[str, frozenset[str]]:
    return {
        "colour": frozenset(vocab.colours),
        "shape": frozenset(vocab.shapes),
        "size": frozenset(vocab.sizes),
        "attribute": frozenset(vocab.colours + vocab.shapes + vocab.sizes),
        "relation": RELATION_WORDS,
        "count": COUNT_WORDS,
    }


def _predicted_next(model, batch: dict) -> torch.Tensor:
    """`(batch, seq - 1)` argmax next-token predictions at the labelled positions (-1 elsewhere). The
    LM head runs only there: a real LLM's ~50k-way head at every image position costs gigabytes."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state[:, :-1]
    keep = batch["labels"][:, 1:] != IGNORE
    pred = torch.full(keep.shape, -1, dtype=torch.long, device=hidden.device)
    pred[keep] = model.lm_head(hidden[keep]).argmax(-1)
    return pred


def _token_words(tokenizer) -> list[str]:
    """Each token id's text, stripped and lower-cased (a BPE token " red" reads as "red"), so word
    categories apply to word-level and subword vocabularies alike."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [tokenizer.convert_tokens_to_string([t]).strip().lower() if t is not None else "" for t in tokens]


@torch.no_grad()
def caption_token_accuracy(
    model,
    bank: ExampleBank,
    indices: list[int],
    categories: dict[str, frozenset[str]],
    with_image: bool,
    device: torch.device,
    batch_size: int = 32,
) -> dict:
    """Percent of long-caption tokens (</s> excluded) whose argmax prediction is right, overall and
    per word category, with token counts. `with_image=False` feeds the caption alone (text LM)."""
    model.to(device).eval()
    words = _token_words(bank.tok)
    cat_of_id = {c: torch.tensor([w in ws for w in words]) for c, ws in categories.items()}
    hits, counts = defaultdict(int), defaultdict(int)
    indices = [i for i in indices if bank.split.records[i].long_caption]
    for s in range(0, len(indices), batch_size):
        chunk = indices[s : s + batch_size]
        if with_image:
            exs = [bank.image_example(i, LONG_CAPTION_PROMPT, bank.split.records[i].long_caption) for i in chunk]
        else:
            exs = [bank.text_example(None, None, bank.split.records[i].long_caption) for i in chunk]
        batch = collate(exs, bank.pad, bank.split.images, device)
        pred = _predicted_next(model, batch).cpu()
        gold = batch["labels"][:, 1:].cpu()
        keep = (gold != IGNORE) & (gold != bank.eos)
        right = (pred == gold) & keep
        g = gold.clamp_min(0)
        hits["all"] += int(right.sum())
        counts["all"] += int(keep.sum())
        for c, is_c in cat_of_id.items():
            m = keep & is_c[g]
            hits[c] += int((right & m).sum())
            counts[c] += int(m.sum())
    return {
        c: {"accuracy": round(100 * hits[c] / counts[c], 1) if counts[c] else None, "tokens": counts[c]} for c in counts
    }


@torch.no_grad()
def instruction_accuracy(
    model, bank: ExampleBank, indices: list[int], device: torch.device, batch_size: int = 64
) -> dict:
    """Percent of held-out instruction questions whose answer tokens are all predicted right
    (teacher forcing, which equals greedy decoding's exact match), overall and by question kind
    (the question's first two words)."""
    model.to(device).eval()
    items = [(i, q, a) for i in indices for q, a in _qa_pairs(bank.split.records[i])]
    hits, counts = defaultdict(int), defaultdict(int)
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        batch = collate([bank.image_example(i, q, a) for i, q, a in chunk], bank.pad, bank.split.images, device)
        pred, gold = _predicted_next(model, batch).cpu(), batch["labels"][:, 1:].cpu()
        keep = (gold != IGNORE) & (gold != bank.eos)
        ok = ((pred == gold) | ~keep).all(1)
        for (_, q, _), good in zip(chunk, ok.tolist()):
            kind = " ".join(q.lower().split()[:2])
            for key in ("all", kind):
                hits[key] += int(good)
                counts[key] += 1
    return {k: {"accuracy": round(100 * hits[k] / counts[k], 1), "questions": counts[k]} for k in counts}


@torch.no_grad()
def generate_examples(
    model, processor, split: Split, indices: list[int], device: torch.device, max_new_tokens: int = 96
) -> list[dict]:
    """Greedy captions (short and detailed prompts) through the saved processor, next to the truth."""
    from PIL import Image

    model.to(device).eval()
    out = []
    for i in indices:
        r = split.records[i]
        image = Image.fromarray(split.images[i].permute(1, 2, 0).numpy())
        row = {"id": r.id, "true_short": r.captions[0], "true_long": r.long_caption}
        for key, prompt in (("generated_short", SHORT_CAPTION_PROMPT), ("generated_long", LONG_CAPTION_PROMPT)):
            text = f"<image>\n{prompt}"
            if getattr(processor, "chat_template", None):  # a chat LLM: the user turn it was trained on
                content = [{"type": "image"}, {"type": "text", "text": prompt}]
                text = processor.apply_chat_template(
                    [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
                )
            enc = processor(images=[image], text=[text], return_tensors="pt").to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
            row[key] = processor.tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        out.append(row)
    return out


def _last_token_states(model, batch: dict) -> torch.Tensor:
    """Final hidden state (after the LM's last norm) of each row's last real token; rows right-padded."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state
    last = batch["attention_mask"].sum(1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def retrieval_caption(record) -> str:
    """The longest short caption: the one most likely to identify its image."""
    return max(record.captions, key=len)


def recall_at_1(sim: torch.Tensor) -> tuple[float, float]:
    """`sim (n_texts, n_images)` where text j belongs to image j -> (text->image, image->text) R@1
    in %, ties against the model (`vladva.eval.metrics.retrieval_recalls`)."""
    from vladva.eval.metrics import retrieval_recalls

    r = retrieval_recalls(sim.T, torch.arange(sim.shape[0]), ks=(1,))
    return round(r["t2i_R@1"], 1), round(r["i2t_R@1"], 1)


@torch.no_grad()
def summary_prompt_zero_shot(
    model, bank: ExampleBank, indices: list[int], device: torch.device, batch_size: int = 64
) -> dict:
    """The E5-V-style zero-shot embedding: "<image> Summary above image in one word:" vs
    "<caption> Summary above sentence in one word:" (longest short caption), last-token final
    hidden state, cosine. Also how often the next word predicted there names something in the
    image / the sentence."""
    model.to(device).eval()
    img_states, txt_states, img_hit, txt_hit = [], [], [], []
    for s in range(0, len(indices), batch_size):
        chunk = indices[s : s + batch_size]
        img = collate(
            [bank.image_example(i, IMAGE_SUMMARY_PROMPT, None) for i in chunk], bank.pad, bank.split.images, device
        )
        captions = [retrieval_caption(bank.split.records[i]) for i in chunk]
        txt = collate([bank.text_example(c, TEXT_SUMMARY_PROMPT, None) for c in captions], bank.pad, None, device)
        for batch, states, hits, allowed in (
            (img, img_states, img_hit, [bank.image_summary_words(i) for i in chunk]),
            (txt, txt_states, txt_hit, [bank.text_summary_words(c) for c in captions]),
        ):
            last = _last_token_states(model, batch)
            states.append(last.cpu())
            next_ids = model.lm_head(last.to(model.lm_head.weight.dtype)).argmax(-1).tolist()
            words = [bank.tok.decode([t]).strip().lower() for t in next_ids]
            hits.extend(w in set(a) for w, a in zip(words, allowed))
    im = torch.nn.functional.normalize(torch.cat(img_states), dim=-1)
    tx = torch.nn.functional.normalize(torch.cat(txt_states), dim=-1)
    t2i, i2t = recall_at_1(tx @ im.T)
    return {
        "images": len(indices),
        "t2i_r1": t2i,
        "i2t_r1": i2t,
        "chance_r1": round(100 / len(indices), 2),
        "image_summary_word_in_image": round(100 * sum(img_hit) / len(img_hit), 1),
        "text_summary_word_in_sentence": round(100 * sum(txt_hit) / len(txt_hit), 1),
    }


@torch.no_grad()
def clip_retrieval(embedder, split: Split, indices: list[int]) -> dict:
    """The CLIP baseline's R@1 on the same images and captions as `summary_prompt_zero_shot`."""
    pix = to_pixel_values(split.images[torch.tensor(indices)])
    im = embedder.encode_pixel_values(pix)
    tx = embedder.encode_texts([retrieval_caption(split.records[i]) for i in indices])
    t2i, i2t = recall_at_1(tx @ im.T)
    return {"images": len(indices), "t2i_r1": t2i, "i2t_r1": i2t, "chance_r1": round(100 / len(indices), 2)}
