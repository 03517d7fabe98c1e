"""One function per benchmark: embed a loaded data set with a `CachedEncoder`, then score it
with `vladva.eval.metrics`. Each returns `(metrics, counts)`: nested dicts of percentages and
of the number of items each metric was computed on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from vladva.eval import metrics as M
from vladva.eval.cache import CachedEncoder
from vladva.eval.loaders import PairSet, ParaphraseSet, RetrievalSet, WinogroundSet, ZeroShotSet


def subsample(n: int, limit: int, seed: int) -> list[int]:
    """Indices of a seeded random subset of size `limit` (in original order); all if limit <= 0."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def _take(seq: Sequence, idx: list[int]) -> list:
    return [seq[i] for i in idx]


def _rowwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows of two `(n, dim)` L2-normalised tensors -> `(n,)`."""
    return (a * b).sum(dim=-1)


def run_retrieval(
    enc: CachedEncoder, rs: RetrievalSet, ks: Sequence[int] = M.DEFAULT_KS, limit: int = 0, seed: int = 0
) -> tuple[dict, dict]:
    """Image<->text recall at `ks` over the whole gallery; `limit` keeps that many images (and
    all their captions). Adds `t2i_valid_R@k` when caption_truth.json lists images per caption,
    and `t2i_unique_R@k` (text->image over captions true for exactly one image) when it counts."""
    keep = subsample(len(rs.images), limit, seed)
    new_index = {old: new for new, old in enumerate(keep)}
    cap_idx = [j for j, i in enumerate(rs.caption_image) if i in new_index]
    images = _take(rs.images, keep)
    captions = _take(rs.captions, cap_idx)
    caption_image = torch.tensor([new_index[rs.caption_image[j]] for j in cap_idx])
    sim = enc.images(images, "retrieval images") @ enc.texts(captions, "retrieval captions").T
    true_for = None
    if rs.caption_true_for is not None:
        true_for = torch.zeros(len(cap_idx), len(keep), dtype=torch.bool)
        for row, j in enumerate(cap_idx):
            for i in rs.caption_true_for[j]:
                if i in new_index:
                    true_for[row, new_index[i]] = True
    out = M.retrieval_recalls(sim, caption_image, ks, true_for)
    counts = {"images": len(keep), "captions": len(cap_idx)}
    if rs.caption_true_count is not None and limit <= 0:
        unique = [row for row, j in enumerate(cap_idx) if rs.caption_true_count[j] == 1]
        if unique:
            own = torch.zeros(len(unique), len(keep), dtype=torch.bool)
            own[torch.arange(len(unique)), caption_image[unique]] = True
            ranks = M.best_positive_rank(sim.T[unique], own)
            out |= {f"t2i_unique_{k}": v for k, v in M.recall_at_k(ranks, ks).items()}
            counts["unique_captions"] = len(unique)
    return out, counts


def run_pairs(enc: CachedEncoder, sets: list[PairSet], limit: int = 0, seed: int = 0) -> tuple[dict, dict]:
    """SugarCrepe: accuracy per category, positive caption strictly above the negative."""
    out, counts = {}, {}
    for ps in sets:
        idx = subsample(len(ps.images), limit, seed)
        img = enc.images(_take(ps.images, idx), f"{ps.name} images")
        pos = _rowwise(img, enc.texts(_take(ps.positives, idx), f"{ps.name} captions"))
        neg = _rowwise(img, enc.texts(_take(ps.negatives, idx), f"{ps.name} negatives"))
        out[ps.name] = M.pair_accuracy(pos, neg)
        counts[ps.name] = len(idx)
    return out, counts


def run_aro(enc: CachedEncoder, sets: list[PairSet], limit: int = 0, seed: int = 0) -> tuple[dict, dict]:
    """ARO VG-Relation / VG-Attribution on box crops: macro (mean over relations or attribute
    pairs) and micro accuracy, plus the per-group accuracies."""
    out, counts = {}, {}
    for ps in sets:
        idx = subsample(len(ps.images), limit, seed)
        img = enc.images(_take(ps.images, idx), f"aro {ps.name} crops")
        pos = _rowwise(img, enc.texts(_take(ps.positives, idx), f"aro {ps.name} true"))
        neg = _rowwise(img, enc.texts(_take(ps.negatives, idx), f"aro {ps.name} false"))
        groups = _take(ps.groups, idx)
        out[ps.name] = M.macro_micro_accuracy(pos, neg, groups) | {"per_group": M.grouped_accuracy(pos, neg, groups)}
        counts[ps.name] = len(idx)
    return out, counts


def run_sugarcrepe_pp(
    enc: CachedEncoder, sets: list[ParaphraseSet], limit: int = 0, seed: int = 0
) -> tuple[dict, dict]:
    """SugarCrepe++ ITT and TOT per category, and their mean over categories."""
    out, counts = {}, {}
    for ps in sets:
        idx = subsample(len(ps.images), limit, seed)
        img = enc.images(_take(ps.images, idx), f"{ps.name}++ images")
        p1 = enc.texts(_take(ps.captions, idx), f"{ps.name}++ captions")
        p2 = enc.texts(_take(ps.captions2, idx), f"{ps.name}++ paraphrases")
        ng = enc.texts(_take(ps.negatives, idx), f"{ps.name}++ negatives")
        out[ps.name] = M.sugarcrepe_pp_scores(
            _rowwise(img, p1),
            _rowwise(img, p2),
            _rowwise(img, ng),
            _rowwise(p1, p2),
            _rowwise(p1, ng),
            _rowwise(p2, ng),
        )
        counts[ps.name] = len(idx)
    out["mean"] = {m: sum(v[m] for v in out.values()) / len(sets) for m in ("ITT", "TOT")}
    return out, counts


def run_winoground(enc: CachedEncoder, ws: WinogroundSet, limit: int = 0, seed: int = 0) -> tuple[dict, dict]:
    """Winoground text / image / group scores."""
    idx = subsample(len(ws.captions_0), limit, seed)
    i0 = enc.images(_take(ws.images_0, idx), "winoground image_0")
    i1 = enc.images(_take(ws.images_1, idx), "winoground image_1")
    c0 = enc.texts(_take(ws.captions_0, idx), "winoground caption_0")
    c1 = enc.texts(_take(ws.captions_1, idx), "winoground caption_1")
    sim = torch.stack(
        [
            torch.stack([_rowwise(c0, i0), _rowwise(c0, i1)], dim=1),
            torch.stack([_rowwise(c1, i0), _rowwise(c1, i1)], dim=1),
        ],
        dim=1,
    )  # (n, caption, image)
    return M.winoground_scores(sim), {"examples": len(idx)}


def run_zeroshot(enc: CachedEncoder, zs: ZeroShotSet, limit: int = 0, seed: int = 0) -> tuple[dict, dict]:
    """Zero-shot top-1 (and top-5, or top-(n_classes-1) for small tasks) with template-averaged
    class embeddings."""
    idx = subsample(len(zs.images), limit, seed)
    prompts = [t.replace("{c}", c) for c in zs.classnames for t in zs.templates]
    text = enc.texts(prompts, f"{zs.name} prompts").view(len(zs.classnames), len(zs.templates), -1)
    logits = enc.images(_take(zs.images, idx), f"{zs.name} images") @ M.class_prototypes(text).T
    labels = torch.tensor(_take(zs.labels, idx))
    return M.topk_accuracy(logits, labels, M.zeroshot_ks(len(zs.classnames))), {
        "images": len(idx),
        "classes": len(zs.classnames),
    }
