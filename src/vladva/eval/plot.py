"""The report's chart: one panel per kind of result that was evaluated, one bar per model.

Each benchmark says which bars it draws (`chart_bars_for`) and in which panel (`chart_panel`, with
an optional dashed chance line `chart_chance`): retrieval recall, compositional two-way choices
(chance 50%), Winoground, zero-shot top-1. A panel appears when some model has a value in it, so
a retrieval-only evaluation still gets its chart.
"""

from __future__ import annotations

from pathlib import Path

from vladva.eval.benchmarks import Bar, benchmarks, dig


def chart_panels(models: list[dict]) -> list[tuple[str, float | None, list[Bar]]]:
    """`(title, chance or None, bars)` of every panel some model has a value in, in suite order;
    within a panel only the bars with a value."""
    panels: dict[str, tuple[float | None, list[Bar]]] = {}
    for b in benchmarks():
        bars = [bar for bar in b.chart_bars_for(models) if any(_value(m, bar[1]) is not None for m in models)]
        if bars:
            chance, old = panels.get(b.chart_panel, (b.chart_chance, []))
            panels[b.chart_panel] = (chance, old + bars)
    return [(title, chance, bars) for title, (chance, bars) in panels.items()]


def chart_bars() -> list[Bar]:
    """`(label, path into a model's metrics)` of every benchmark's fixed bars."""
    return [bar for b in benchmarks() for bar in b.chart_bars()]


def _value(model: dict, keys: tuple[str, ...]) -> float | None:
    value = dig(model, "metrics", *keys)
    return value if isinstance(value, (int, float)) else None


def results_chart(models: list[dict], path: Path) -> Path | None:
    """Write a PNG with one panel per evaluated kind of result (percentages, one bar per model)
    to `path`. Returns the path, or None when no model has any charted value."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt
    import numpy as np

    panels = chart_panels(models) if models else []
    if not panels:
        return None
    widths = [max(2.5, 0.9 * len(bars) * max(1, len(models) / 2)) for _, _, bars in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(6.0, sum(widths) + 2.5), 4.2),
        dpi=100,
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    width = 0.8 / len(models)
    for ax, (title, chance, bars) in zip(axes[0], panels):
        x = np.arange(len(bars))
        for i, m in enumerate(models):
            heights = [_value(m, keys) or 0.0 for _, keys in bars]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=m["name"], color=f"C{i}")
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, [label for label, _ in bars], rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize="medium")
    axes[0][0].set_ylabel("%")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # the chance line may be only in a later panel
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize="small", loc="upper right")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    path = Path(path)
    fig.savefig(path, format="png")  # the path may be a temporary name without .png
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
