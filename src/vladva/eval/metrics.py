"""Benchmark metrics as pure functions of similarity scores.

Every function takes cosine similarities (higher = more similar) and returns accuracies or
recalls in percent (0-100). Ties always count against the model: a positive that scores
exactly as high as a negative is not ranked above it. A constant embedder therefore scores 0,
not chance, which keeps a broken model from looking half-right.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

DEFAULT_KS = (1, 5, 10)


def _percent(hits: torch.Tensor) -> float:
    """Mean of a boolean vector, in percent; NaN for an empty vector."""
    return float(hits.double().mean() * 100) if hits.numel() else float("nan")


def best_positive_rank(scores: torch.Tensor, positives: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """0-based rank of each query's best positive, ties against the model.

    `scores`: `(n_queries, n_items)`; `positives`: `(n_queries, n_items)` bool, at least one
    True per row. The rank is the number of *negative* items scoring >= the best positive's
    score, so "hit at k" (rank < k) means some positive is among the top k even if every tie
    is broken in the negatives' favour. Other positives never push the rank down.
    Returns `(n_queries,)` int64.
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive item")
    # Row chunks keep the temporaries small (COCO 5k x 25k scores would otherwise copy ~0.5 GB).
    out = []
    for s in range(0, scores.shape[0], chunk):
        sc, pos = scores[s : s + chunk], positives[s : s + chunk]
        best = sc.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
        out.append(((sc >= best) & ~pos).sum(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def positive_mask(targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """`(n_queries, n_items)` bool, True at `targets[q]` in row q: the positives of queries whose
    one true item is `targets` (`(n_queries,)` int64), the form `best_positive_rank` takes."""
    mask = torch.zeros(len(targets), n_items, dtype=torch.bool)
    mask[torch.arange(len(targets)), targets] = True
    return mask


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """`{"R@k": percent of ranks < k}` for each k; `ranks` from `best_positive_rank`."""
    return {f"R@{k}": _percent(ranks < k) for k in ks}


def retrieval_recalls(
    sim: torch.Tensor,
    caption_image: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    caption_true_for: torch.Tensor | None = None,
) -> dict[str, float]:
    """Image-text retrieval with several captions per image (CLIP_benchmark's convention).

    `sim`: `(n_images, n_captions)`; `caption_image`: `(n_captions,)` index of each caption's
    image. image->text: a hit if any of the image's captions is in the top k. text->image: a hit
    if the caption's own image is in the top k. With `caption_true_for` (`(n_captions,
    n_images)` bool, True where the caption is a true description of that image), also
    "t2i_valid": a hit if any image the caption is true for is in the top k.
    Keys: `i2t_R@k`, `t2i_R@k` (and `t2i_valid_R@k`), in percent.
    """
    own = positive_mask(caption_image, sim.shape[0])  # (n_captions, n_images)
    out = {f"i2t_{k}": v for k, v in recall_at_k(best_positive_rank(sim, own.T), ks).items()}
    out |= {f"t2i_{k}": v for k, v in recall_at_k(best_positive_rank(sim.T, own), ks).items()}
    if caption_true_for is not None:
        valid = caption_true_for | own  # a caption is always true for its own image
        out |= {f"t2i_valid_{k}": v for k, v in recall_at_k(best_positive_rank(sim.T, valid), ks).items()}
    return out


def pair_accuracy(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """SugarCrepe / ARO: percent of items whose positive scores strictly above the negative.
    Both `(n,)` similarities to the same image."""
    return _percent(positive > negative)


def grouped_accuracy(positive: torch.Tensor, negative: torch.Tensor, groups: Sequence[str]) -> dict[str, float]:
    """`pair_accuracy` per group label (e.g. per ARO relation); `groups` has one label per item."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    return {g: pair_accuracy(positive[idx], negative[idx]) for g, idx in sorted(members.items())}


def macro_micro_accuracy(positive: torch.Tensor, negative: torch.Tensor, groups: Sequence[str]) -> dict[str, float]:
    """ARO's two summaries: `macro` = mean of per-group accuracies (each relation weighs the
    same, as in the ARO paper), `micro` = accuracy over all items."""
    per_group = grouped_accuracy(positive, negative, groups)
    macro = sum(per_group.values()) / len(per_group) if per_group else float("nan")
    return {"macro": macro, "micro": pair_accuracy(positive, negative)}


def sugarcrepe_pp_scores(
    img_p1: torch.Tensor,
    img_p2: torch.Tensor,
    img_neg: torch.Tensor,
    p1_p2: torch.Tensor,
    p1_neg: torch.Tensor,
    p2_neg: torch.Tensor,
) -> dict[str, float]:
    """SugarCrepe++ (Dumpala et al. 2024), all inputs `(n,)` similarities.

    ITT (image-to-text): both positives closer to the image than the negative,
    `s(I,P1) > s(I,N) and s(I,P2) > s(I,N)`. TOT (text-only): the two positives closer to each
    other than either is to the negative, `s(P1,P2) > s(P1,N) and s(P1,P2) > s(P2,N)`.
    """
    return {
        "ITT": _percent((img_p1 > img_neg) & (img_p2 > img_neg)),
        "TOT": _percent((p1_p2 > p1_neg) & (p1_p2 > p2_neg)),
    }


def winoground_scores(sim: torch.Tensor) -> dict[str, float]:
    """Winoground text / image / group scores (Thrush et al. 2022).

    `sim`: `(n, 2, 2)` with `sim[e, c, i]` = similarity of caption c and image i of example e;
    caption c is the true one for image c. text: for each image the right caption wins,
    `s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1)`; image: for each caption the right image wins,
    `s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0)`; group: both.
    """
    c0i0, c0i1, c1i0, c1i1 = sim[:, 0, 0], sim[:, 0, 1], sim[:, 1, 0], sim[:, 1, 1]
    text = (c0i0 > c1i0) & (c1i1 > c0i1)
    image = (c0i0 > c0i1) & (c1i1 > c1i0)
    return {"text": _percent(text), "image": _percent(image), "group": _percent(text & image)}


def class_prototypes(template_embeddings: torch.Tensor) -> torch.Tensor:
    """Zero-shot classifier weights: `(n_classes, n_templates, dim)` L2-normalised template
    embeddings -> `(n_classes, dim)`: the mean over templates, renormalised (CLIP's recipe)."""
    return torch.nn.functional.normalize(template_embeddings.mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """`{"top{k}": percent}`: the true class among the k best, ties against the model.
    `logits`: `(n, n_classes)`, `labels`: `(n,)` int64."""
    ranks = best_positive_rank(logits, positive_mask(labels, logits.shape[1]))
    return {f"top{k}": _percent(ranks < k) for k in ks}


def zeroshot_ks(n_classes: int) -> tuple[int, ...]:
    """The k's to report: top-1 and top-5, except that top-k with k >= n_classes is always 100
    and says nothing, so with 5 or fewer classes the second k is n_classes - 1, named honestly
    (`top4`, `top2`); a 2-class task reports top-1 only."""
    second = min(5, n_classes - 1)
    return (1, second) if second >= 2 else (1,)
