"""Zero-shot signals for choosing summary prompts, as the VladVA paper does (no training needed).

1. `summary_entropy`: entropy of the next-token distribution at the summary position. A prompt
   under which the model is unsure which one word comes next (higher entropy) leaves more
   information in that hidden state.
2. `effective_rank` / `pca_cumulative_variance`: how spread out the embeddings of a retrieval set
   are; embeddings collapsed into few directions (low rank) retrieve badly.

`score_prompts` computes both for candidate prompt pairs on a sample of images and texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from vladva.model.pooling import last_token_pool


@torch.no_grad()
def summary_entropy(
    model, images: Sequence | None = None, texts: Sequence[str] | None = None, batch_size: int = 32
) -> dict[str, float]:
    """Mean next-token entropy (nats) at the last prompt token, per tower given.
    `images` are PIL images; returns `{"image": ..., "text": ...}` for the towers given."""
    model.eval()
    head = model.model.get_output_embeddings()
    out = {}
    if images:
        vals = []
        for s in range(0, len(images), batch_size):
            batch = model.image_inputs(list(images[s : s + batch_size])).to(model.device)
            hidden = last_token_pool(model.image_hidden(batch), batch.model_inputs["attention_mask"], normalize=False)
            vals.append(_entropy(head(hidden)))
        out["image"] = torch.cat(vals).mean().item()
    if texts:
        vals = []
        for s in range(0, len(texts), batch_size):
            batch = model.text_inputs(list(texts[s : s + batch_size])).to(model.device)
            hidden = last_token_pool(model.text_hidden(batch), batch.model_inputs["attention_mask"], normalize=False)
            vals.append(_entropy(head(hidden)))
        out["text"] = torch.cat(vals).mean().item()
    return out


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred `(n, dim)` embeddings:
    1 when all rows lie on one line, up to min(n, dim) when spread evenly (Roy & Vetterli 2007)."""
    x = embeddings.float() - embeddings.float().mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def pca_cumulative_variance(embeddings: torch.Tensor, k: int = 10) -> float:
    """Fraction of the variance in the top `k` principal components (lower = more spread)."""
    x = embeddings.float() - embeddings.float().mean(dim=0, keepdim=True)
    var = torch.linalg.svdvals(x) ** 2
    return float(var[:k].sum() / var.sum()) if var.sum() > 0 else 1.0


def score_prompts(
    base_dir, candidates: Sequence[tuple[str, str]], images: Sequence, texts: Sequence[str], batch_size: int = 32
) -> list[dict]:
    """For each `(image_prompt, text_prompt)`: entropies and embedding spread on the sample.
    Rows are sorted best first by image + text entropy (the paper's first signal)."""
    from vladva.model.vladva import VladVA, VladVAConfig

    rows = []
    for image_prompt, text_prompt in candidates:
        cfg = VladVAConfig()
        cfg.prompts = dataclasses.replace(cfg.prompts, image_prompt=image_prompt, text_prompt=text_prompt)
        m = VladVA.from_pretrained(base_dir, config=cfg)
        ent = summary_entropy(m, images, texts, batch_size)
        img, txt = m.encode_images(images, batch_size), m.encode_texts(texts, batch_size)
        rows.append(
            {
                "image_prompt": image_prompt,
                "text_prompt": text_prompt,
                "image_entropy": round(ent["image"], 4),
                "text_entropy": round(ent["text"], 4),
                "image_effective_rank": round(effective_rank(img), 3),
                "text_effective_rank": round(effective_rank(txt), 3),
            }
        )
    return sorted(rows, key=lambda r: -(r["image_entropy"] + r["text_entropy"]))
