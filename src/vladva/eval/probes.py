"""What the binding diagnostic measures on a table of features: linear probes and swap sensitivity.

A linear probe is a multinomial logistic regression (softmax over the classes, L2 penalty on the
weights) on features standardised with the training rows' mean and spread, fitted by L-BFGS (up
to 200 iterations) from zero weights: deterministic, no seed to set. Linear, not an MLP: an MLP
probe reads a single object's shape from random features (`vladva.toyworld.base.probes`), so it
would prove nothing. It answers "can a linear read-out recover this label?": near 100 % on
held-out rows means the information is there and linearly available; near chance, that it is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    l2: float = 1e-3,
    max_iter: int = 200,
) -> float:
    """Fit multinomial logistic regression on `train_x (n, d)` / `train_y (n,)` integer labels with
    L-BFGS; return the accuracy (0..1) on `test_x`, `test_y`. Labels unseen in training count as misses."""
    train_x, test_x = train_x.double(), test_x.double()
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(xtr.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, train_y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (xte @ w + b).argmax(1)
    return float((pred == test_y).double().mean())


def grouped_probe_accuracy(
    features: torch.Tensor,
    rows: Sequence[int],
    groups: Sequence[str],
    labels: Sequence[int],
    train: Sequence[bool],
    **probe_kwargs,
) -> float:
    """Held-out accuracy (%) of one probe per group. Example `e` is row `rows[e]` of `features`
    `(n, dim)` with label `labels[e]`, asked within group `groups[e]` (for "the colour of the
    <shape>": the shape), and is a training example when `train[e]`. Each group's probe is fitted
    on its training examples and scored on its other examples; the accuracy counts every scored
    example of every group. NaN when no group has both training and held-out examples."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: more threads only add overhead (much more on a busy machine)
    try:
        return _grouped_probe_accuracy(features, rows, groups, labels, train, **probe_kwargs)
    finally:
        torch.set_num_threads(threads)


def _grouped_probe_accuracy(features, rows, groups, labels, train, **probe_kwargs) -> float:
    rows_t, labels_t = torch.tensor(list(rows)), torch.tensor(list(labels))
    train_t = torch.tensor(list(train), dtype=torch.bool)
    x = features[rows_t]
    correct = total = 0
    for g in sorted(set(groups)):
        in_g = torch.tensor([x == g for x in groups], dtype=torch.bool)
        fit, held = in_g & train_t, in_g & ~train_t
        if not fit.any() or not held.any():
            continue
        n = int(held.sum())
        correct += n * linear_probe_accuracy(x[fit], labels_t[fit], x[held], labels_t[held], **probe_kwargs)
        total += n
    return 100.0 * round(correct) / total if total else float("nan")


MIN_DISTANCE = 1e-5  # mean cosine distance below which features count as constant across items


def swap_sensitivity(features: torch.Tensor, pairs: Sequence[tuple[int, int, int]]) -> float:
    """How far a swap moves an item, as a percentage of how far apart random items are: for
    `(item, swapped, other)` row triples of `features` `(n, dim)`, the mean cosine distance
    (1 - cos) of item to swapped over the mean cosine distance of item to other. 0: the swap is
    invisible; 100: a swap moves an item as far as replacing it with a random other item. NaN when
    random items are no further apart than `MIN_DISTANCE` (the features do not vary)."""
    idx = torch.tensor(list(pairs))
    x = F.normalize(features.float(), dim=-1)
    a, s, o = x[idx[:, 0]], x[idx[:, 1]], x[idx[:, 2]]
    swap = (1 - (a * s).sum(-1)).clamp_min(0).mean()  # clamp: round-off must not give -0.0
    random = (1 - (a * o).sum(-1)).clamp_min(0).mean()
    # Features that do not vary between items (e.g. the state of a fixed prompt token before any
    # layer has mixed in the input) have no scale to measure a swap against: NaN, not round-off / round-off.
    return float(100.0 * swap / random) if random > MIN_DISTANCE else float("nan")
