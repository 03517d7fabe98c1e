"""results.json / results.md / results.png for one `vladva eval` run or several merged runs.

A report is `{"schema", "runs": [provenance of each run], "models": [entry + "run": index]}`;
a single run's results.json is its own report with one run. The markdown puts one row per
model in a summary table (the numbers a person compares), then detail tables per suite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vladva.eval.benchmarks import Column, benchmarks, dig

REPORT_SCHEMA = "vladva.eval.report/1"
RUN_KEYS = (
    "created",
    "data",
    "seed",
    "config",
    "versions",
    "git_commit",
    "git_dirty",
    "python",
    "platform",
    "torch_threads",
    "total_seconds",
)


def as_report(results: dict, path: str | None = None) -> dict:
    """A run's results dict (from `run_evaluation`) or an already-merged report -> a report."""
    if results.get("schema") == REPORT_SCHEMA:
        return results
    if "models" not in results:
        raise ValueError(f"{path or 'results'}: not a vladva results file (no 'models' key)")
    run = {k: results.get(k) for k in RUN_KEYS} | {"path": path}
    return {"schema": REPORT_SCHEMA, "runs": [run], "models": [dict(m, run=0) for m in results["models"]]}


def merge_reports(reports: list[dict]) -> dict:
    """Concatenate the models of several reports; a repeated model name gets `@<run folder>`."""
    runs, models, seen = [], [], set()
    for rep in reports:
        offset = len(runs)
        runs.extend(rep["runs"])
        for m in rep["models"]:
            m = dict(m, run=m.get("run", 0) + offset)
            if m["name"] in seen:
                where = Path(runs[m["run"]].get("path") or f"run{m['run']}").name
                m["name"] = f"{m['name']}@{where}"
            seen.add(m["name"])
            models.append(m)
    return {"schema": REPORT_SCHEMA, "runs": runs, "models": models}


def read_report(run_dir: Path) -> dict:
    """The report in `run_dir/results.json` (a run or a merged report)."""
    path = Path(run_dir) / "results.json" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (run `vladva eval --out {run_dir}` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return as_report(data, str(path.parent))


# ----------------------------------------------------------------------------- table


def seen_count(model: dict, key: str) -> str | None:
    """A model's training count `key` (`pairs`, `long_captions`, `tokens`, summed over every stage
    of its folders, vladva.eval.models.read_train_compute) as `"217k"`; `"≥217k"` when some stage
    does not state it (a record written before it was counted)."""
    value = dig(model, "train_compute", key)
    if value is None:
        return None
    partial = key in (dig(model, "train_compute", "incomplete") or [])
    return ("≥" if partial else "") + human_count(int(value))


def summary_columns(models: list[dict]) -> list[Column]:
    """The summary table's columns: size and training compute (what the model saw: contrastive
    image-caption pairs, long captions, text tokens; and CPU / accelerator time), then each
    benchmark's in suite order, keeping those some model has a value for."""
    cols: list[Column] = [
        ("params", lambda m: None if m.get("params") is None else human_count(m["params"])),
        ("pairs seen", lambda m: seen_count(m, "pairs")),
        ("long captions", lambda m: seen_count(m, "long_captions")),
        ("tokens", lambda m: seen_count(m, "tokens")),
        ("train CPU-min", lambda m: dig(m, "train_compute", "cpu_minutes")),
        ("train GPU-s", lambda m: dig(m, "train_compute", "gpu_seconds")),
        # shown only when some model could not read some words (vladva.data.vocab)
        ("unknown words %", lambda m: 100 * m["unknown_token_rate"] if m.get("unknown_token_rate") else None),
    ]
    for benchmark in benchmarks():
        cols += benchmark.summary_columns(models)
    return [c for c in cols if any(c[1](m) is not None for m in models)]


def human_count(n: int) -> str:
    """3670016 -> "3.67M"; 8 -> "8"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 0.1 or value == 0 else f"{value:.2g}"
    return str(value)


def _fmt_count(value) -> str | None:
    return None if value is None else f"{int(value):,}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; cells are used as given (format them first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the summary table (one row per model)."""
    cols = summary_columns(report["models"])
    header = ["model"] + [c[0] for c in cols]
    rows = [[m["name"]] + [_fmt(c[1](m)) for c in cols] for m in report["models"]]
    return header, rows


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{"zeroshot": {"colours": {"images": 4}}} -> {"zeroshot colours images": 4}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix} {k}".strip()
        out |= _flatten(v, key) if isinstance(v, dict) else {key: v}
    return out


def _detail_sections(models: list[dict]) -> list[str]:
    out = []

    def section(title: str, header: list[str], rows: list[list[str]]):
        if rows:
            out.append(f"### {title}\n\n" + markdown_table(header, rows))

    for benchmark in benchmarks():
        for table in benchmark.detail_tables(models):
            section(table.title, table.header, [[_fmt(v) for v in row] for row in table.rows])
    section(
        "Training compute by stage",
        ["model", "stage", "steps", "pairs", "long captions", "examples", "tokens", "device", "seconds"],
        [
            [
                _fmt(v)
                for v in [m["name"], st.get("stage")]
                + [_fmt_count(st.get(k)) for k in ("steps", "pairs", "long_captions", "examples", "tokens")]
                + [st.get("device"), st.get("seconds")]
            ]
            for m in models
            for st in dig(m, "train_compute", "stages") or []
        ],
    )
    flat = [_flatten(m.get("counts") or {}) for m in models]
    count_keys = sorted({k for f in flat for k in f})
    if count_keys:
        section(
            "Items evaluated",
            ["model"] + count_keys,
            [[m["name"]] + [_fmt(f.get(k)) for k in count_keys] for m, f in zip(models, flat)],
        )
    section(
        "Timings (seconds)",
        ["model", "total", "encode images", "encode texts"],
        [
            [
                m["name"],
                _fmt(float(sum(v for k, v in m.get("timings_s", {}).items() if not k.startswith("encode")))),
                _fmt(dig(m, "timings_s", "encode_images")),
                _fmt(dig(m, "timings_s", "encode_texts")),
            ]
            for m in models
        ],
    )
    return out


def render_markdown(report: dict, chart_name: str | None = "results.png", figures: list[tuple[str, str]] = ()) -> str:
    """results.md: the summary table, the chart, the benchmarks' own `figures` (`(caption, file
    name)`), the detail tables, the runs."""
    header, rows = summary_rows(report)
    legends = [b.legend for b in benchmarks() if b.legend and b.results(report["models"])]
    parts = [
        "# vladva evaluation",
        "",
        "Percentages; ties count against the model (see docs/evaluation.md)."
        + (" " + ", ".join(legends) + "." if legends else ""),
        "",
        markdown_table(header, rows),
        "",
    ]
    if chart_name:
        parts += [f"![results per benchmark, one bar per model]({chart_name})", ""]
    for caption, name in figures:
        parts += [f"![{caption}]({name})", ""]
    parts += [s + "\n" for s in _detail_sections(report["models"])]
    parts.append("### Runs\n")
    run_rows = []
    for i, r in enumerate(report["runs"]):
        versions = r.get("versions") or {}
        commit = (r.get("git_commit") or "?")[:10] + ("+dirty" if r.get("git_dirty") else "")
        data = "; ".join(f"{k}: {v}" for k, v in (r.get("data") or {}).items())
        run_rows.append(
            [
                str(i),
                r.get("created") or "?",
                commit,
                str(r.get("seed")),
                f"torch {versions.get('torch')}, transformers {versions.get('transformers')}",
                data,
            ]
        )
    parts.append(markdown_table(["run", "created", "commit", "seed", "versions", "data"], run_rows))
    parts.append("")
    parts.append(
        markdown_table(
            ["model", "run", "spec"], [[m["name"], str(m.get("run", 0)), f"`{m['spec']}`"] for m in report["models"]]
        )
    )
    return "\n".join(parts) + "\n"


def print_summary(report: dict) -> None:
    """The summary table in the terminal (rich), transposed to fit: one row per metric, one
    column per model."""
    from rich.console import Console
    from rich.table import Table

    header, rows = summary_rows(report)
    table = Table(title="vladva evaluation (%)")
    table.add_column("metric")
    for r in rows:
        table.add_column(r[0], justify="right")
    for i, name in enumerate(header[1:], start=1):
        table.add_row(name, *[r[i] for r in rows])
    Console().print(table)


# ----------------------------------------------------------------------------- seed spread

_COMPUTE_COLUMNS = ("params", "train CPU-min", "train GPU-s")


def seed_spread(reports: list[dict], seeds: list[int]) -> dict:
    """Every summary figure of every model over reports of the same models run with different
    seeds -> `{"seeds", "models": {name: {column: {"mean", "std", "values"}}}}`; `std` is the
    sample standard deviation (0 for one seed), `values` are in seed order."""
    import statistics

    models = [m for r in reports for m in r["models"]]
    columns = [c for c in summary_columns(models) if c[0] not in _COMPUTE_COLUMNS]
    out: dict[str, dict] = {}
    for name in dict.fromkeys(m["name"] for m in reports[0]["models"]):
        rows = [next(m for m in r["models"] if m["name"] == name) for r in reports]
        figures = {}
        for label, get in columns:
            values = [get(m) for m in rows]
            if all(isinstance(v, (int, float)) and not math.isnan(v) for v in values):
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                figures[label] = {"mean": round(statistics.fmean(values), 2), "std": round(std, 2), "values": values}
        out[name] = figures
    return {"seeds": list(seeds), "models": out}


def spread_markdown(spread: dict) -> str:
    """The seed spread as a table: one row per model, `mean ± std` per figure."""
    labels = list(dict.fromkeys(k for figures in spread["models"].values() for k in figures))
    rows = [
        [name] + [f"{f[k]['mean']:.1f} ± {f[k]['std']:.1f}" if k in f else "–" for k in labels]
        for name, f in spread["models"].items()
    ]
    seeds = ", ".join(map(str, spread["seeds"]))
    return (
        f"# Seed spread: mean ± sample std over {len(spread['seeds'])} seeds ({seeds})\n\n"
        + markdown_table(["model"] + labels, rows)
        + "\n"
    )


def _finite(obj):
    """NaN (a metric over zero items) -> null, so results.json stays strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write results.json, results.md, results.png (one chart panel per kind of result evaluated)
    and the benchmarks' own charts."""
    from vladva.eval.plot import results_chart
    from vladva.storage import fsync_dir, fsync_file, temporary_name, writing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    # All files are written under temporary names first (where a full disk fails), then renamed
    # together (renames need no space): the folder shows either the previous report or the new one.
    staged: list[tuple[Path, Path]] = []
    chart_tmp = temporary_name(out_dir / "results.png")
    intact = f"the previous results in {out_dir}, if any, are unchanged; free some space and run again"
    try:
        with writing("the evaluation report", out_dir, intact):
            chart = results_chart(report["models"], chart_tmp)
            if chart is not None:
                paths["png"] = out_dir / "results.png"
                staged.append((chart, paths["png"]))
            figures = [f for b in benchmarks() for f in b.figures(report["models"], out_dir)]
            for _caption, name in figures:
                paths[Path(name).stem] = out_dir / name
            texts = {
                "md": render_markdown(report, "results.png" if chart else None, figures),
                "json": json.dumps(_finite(report), indent=2, allow_nan=False) + "\n",
            }
            for key, text in texts.items():
                tmp = temporary_name(paths[key])
                staged.append((tmp, paths[key]))
                tmp.write_text(text, encoding="utf-8")
            for tmp, _ in staged:
                fsync_file(tmp)
        for tmp, final in staged:
            tmp.replace(final)
        fsync_dir(out_dir)
    finally:
        for tmp in [chart_tmp] + [tmp for tmp, _ in staged]:
            tmp.unlink(missing_ok=True)
    return paths


# ----------------------------------------------------------------------------- ablations
#
# `vladva ablate` (vladva.ablation) writes OUT/ablations.json: the grid, and per block its cells,
# each with the records of its runs (one per seed: flattened metrics, the checkpoint's compute
# record, generation measures). This part of the report adds mean ± std over seeds and writes
# ablations.md (tables per block) and one PNG per block; `vladva report OUT` rewrites them.

ABLATION_SCHEMA = "vladva.ablations/1"
ABLATIONS_FILE = "ablations.json"

# The headline columns (the paper's Table 4 groups SugarCrepe into replace / swap / add):
# (header, key into a run's values, see `run_values`).
ABLATION_COLUMNS: list[tuple[str, str]] = [
    ("T→I R@1", "retrieval/t2i_R@1"),
    ("I→T R@1", "retrieval/i2t_R@1"),
    ("SC replace", "sugarcrepe/replace"),
    ("SC swap", "sugarcrepe/swap"),
    ("SC add", "sugarcrepe/add"),
    ("Wino group", "winoground/group"),
    ("ZS top-1", "zeroshot/mean_top1"),
]
COMPUTE_COLUMNS: list[tuple[str, str]] = [
    ("steps", "compute/steps"),
    ("pairs", "compute/pairs"),
    ("long captions", "compute/long_captions"),
    ("tokens", "compute/tokens"),
    ("train wall-s x threads", "compute/device_seconds"),
    ("train CPU-s (process)", "timing/train_cpu_s"),
    ("eval CPU-s (process)", "timing/eval_cpu_s"),
]
GENERATION_COLUMNS: list[tuple[str, str]] = [
    ("token acc., caption prompt", "generation/caption/token_accuracy"),
    ("token acc., summary prompt", "generation/summary/token_accuracy"),
    ("NLL, caption prompt", "generation/caption/nll"),
    ("NLL, summary prompt", "generation/summary/nll"),
]


def derived_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Means a table reads at a glance, from flattened metrics (`suite/key/...`): SugarCrepe's
    `replace` / `swap` / `add` (mean of their categories, as the paper's Table 4 groups them) and
    `zeroshot/mean_top1` (mean top-1 over the zero-shot tasks)."""
    out: dict[str, float] = {}
    groups: dict[str, list[float]] = {}
    for key, value in metrics.items():
        suite, _, rest = key.partition("/")
        if suite == "sugarcrepe" and "_" in rest and "/" not in rest:
            groups.setdefault(f"sugarcrepe/{rest.split('_')[0]}", []).append(value)
    out |= {k: sum(v) / len(v) for k, v in groups.items()}
    top1 = [v for k, v in metrics.items() if k.startswith("zeroshot/") and k.endswith("/top1")]
    if top1:
        out["zeroshot/mean_top1"] = sum(top1) / len(top1)
    return out


def run_values(run: dict) -> dict[str, float]:
    """Every number of one run record: its metrics, the derived means, `compute/<field>`,
    `timing/<field>` and `generation/<prompt>/<measure>`."""
    metrics = dict(run.get("metrics") or {})
    values = metrics | derived_metrics(metrics)
    for k, v in (run.get("compute") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[f"compute/{k}"] = float(v)
    for k, v in (run.get("timing") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[f"timing/{k}"] = float(v)
    for name, g in (run.get("generation") or {}).items():
        if isinstance(g, dict):
            for k in ("token_accuracy", "nll"):
                if isinstance(g.get(k), (int, float)):
                    values[f"generation/{name}/{k}"] = float(g[k])
    return values


def ablation_stats(runs: list[dict]) -> dict[str, dict]:
    """`{key: {"mean", "std", "n"}}` over the runs (one per seed): the sample standard deviation
    (n - 1); 0 for a single run (a zero-shot cell has no seeds)."""
    per_key: dict[str, list[float]] = {}
    for run in runs:
        for k, v in run_values(run).items():
            per_key.setdefault(k, []).append(v)
    out = {}
    for k, vals in sorted(per_key.items()):
        n = len(vals)
        mean = sum(vals) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        out[k] = {"mean": round(mean, 3), "std": round(std, 3), "n": n}
    return out


def difference(a: dict | None, b: dict | None) -> tuple[float, float] | None:
    """`(mean_a - mean_b, standard error of that difference)` from two `ablation_stats` entries."""
    if not a or not b:
        return None
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return a["mean"] - b["mean"], se


def add_ablation_stats(ablations: dict) -> dict:
    """The ablations dict with `stats` and `complete` on every cell."""
    for block in ablations["blocks"]:
        for cell in block["cells"]:
            cell["stats"] = ablation_stats(cell["runs"])
            cell["complete"] = len(cell["runs"]) == len(cell["seeds"])
    return ablations


def _pm(stat: dict | None, digits: int = 1) -> str:
    if not stat:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _cell_label(cell: dict) -> str:
    label = cell["label"] + (" †" if cell["zero_shot"] else "")
    if not cell.get("complete", True):
        label += f" ({len(cell['runs'])}/{len(cell['seeds'])} seeds)"
    return label


def _present(columns: list[tuple[str, str]], cells: list[dict]) -> list[tuple[str, str]]:
    return [(h, k) for h, k in columns if any(k in c.get("stats", {}) for c in cells)]


def _detail_columns(cells: list[dict]) -> list[tuple[str, str]]:
    """Every bar the benchmarks chart (retrieval, compositional categories, Winoground), Winoground's
    scores, each zero-shot task; each metric once."""
    from vladva.eval.plot import chart_bars

    cols = [(label, "/".join(keys)) for label, keys in chart_bars()]
    cols += [(f"Wino {s}", f"winoground/{s}") for s in ("text", "image")]
    tasks = sorted(
        {k for c in cells for k in c.get("stats", {}) if k.startswith("zeroshot/") and k.endswith("/top1")}
        - {"zeroshot/mean_top1"}
    )
    cols += [(f"ZS {k.split('/')[1]}", k) for k in tasks]
    unique: dict[str, str] = {}  # metric key -> its first label: each metric once
    for label, key in cols:
        unique.setdefault(key, label)
    return _present([(label, key) for key, label in unique.items()], cells)


def _block_markdown(block: dict, chart: str | None) -> list[str]:
    cells = block["cells"]
    parts = [f"## {block['title']}", ""]
    if block.get("note"):
        parts += [block["note"], ""]
    main = _present(ABLATION_COLUMNS, cells)
    rows = [[_cell_label(c), str(len(c["runs"]))] + [_pm(c["stats"].get(k)) for _, k in main] for c in cells]
    parts += [markdown_table(["cell", "runs"] + [h for h, _ in main], rows), ""]
    if chart:
        parts += [f"![{block['title']}]({chart})", ""]
    detail = _detail_columns(cells)
    if detail:
        rows = [[_cell_label(c)] + [_pm(c["stats"].get(k)) for _, k in detail] for c in cells]
        parts += ["Per category (%):", "", markdown_table(["cell"] + [h for h, _ in detail], rows), ""]
    ref = next((c for c in cells if c["name"] == block["reference"]), cells[0])
    if len(cells) > 1 and ref["runs"]:
        cols = main + _present(GENERATION_COLUMNS[:2], cells)
        rows = []
        for c in cells:
            if c is ref or not c["runs"]:
                continue
            row = [c["label"]]
            for _, k in cols:
                d = difference(c["stats"].get(k), ref["stats"].get(k))
                row.append("–" if d is None else f"{d[0]:+.1f}" + (" *" if abs(d[0]) > 2 * d[1] > 0 else ""))
            rows.append(row)
        parts += [
            f"Difference from **{ref['label']}** (mean minus mean; `*`: larger than twice the standard error of "
            "the difference, sqrt(s₁²/n₁ + s₂²/n₂), the rule used here to call a difference):",
            "",
            markdown_table(["cell"] + [h for h, _ in cols], rows),
            "",
        ]
    comp = _present(COMPUTE_COLUMNS, cells)
    if comp:
        rows = [
            [_cell_label(c), c["runs_of"] or ""]
            + [f"{c['stats'][k]['mean']:,.0f}" if k in c["stats"] else "–" for _, k in comp]
            for c in cells
        ]
        parts += [
            "Compute per run (mean over seeds): steps, pairs, long captions, tokens and the training loop's "
            "wall seconds x threads from the checkpoint's compute.json; CPU-s (process): the CPU time the run's "
            "process used for training (with model loading) and for evaluation (with generation), which a "
            "loaded machine does not inflate as it does wall time:",
            "",
            markdown_table(["cell", "same runs as"] + [h for h, _ in comp], rows),
            "",
        ]
    if block.get("generation"):
        parts += _generation_markdown(cells)
    return parts


def _generation_markdown(cells: list[dict]) -> list[str]:
    cols = _present(GENERATION_COLUMNS, cells)
    if not cols:
        return []
    rows = [[_cell_label(c)] + [_pm(c["stats"].get(k), 2 if "nll" in k else 1) for _, k in cols] for c in cells]
    parts = [
        "Generation (held-out long captions, teacher-forced next-token accuracy % and NLL per token; "
        "caption prompt: the base's own captioning instruction, no soft prompt; summary prompt: the "
        "layout the next-token loss trains, with the soft prompt):",
        "",
        markdown_table(["cell"] + [h for h, _ in cols], rows),
        "",
    ]
    first = next((c["runs"][0]["generation"] for c in cells if c["runs"] and c["runs"][0].get("generation")), None)
    if first and first.get("references"):
        parts += ["Greedy captions of the first validation images (first seed of each cell):", ""]
        for i, ref in enumerate(first["references"]):
            parts += [f"- image {i + 1}, reference: {ref}"]
            for c in cells:
                g = c["runs"][0].get("generation") if c["runs"] else None
                for name in ("caption", "summary"):
                    samples = (g or {}).get(name, {}).get("samples", [])
                    if i < len(samples):
                        parts.append(f"  - {c['label']}, {name} prompt: {samples[i] or '(empty)'}")
        parts.append("")
    return parts


def render_ablation_markdown(ablations: dict, charts: dict[str, str] | None = None) -> str:
    """ablations.md: per block the mean ± std table, its chart, per-category details, differences
    from the block's reference, compute and (for generation blocks) generation."""
    charts = charts or {}
    grid = ablations.get("grid", {})
    progress = ablations.get("progress") or {}
    parts = [
        "# vladva ablations",
        "",
        f"Grid: recipe `{grid.get('recipe')}`, data `{grid.get('data')}`, seeds {grid.get('seeds')}, "
        f"overrides `{' '.join(grid.get('overrides', []) + ablations.get('extra_overrides', []))}`, "
        f"evaluation limit {dig(grid, 'eval', 'limit')} items per benchmark.",
        "",
        "Every value is the mean ± sample standard deviation over the cell's runs (one per seed). "
        "† marks a zero-shot cell: the untrained base evaluated once, no seeds to average (std 0). "
        "Percentages; ties count against the model.",
        "",
    ]
    if progress:
        parts += [
            f"Progress: {progress.get('cells_done')}/{progress.get('cells_total')} cells, "
            f"{progress.get('runs_done')}/{progress.get('runs_total')} runs done.",
            "",
        ]
    for block in ablations["blocks"]:
        parts += _block_markdown(block, charts.get(block["name"]))
    return "\n".join(parts) + "\n"


def read_ablations(out_dir: Path | str) -> dict:
    """OUT/ablations.json written by `vladva ablate`."""
    path = Path(out_dir) / ABLATIONS_FILE if Path(out_dir).is_dir() else Path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablations.json (run `vladva ablate --out {out_dir}` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if data.get("schema") != ABLATION_SCHEMA:
        raise ValueError(f"{path}: not a vladva ablations file (schema {data.get('schema')!r})")
    return data


def write_ablation_report(ablations: dict, out_dir: Path | str) -> dict[str, Path]:
    """Add the statistics and write ablations.json, ablations.md and ablation-<block>.png."""
    from vladva.eval.plot import ablation_chart

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ablations = add_ablation_stats(ablations)
    paths = {"json": out_dir / ABLATIONS_FILE, "md": out_dir / "ablations.md"}
    charts = {}
    for block in ablations["blocks"]:
        png = ablation_chart(
            block, _present(ABLATION_COLUMNS, block["cells"]), out_dir / f"ablation-{block['name']}.png"
        )
        if png is not None:
            charts[block["name"]] = png.name
            paths[f"png:{block['name']}"] = png
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(ablations), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(paths["json"])
    paths["md"].write_text(render_ablation_markdown(ablations, charts), encoding="utf-8")
    return paths


def print_ablation_summary(ablations: dict) -> None:
    """Each block's headline table in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for block in add_ablation_stats(ablations)["blocks"]:
        cols = _present(ABLATION_COLUMNS, block["cells"])
        table = Table(title=f"{block['title']} (mean ± std over seeds)")
        table.add_column("cell")
        for h, _ in cols:
            table.add_column(h, justify="right")
        for c in block["cells"]:
            table.add_row(_cell_label(c), *[_pm(c["stats"].get(k)) for _, k in cols])
        console.print(table)
