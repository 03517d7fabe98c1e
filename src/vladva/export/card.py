"""The model card (README.md) of an exported VladVA folder, shared by every export format.

The card says what the model is, how it embeds (prompts, pooling, dimension), how it was
trained (from the adapter checkpoint's saved `config.yaml` / `compute.json`), how to load it,
and the evaluation table of the rows of a `vladva eval` results.json that belong to it. It never
makes numbers up: without a results file it says that no evaluation was supplied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).parent / "card_templates"

# (label, keys into the training config) shown in the card's training table when present.
TRAINING_KEYS = (
    ("steps", ("optim", "max_steps")),
    ("contrastive batch (short captions)", ("data", "contrastive_batch_size")),
    ("next-token batch (long captions)", ("data", "ntp_batch_size")),
    ("next-token loss weight", ("loss", "ntp_weight")),
    ("initial temperature", ("loss", "contrastive", "init_temperature")),
    ("learnable temperature", ("loss", "contrastive", "learnable_temperature")),
    ("lr LoRA", ("optim", "lr_lora")),
    ("lr soft prompts", ("optim", "lr_soft_prompt")),
    ("schedule", ("optim", "schedule")),
    ("warm-up steps", ("optim", "warmup_steps")),
    ("hard negatives", ("data", "hard_negatives")),
    ("training data", ("data", "train")),
    ("seed", ("seed",)),
)


@dataclass
class CardInfo:
    """Everything the card states about one exported model."""

    name: str
    location: str  # the folder as the user named it, for the loading examples
    export_format: str  # "hf" or "sentence-transformers"
    model_type: str
    embedding_dim: int
    vladva_config: dict  # the "vladva" block of vladva_config.json (prompts, soft_prompt, lora, ...)
    base_model: str | None
    adapter: str | None
    training_config: dict | None = None  # the checkpoint's config.yaml, if any
    compute: dict | None = None  # the checkpoint's compute.json, if any
    # every stage that made the model, base pretraining included (vladva.eval.models.read_train_compute)
    train_compute: dict | None = None
    evaluation: dict | None = None  # a report (vladva.eval.report schema) holding only this model's rows
    results_path: str | None = None
    environment: dict = field(default_factory=dict)  # versions, git commit (vladva.eval.runner.environment)
    num_parameters: int | None = None


def read_training_record(adapter_dir: Path | None) -> tuple[dict | None, dict | None]:
    """The checkpoint's (or its run folder's) `config.yaml` and `compute.json`; None where absent."""
    if adapter_dir is None:
        return None, None
    from vladva.config import read_config_file

    adapter_dir = Path(adapter_dir)
    config = compute = None
    for folder in (adapter_dir, adapter_dir.parent.parent):  # checkpoint, then run/ (run/checkpoints/step-N)
        if config is None and (folder / "config.yaml").is_file():
            config = read_config_file(folder / "config.yaml")
        if compute is None and (folder / "compute.json").is_file():
            try:
                compute = json.loads((folder / "compute.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{folder / 'compute.json'}: not valid JSON ({e})") from None
    return config, compute


def _dig(d, keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _cell(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text.replace("|", "\\|").replace("\n", "\\n")


def _kv_table(rows: list[tuple[str, object]]) -> str:
    from vladva.eval.report import markdown_table

    return markdown_table(["", ""], [[k, _cell(v)] for k, v in rows])


def _lora_text(adapter: str | None, lora: dict) -> str:
    if adapter is None:
        return "already in the weights of the merged folder this was exported from"
    if not lora.get("enabled"):
        return "none (the adapter trained no LoRA)"
    return (
        f"merged into the weights (r={lora.get('r')}, alpha={lora.get('alpha')}, "
        f"targets {', '.join(lora.get('target_modules') or [])})"
    )


def _model_section(info: CardInfo) -> str:
    cfg = info.vladva_config
    prompts, soft, lora = cfg.get("prompts", {}), cfg.get("soft_prompt", {}), cfg.get("lora", {})
    rows: list[tuple[str, object]] = [
        ("architecture (model_type)", info.model_type),
        ("base model", info.base_model or "unknown"),
        ("adapter", info.adapter or "none (exported from a merged folder)"),
        ("embedding dimension", info.embedding_dim),
        (
            "pooling",
            "mean of the final hidden states over every real token, L2-normalised (float32)"
            if cfg.get("pooling") == "mean"
            else "final hidden state of the last real token, L2-normalised (float32)",
        ),
        ("image tower", "image + image prompt through the whole LVLM"),
        ("text tower", "sentence + text prompt through the language model alone"),
        ("image prompt", prompts.get("image_prompt")),
        ("text prompt", prompts.get("text_prompt")),
        ("separator", prompts.get("separator")),
        ("chat template", prompts.get("use_chat_template")),
        ("max text tokens", prompts.get("max_text_tokens")),
        (
            "soft prompts",
            f"trained, stored in vladva_weights.safetensors ({soft.get('extra_tokens', 0)} extra tokens)"
            if soft.get("enabled")
            else "none",
        ),
        ("LoRA", _lora_text(info.adapter, lora)),
    ]
    if info.num_parameters is not None:
        rows.append(("parameters", f"{info.num_parameters:,}"))
    return "## Model\n\n" + _kv_table(rows)


def _training_section(info: CardInfo) -> str:
    parts = ["## Training", ""]
    if info.training_config is None and info.compute is None:
        parts.append("No training record (config.yaml / compute.json) was found beside the adapter.")
        if info.train_compute and info.train_compute.get("stages"):
            parts += ["", _compute_record(info.train_compute)]
        return "\n".join(parts)
    if info.training_config is not None:
        rows = [(label, v) for label, keys in TRAINING_KEYS if (v := _dig(info.training_config, keys)) is not None]
        if rows:
            parts += [_kv_table(rows), ""]
    if info.compute:
        c = info.compute
        if isinstance(c.get("stages"), list) and c["stages"]:  # a vladva.train.compute record: its last stage
            st = c["stages"][-1]
            found = {
                "steps": st.get("steps"),
                "pairs": st.get("pairs"),
                "long_captions": st.get("long_captions"),
                "wall_seconds": st.get("seconds"),
                "device": st.get("device"),
                "threads": st.get("threads"),
                "trainable_params": (st.get("extra") or {}).get("trainable_params"),
            }
            c = {k: v for k, v in found.items() if v is not None}
        seen = "".join(
            f", {c[k]:,} {label}"
            for k, label in (("pairs", "image-caption pairs"), ("long_captions", "long captions"))
            if k in c
        )
        device = f" on {c['device']}" if "device" in c else ""
        parts.append(
            f"Compute: {c.get('steps', '?')} steps{seen}, {c.get('wall_seconds', '?')} s wall clock{device}, "
            f"{c.get('threads', '?')} threads, {c.get('trainable_params', '?')} trainable parameters."
        )
        parts.append("")
    if info.train_compute and info.train_compute.get("stages"):
        parts += [_compute_record(info.train_compute), ""]
    if info.training_config is not None:
        import yaml

        parts += [
            "<details><summary>Full training config (config.yaml)</summary>",
            "",
            "```yaml",
            yaml.safe_dump(info.training_config, sort_keys=False).rstrip(),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(parts).rstrip()


def benchmark_data_dir(evaluation: dict | None) -> str | None:
    """The `--data` folder of the evaluation behind the card: the folder every benchmark path of its
    runs sits in as `<folder>/<suite>/...` (the `vladva data shapes` layout); None when there is
    no such single folder (then the card's eval command says DATA)."""
    found = set()
    for run in (evaluation or {}).get("runs") or []:
        for suite, path in (run.get("data") or {}).items():
            parents = [p for p in Path(path).parents if p.name == suite]
            if not parents:
                return None
            found.add(str(parents[0].parent))
    return found.pop() if len(found) == 1 else None


def eval_command(info: CardInfo) -> str:
    """The `vladva eval` line of the card: the data the supplied results were measured on when it
    is one folder, else a DATA placeholder for the user's benchmark folder."""
    data = benchmark_data_dir(info.evaluation) or "DATA"
    return f"vladva eval -m vladva:{info.location} --data {data} --out {info.location}-eval"


def _compute_record(tc: dict) -> str:
    """What every stage that made the model saw (base pretraining, then the fine-tune) and its totals."""
    from vladva.eval.report import markdown_table

    def n(value) -> str:
        return "–" if value is None else f"{int(value):,}"

    rows = [
        [
            str(st.get("stage")),
            Path(st["file"]).parent.name,
            n(st.get("steps")),
            n(st.get("pairs")),
            n(st.get("long_captions")),
            n(st.get("tokens")),
            f"{st.get('device', '?')}, {st.get('seconds', '?')} s",
        ]
        for st in tc["stages"]
    ]
    partial = set(tc.get("incomplete") or [])
    totals = [f"{'≥' if k in partial else ''}{n(tc.get(k))}" for k in ("pairs", "long_captions", "tokens")]
    rows.append(["**total**", "", "", *[f"**{t}**" for t in totals], ""])
    times = []
    for key, unit in (("cpu_minutes", "CPU-minutes"), ("gpu_seconds", "accelerator seconds")):
        if tc.get(key):  # 0 (no stage on that device) is left out
            times.append(f"{tc[key]:.1f} {unit}" if tc[key] >= 0.1 else f"{tc[key]:.2g} {unit}")
    return "\n".join(
        [
            "Training record, every stage that made this model (the base's pretraining, then this fine-tune): "
            "contrastive image-caption pairs, long captions trained with the next-token loss, and text tokens "
            "(an LVLM's image placeholders included)" + (f"; {' and '.join(times)} in all." if times else "."),
            "",
            markdown_table(["stage", "folder", "steps", "pairs", "long captions", "tokens", "device, wall"], rows),
        ]
    )


def _evaluation_section(info: CardInfo) -> str:
    if info.evaluation is None:
        return (
            "## Evaluation\n\nNo evaluation was supplied. Run "
            f"`vladva eval -m vladva:{info.location} --data DATA --out {info.location}-eval` (DATA: benchmark "
            "folders in vladva's layout, docs/data-layouts.md) and export again with "
            f"`--results {info.location}-eval/results.json` to put the measured table here."
        )
    from vladva.eval.report import markdown_table, summary_rows

    header, rows = summary_rows(info.evaluation)
    # transposed (one row per metric, one column per model), as `vladva eval` prints it: the summary has ~30 columns
    table = markdown_table(
        ["metric"] + [r[0] for r in rows], [[h] + [r[i] for r in rows] for i, h in enumerate(header) if i]
    )
    runs = info.evaluation["runs"]
    lines = [
        "## Evaluation",
        "",
        f"Measured by `vladva eval` (from `{info.results_path}`); percentages, ties count against the model "
        "(see vladva's docs/evaluation.md).",
        "",
        table,
        "",
    ]
    for m in info.evaluation["models"]:
        run = runs[m.get("run", 0)] if runs else {}
        commit = (run.get("git_commit") or "?")[:10] + ("+dirty" if run.get("git_dirty") else "")
        data = "; ".join(f"{k}: {v}" for k, v in (run.get("data") or {}).items()) or "?"
        lines.append(
            f"- {m['name']}: `{m.get('spec')}`, evaluated {run.get('created') or '?'} at commit {commit}, "
            f"seed {run.get('seed')}, data {data}"
        )
    return "\n".join(lines)


def _usage_section(info: CardInfo) -> str:
    """From the markdown templates beside this module (package data), as sentence-transformers
    keeps its own card text."""
    from string import Template

    names = ["usage_vladva.md"] + (
        ["usage_sentence_transformers.md"] if info.export_format == "sentence-transformers" else []
    )
    values = {
        "location": info.location,
        "module_type": "vladva.export.sentence_transformers_module.VladVAModule",
        "eval_command": eval_command(info),
        "data_note": "" if benchmark_data_dir(info.evaluation) else _DATA_NOTE,
    }
    return "".join(Template((TEMPLATES / n).read_text(encoding="utf-8")).substitute(values) for n in names).rstrip()


_DATA_NOTE = (
    "\nDATA is a folder of benchmark data in vladva's layout (docs/data-layouts.md); "
    "`vladva data shapes --out DATA` writes the synthetic one.\n"
)


def _provenance_section(info: CardInfo) -> str:
    env = info.environment or {}
    versions = env.get("versions") or {}
    commit = env.get("git_commit")
    commit_text = "unknown" if not commit else commit + (" (uncommitted changes)" if env.get("git_dirty") else "")
    rows = [
        ("vladva version", versions.get("vladva") or "unknown"),
        ("vladva git commit", commit_text),
        ("torch / transformers", f"{versions.get('torch')} / {versions.get('transformers')}"),
        ("export format", info.export_format),
    ]
    return "## Provenance\n\n" + _kv_table(rows)


def render_model_card(info: CardInfo) -> str:
    """The README.md text (markdown with a YAML header) for one exported model."""
    tags = ["vladva", "image-text-retrieval", "feature-extraction", "lvlm"]
    library = "vladva"
    if info.export_format == "sentence-transformers":
        tags.append("sentence-transformers")
        library = "sentence-transformers"
    header = ["---", f"library_name: {library}", "pipeline_tag: feature-extraction", "tags:"] + [f"- {t}" for t in tags]
    header.append("---")
    intro = (
        f"# {info.name}\n\nA CLIP-style image/text embedder made from a generative vision-language model "
        f"({info.model_type}) by VladVA discriminative fine-tuning (soft prompts + LoRA, trained with symmetric "
        "InfoNCE on short captions and next-token loss on long captions). Images and texts map to "
        f"L2-normalised {info.embedding_dim}-dimensional vectors; their dot product is the cosine similarity."
    )
    sections = [
        intro,
        _model_section(info),
        _evaluation_section(info),
        _training_section(info),
        _usage_section(info),
        _provenance_section(info),
    ]
    return "\n".join(header) + "\n\n" + "\n\n".join(sections) + "\n"


def _candidates(path: str, roots: list[Path]) -> list[Path]:
    p = Path(path)
    return [p] if p.is_absolute() else [Path.cwd() / p] + [r / p for r in roots]


def _spec_points_at(spec: str, base_dir: Path, adapter_dir: Path | None, roots: list[Path]) -> bool:
    """Whether a results row's `vladva:BASE[:ADAPTER]` spec is this model: the same adapter
    checkpoint (a run folder resolves to its latest checkpoint), or without an adapter the same
    merged folder. A relative path is tried from the current folder, then from `roots` (the
    folders above the results file: `vladva eval` may have run in any of them)."""
    from vladva.model.weights import resolve_weights_dir
    from vladva.model_kinds import ModelSpecError, parse_model_spec

    try:
        kind, args = parse_model_spec(spec)
    except ModelSpecError:
        return False
    if kind != "vladva" or not args:
        return False
    if adapter_dir is None:
        want = Path(base_dir).resolve()
        return len(args) == 1 and any(c.resolve() == want for c in _candidates(args[0], roots))
    if len(args) != 2:
        return False
    want = Path(adapter_dir).resolve()
    for cand in _candidates(args[1], roots):
        try:
            if resolve_weights_dir(cand).resolve() == want:
                return True
        except FileNotFoundError:
            continue
    return False


def select_evaluation(results: Path, base_dir: Path, adapter_dir: Path | None, names: tuple[str, ...] = ()) -> dict:
    """The report in `results` (a results.json or its folder) cut to the rows for the card: the
    rows named in `names` (in that order), else the rows whose spec is this model."""
    from vladva.eval.report import read_report

    report = read_report(Path(results))
    models = report["models"]
    available = ", ".join(repr(m["name"]) for m in models) or "none"
    if names:
        by_name = {m["name"]: m for m in models}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{results}: no model named {', '.join(map(repr, missing))}; it holds {available}")
        picked = [by_name[n] for n in names]
    else:
        roots = list(Path(results).resolve().parents)
        picked = [m for m in models if _spec_points_at(m.get("spec", ""), base_dir, adapter_dir, roots)]
        if not picked:
            raise ValueError(
                f"{results}: no row evaluates this model (rows: {available}); choose the rows with --results-model NAME"
            )
    return {"schema": report["schema"], "runs": report["runs"], "models": picked}
