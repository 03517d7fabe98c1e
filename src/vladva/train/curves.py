"""The training-curve chart of a run: `RUN/training_curves.png` from `RUN/metrics.jsonl`.

Four panels over optimizer steps: the loss terms (total, contrastive, next-token), the learned
temperature (1 / logit scale), the held-out R@1 of the validation evaluations (text->image and
image->text) and the in-batch / hard-negative accuracies. The trainer writes it when a run ends;
`vladva report RUN` redraws it for any run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

CURVES_FILE = "training_curves.png"
METRICS_FILE = "metrics.jsonl"

LOSS_KEYS = (("loss", "total"), ("contrastive", "contrastive"), ("ntp", "next-token"))
ACCURACY_KEYS = (("batch_acc", "in-batch accuracy"), ("hard_neg_acc", "hard-negative accuracy"))


def read_metrics(path: Path | str) -> list[dict]:
    """The records of a `metrics.jsonl` (`FileNotFoundError` / `ValueError` naming the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training metrics (is this a `vladva train` run folder?)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
    return records


def _series(records: list[dict], key: str, scale=None) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(r["step"])
            values.append(scale(value) if scale else value)
    return steps, values


def plot_training_curves(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Draw the curves of the run in `run_dir` (its metrics.jsonl) to `out` (default
    `run_dir/training_curves.png`); returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    steps_rows = [r for r in records if "eval" not in r]
    eval_rows = [{"step": r["step"], **r["eval"]} for r in records if isinstance(r.get("eval"), dict)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=100)
    panels = [
        (axes[0][0], "loss", [(k, label, None) for k, label in LOSS_KEYS], steps_rows, None),
        (
            axes[0][1],
            "temperature (1 / logit scale)",
            [("logit_scale", "temperature", lambda s: 1 / s)],
            steps_rows,
            None,
        ),
        (
            axes[1][0],
            "held-out R@1 (%)",
            [("t2i_r1", "text→image", None), ("i2t_r1", "image→text", None)],
            eval_rows,
            (0, 100),
        ),
        (axes[1][1], "accuracy in the batch", [(k, label, None) for k, label in ACCURACY_KEYS], steps_rows, (0, 1)),
    ]
    for ax, title, lines, rows, ylim in panels:
        drawn = 0
        for key, label, scale in lines:
            xs, ys = _series(rows, key, scale)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, markersize=3, label=label)
                drawn += 1
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step")
        if ylim:
            ax.set_ylim(*ylim)
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"training curves: {run_dir.name}")
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / CURVES_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
