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
    fig.savefig(path)
    plt.close(fig)
    return path


def ablation_chart(block: dict, columns: list[tuple[str, str]], path: Path) -> Path | None:
    """A PNG of one ablation block: grouped bars (one per cell) of each headline metric, the mean
    over seeds with an error bar of one standard deviation. `block` is an ablations.json block
    whose cells carry `stats` (vladva.eval.report.ablation_stats); `columns` are `(label, key)`.
    Returns the path, or None when no cell has a value yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = [c for c in block["cells"] if c.get("stats")]
    columns = [(h, k) for h, k in columns if any(k in c["stats"] for c in cells)]
    if not cells or not columns:
        return None
    x = np.arange(len(columns))
    width = 0.8 / len(cells)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(columns) * max(1, len(cells) / 3)), 4.2), dpi=100)
    for i, c in enumerate(cells):
        stats = [c["stats"].get(k) for _, k in columns]
        means = [s["mean"] if s else 0.0 for s in stats]
        stds = [s["std"] if s else 0.0 for s in stats]
        label = c["label"] + (" (zero-shot)" if c.get("zero_shot") else f" (n={len(c['runs'])})")
        ax.bar(x + (i - (len(cells) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(x, [h for h, _ in columns], rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% (mean ± std over seeds)")
    ax.set_title(block.get("title") or block["name"])
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
