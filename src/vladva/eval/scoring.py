"""What the benchmarks' scorers share: seeded subsets, row-wise cosine similarity, and the one
two-way test (an image against its positive and its hard-negative caption) that SugarCrepe and
ARO both run. A scorer returns `(metrics, counts)`: nested dicts of percentages and of the
number of items each metric was computed on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vladva.eval.cache import CachedEncoder
    from vladva.eval.loaders import PairSet


def subsample(n: int, limit: int, seed: int) -> list[int]:
    """Indices of a seeded random subset of size `limit` (in original order); all if limit <= 0."""
    if limit <= 0 or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def take(seq: Sequence, idx: list[int]) -> list:
    """`[seq[i] for i in idx]`."""
    return [seq[i] for i in idx]


def rowwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows of two `(n, dim)` L2-normalised tensors -> `(n,)`."""
    return (a * b).sum(dim=-1)


def score_pair_sets(
    enc: CachedEncoder,
    sets: list[PairSet],
    limit: int,
    seed: int,
    summarise: Callable[[torch.Tensor, torch.Tensor, list[str]], object],
    label: str = "",
) -> tuple[dict, dict]:
    """Per set: similarities `(n,)` of each image to its positive and to its negative caption,
    turned into the set's metrics by `summarise(positive, negative, groups)`; `label` prefixes
    the progress-bar descriptions."""
    out, counts = {}, {}
    for ps in sets:
        idx = subsample(len(ps.images), limit, seed)
        img = enc.images(take(ps.images, idx), f"{label}{ps.name} images")
        pos = rowwise(img, enc.texts(take(ps.positives, idx), f"{label}{ps.name} positives"))
        neg = rowwise(img, enc.texts(take(ps.negatives, idx), f"{label}{ps.name} negatives"))
        out[ps.name] = summarise(pos, neg, take(ps.groups, idx) if ps.groups else [])
        counts[ps.name] = len(idx)
    return out, counts
