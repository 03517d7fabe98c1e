"""The report's chart: grouped bars of compositional accuracy per category, one bar per model.

The categories are the benchmarks' `chart_bars` (two-way choices with chance at 50%), in suite order.
"""

from __future__ import annotations

from pathlib import Path

from vladva.eval.benchmarks import Bar, benchmarks, dig


def chart_bars() -> list[Bar]:
    """`(label, path into a model's metrics)` of every benchmark's bars."""
    return [bar for b in benchmarks() for bar in b.chart_bars()]


def _value(model: dict, keys: tuple[str, ...]) -> float | None:
    value = dig(model, "metrics", *keys)
    return value if isinstance(value, (int, float)) else None


def compositional_chart(models: list[dict], path: Path) -> Path | None:
    """Write a PNG of per-category accuracy (SugarCrepe categories, ARO, ...) for each model, with a
    dashed line at chance (50%). Returns the path, or None when no model has such scores."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt
    import numpy as np

    cats = [(label, keys) for label, keys in chart_bars() if any(_value(m, keys) is not None for m in models)]
    if not cats or not models:
        return None
    x = np.arange(len(cats))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(cats) * max(1, len(models) / 2)), 4.0), dpi=100)
    for i, m in enumerate(models):
        values = [_value(m, keys) for _, keys in cats]
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=m["name"])
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, [label for label, _ in cats], rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Compositional accuracy per category")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")  # the path may be a temporary name without .png
    plt.close(fig)
    return path
