"""The learning-rate schedule every training loop uses: linear warm-up, then cosine (or constant)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, progress: float, min_ratio: float = 0.0, schedule: str = "cosine") -> float:
    """Multiplier of each group's peak learning rate at optimizer step `step` (0-based).

    The first `warmup` steps ramp linearly, `(step + 1) / (warmup + 1)`; after that the factor
    follows a half cosine from 1 down to `min_ratio` as `progress` goes from 0 to 1 (clamped), or
    stays 1 with `schedule="constant"`. `progress` is the caller's measure of how far training is
    past the warm-up (steps done over steps planned, or a wall-clock fraction)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    p = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def step_progress(step: int, warmup: int, total: int) -> float:
    """How far step `step` is through the `total - warmup` steps after the warm-up, in [0, 1]."""
    return min(1.0, (step - warmup) / max(1, total - warmup))
