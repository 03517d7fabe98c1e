"""Zero-shot signals for choosing summary prompts, as the VladVA paper does (no training needed).

1. `summary_entropy`: entropy of the next-token distribution at the summary position. A prompt
   under which the model is unsure which one word comes next (higher entropy) leaves more
   information in that hidden state.
2. `effective_rank` / `pca_cumulative_variance`: how spread out the embeddings of a retrieval set
   are; embeddings collapsed into few directions (low rank) retrieve badly.

`score_prompts` computes both for candidate prompt pairs on a sample of images and texts, and
`spearman` says how well a signal ranks the prompts the way a measured score does
(`vladva.eval.prompt_choice` sets them against zero-shot retrieval).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence

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


# The signals a row of `score_prompts` holds, and whether higher means "better" by the paper's reading.
SIGNALS: dict[str, bool] = {
    "entropy": True,  # image + text next-token entropy at the summary position
    "image_entropy": True,
    "text_entropy": True,
    "effective_rank": True,  # image + text effective rank of the embeddings
    "image_effective_rank": True,
    "text_effective_rank": True,
    "image_pca10": False,  # share of variance in the top 10 principal components (lower: more spread)
    "text_pca10": False,
}


def score_prompts(
    base_dir,
    candidates: Sequence[tuple[str, str]],
    images: Sequence,
    texts: Sequence[str],
    batch_size: int = 32,
    measure: Callable[[torch.Tensor, torch.Tensor], dict] | None = None,
    config=None,
) -> list[dict]:
    """For each `(image_prompt, text_prompt)`: entropies and embedding spread on the sample
    (`SIGNALS`), plus `measure(image_emb, text_emb)`'s values when given (e.g. retrieval R@1
    when `texts` are captions of `images`). `config`: the `VladVAConfig` the prompts go into
    (default: the library's). Rows are sorted best first by image + text entropy (the paper's
    first signal)."""
    from vladva.model.vladva import VladVA, VladVAConfig

    rows = []
    for image_prompt, text_prompt in candidates:
        cfg = copy.deepcopy(config) if config is not None else VladVAConfig()
        cfg.prompts = dataclasses.replace(cfg.prompts, image_prompt=image_prompt, text_prompt=text_prompt)
        m = VladVA.from_pretrained(base_dir, config=cfg)
        ent = summary_entropy(m, images, texts, batch_size)
        img, txt = m.encode_images(images, batch_size), m.encode_texts(texts, batch_size)
        row = {
            "image_prompt": image_prompt,
            "text_prompt": text_prompt,
            "image_entropy": round(ent["image"], 4),
            "text_entropy": round(ent["text"], 4),
            "image_effective_rank": round(effective_rank(img), 3),
            "text_effective_rank": round(effective_rank(txt), 3),
            "image_pca10": round(pca_cumulative_variance(img, 10), 4),
            "text_pca10": round(pca_cumulative_variance(txt, 10), 4),
        }
        row["entropy"] = round(row["image_entropy"] + row["text_entropy"], 4)
        row["effective_rank"] = round(row["image_effective_rank"] + row["text_effective_rank"], 3)
        if measure is not None:
            row |= measure(img, txt)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["entropy"])


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of `values` (smallest first), tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks); None with fewer than 3 pairs or a
    constant side."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    if len(x) < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)
