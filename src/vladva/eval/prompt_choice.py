"""Do the zero-shot prompt signals predict retrieval? `vladva score-prompts` on a manifest.

For each candidate `(image prompt, text prompt)`: the paper's signals (next-token entropy at the
summary position, embedding spread; `vladva.model.prompt_selection`) and the zero-shot retrieval
R@1 the prompts actually give on the same images and their captions (`vladva.eval.metrics`, ties
against the model), then Spearman's rank correlation between each signal and R@1 over the
candidates. The ranked list is the command's output (a table, JSON, markdown).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vladva.model.prompt_selection import SIGNALS, score_prompts, spearman

PROMPT_SCORES_SCHEMA = "vladva.prompt_scores/1"
TARGETS = ("t2i_R@1", "i2t_R@1", "mean_R@1")


def retrieval_measure(owner: Sequence[int]):
    """`measure(image_emb, text_emb)` for `score_prompts`: R@1 (%) both ways, text j belonging to
    image `owner[j]` (image->text: any of the image's captions counts)."""
    import torch

    from vladva.eval.metrics import retrieval_recalls

    owner_t = torch.tensor(list(owner))

    def measure(img, txt) -> dict:
        r = retrieval_recalls(img @ txt.T, owner_t, ks=(1,))
        t2i, i2t = round(r["t2i_R@1"], 2), round(r["i2t_R@1"], 2)
        return {"t2i_R@1": t2i, "i2t_R@1": i2t, "mean_R@1": round((t2i + i2t) / 2, 2)}

    return measure


def signal_correlations(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    """`{signal: {target: Spearman rho}}` over the candidates (sign as measured: for a signal where
    lower is better, such as `image_pca10`, a good predictor has a negative rho)."""
    out = {}
    for signal in SIGNALS:
        if all(signal in r for r in rows):
            out[signal] = {
                t: (
                    None
                    if (rho := spearman([r[signal] for r in rows], [r[t] for r in rows])) is None
                    else round(rho, 3)
                )
                for t in TARGETS
                if all(t in r for r in rows)
            }
    return out


def rank_prompts(
    base_dir,
    candidates: Sequence[tuple[str, str]],
    records: Sequence,
    batch_size: int = 32,
    rank_by: str = "entropy",
    config=None,
) -> dict:
    """Score every candidate on `records` (manifest records: each image with all its short
    captions) and measure its zero-shot retrieval; rows ranked by `rank_by` (a signal of
    `vladva.model.prompt_selection.SIGNALS`, best first, or a target such as `mean_R@1`), each
    with its rank by measured mean R@1 (`r1_rank`). `config`: the `VladVAConfig` the prompts go
    into (pooling, chat template)."""
    from vladva.data.images import load_image

    if rank_by not in SIGNALS and rank_by not in TARGETS:
        raise ValueError(f"rank_by must be one of {', '.join([*SIGNALS, *TARGETS])}, got {rank_by!r}")
    images = [load_image(r.image) for r in records]
    texts, owner = [], []
    for i, r in enumerate(records):
        texts.extend(r.captions)
        owner.extend([i] * len(r.captions))
    rows = score_prompts(base_dir, candidates, images, texts, batch_size, retrieval_measure(owner), config)
    by_r1 = sorted(range(len(rows)), key=lambda i: -rows[i]["mean_R@1"])
    for rank, i in enumerate(by_r1, start=1):
        rows[i]["r1_rank"] = rank
    higher_better = SIGNALS.get(rank_by, True)
    rows.sort(key=lambda r: -r[rank_by] if higher_better else r[rank_by])
    return {
        "schema": PROMPT_SCORES_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": str(base_dir),
        "images": len(images),
        "texts": len(texts),
        "ranked_by": rank_by,
        "rows": rows,
        "correlations": signal_correlations(rows),
    }


def prompt_scores_markdown(scores: dict) -> str:
    """The ranked table and the correlation table."""
    from vladva.eval.report import markdown_table

    header = ["#", "image prompt", "text prompt", "entropy img / txt", "eff. rank img / txt", "T→I R@1", "I→T R@1"]
    header.append("R@1 rank")
    rows = [
        [
            str(i),
            f"`{r['image_prompt']}`",
            f"`{r['text_prompt']}`",
            f"{r['image_entropy']:.2f} / {r['text_entropy']:.2f}",
            f"{r['image_effective_rank']:.1f} / {r['text_effective_rank']:.1f}",
            f"{r.get('t2i_R@1', float('nan')):.1f}",
            f"{r.get('i2t_R@1', float('nan')):.1f}",
            str(r.get("r1_rank", "–")),
        ]
        for i, r in enumerate(scores["rows"], start=1)
    ]
    corr = [
        [f"`{signal}`", "higher" if SIGNALS[signal] else "lower"]
        + ["–" if (v := by_target.get(t)) is None else f"{v:+.2f}" for t in TARGETS]
        for signal, by_target in scores["correlations"].items()
    ]
    return (
        f"Ranked by `{scores['ranked_by']}` on {scores['images']} images and {scores['texts']} captions "
        f"of the base `{scores['base']}`:\n\n"
        + markdown_table(header, rows)
        + "\n\nSpearman rank correlation of each signal with the measured zero-shot R@1 over the "
        f"{len(scores['rows'])} candidates (a useful signal: positive where higher is better, negative "
        "where lower is better):\n\n" + markdown_table(["signal", "better when", *TARGETS], corr) + "\n"
    )


def write_prompt_scores(scores: dict, out: Path | str) -> list[Path]:
    """`out` (.json) and the markdown beside it (same name, .md)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    md = out.with_suffix(".md")
    md.write_text(prompt_scores_markdown(scores), encoding="utf-8")
    return [out, md]
