"""`vladva eval` (benchmarks -> results.json / .md / .png) and `vladva report` (merge runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("report")(report_command)


@friendly_errors
def eval_command(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="Model spec, repeatable: [NAME=]vladva:BASE[:ADAPTER] | zeroshot:BASE | clip:DIR "
        "| python:MODULE:ATTR[:ARG].",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder for results.json, results.md, results.png and eval_config.yaml."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Folder in the `vladva data shapes` layout; its benchmark subfolders are discovered."
    ),
    suite: list[str] | None = typer.Option(
        None,
        "--suite",
        "-s",
        help="retrieval | sugarcrepe | sugarcrepe_pp | winoground | aro | zeroshot | all "
        "(repeatable or comma-separated; default all).",
    ),
    coco_json: Path | None = typer.Option(
        None, "--coco-json", help="Karpathy-split JSON (COCO or Flickr30k) for retrieval."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Image root for --coco-json (default: the JSON's folder)."
    ),
    split: str | None = typer.Option(None, "--split", help="Karpathy split / zero-shot split folder (default: test)."),
    sugarcrepe: Path | None = typer.Option(None, "--sugarcrepe", help="Folder of SugarCrepe <category>.json files."),
    sugarcrepe_images: Path | None = typer.Option(
        None, "--sugarcrepe-images", help="Image folder for SugarCrepe (e.g. COCO val2017)."
    ),
    sugarcrepe_pp: Path | None = typer.Option(
        None, "--sugarcrepe-pp", help="Folder of SugarCrepe++ <category>.json files."
    ),
    sugarcrepe_pp_images: Path | None = typer.Option(
        None, "--sugarcrepe-pp-images", help="Image folder for SugarCrepe++."
    ),
    winoground: Path | None = typer.Option(
        None, "--winoground", help="Winoground folder (examples.jsonl + images/) or saved HF dataset."
    ),
    aro: Path | None = typer.Option(
        None, "--aro", help="Folder with visual_genome_relation.json / visual_genome_attribution.json."
    ),
    aro_images: Path | None = typer.Option(None, "--aro-images", help="Image folder for ARO (default: <aro>/images)."),
    zeroshot: Path | None = typer.Option(
        None, "--zeroshot", help="A zero-shot task folder (classnames.txt, templates.txt, test/) or a folder of them."
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="Evaluate a seeded random subset of N items per benchmark (quick looks)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for --limit subsets (default: 0)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Encoding batch size (default: 32)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Embedding cache folder (default: ~/.cache/vladva/eval)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    config: Path | None = typer.Option(None, "--config", help="YAML EvalConfig; flags and --set override it."),
    overrides: list[str] = typer.Option(
        [], "--set", help="EvalConfig override key=value (e.g. --set ks=[1,10]), repeatable."
    ),
) -> None:
    """Evaluate one or more models on retrieval, compositionality and zero-shot benchmarks."""
    from vladva.config import ConfigError, build_config, load_config, parse_overrides
    from vladva.eval.models import ModelSpecError
    from vladva.eval.runner import EvalConfig, evaluate_to_dir

    flags = {
        "data": data,
        "retrieval_json": coco_json,
        "retrieval_images": images,
        "split": split,
        "sugarcrepe": sugarcrepe,
        "sugarcrepe_images": sugarcrepe_images,
        "sugarcrepe_pp": sugarcrepe_pp,
        "sugarcrepe_pp_images": sugarcrepe_pp_images,
        "winoground": winoground,
        "aro": aro,
        "aro_images": aro_images,
        "zeroshot": zeroshot,
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
    }
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    if suite:
        flags["suites"] = [s.strip() for item in suite for s in item.split(",") if s.strip()]
    if no_cache:
        flags["use_cache"] = False
    try:
        cfg = load_config(EvalConfig, config)
        cfg = build_config(EvalConfig, flags, "command line", base=cfg)
        if overrides:
            cfg = build_config(EvalConfig, parse_overrides(overrides), "--set", base=cfg)
    except ConfigError as e:
        raise UserError(str(e)) from None
    try:
        paths = evaluate_to_dir(model, cfg, out, log=lambda msg: typer.echo(msg, err=True))
    except ModelSpecError as e:
        raise UserError(str(e)) from None
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@friendly_errors
def report_command(
    runs: list[Path] = typer.Argument(..., help="Run folders (or results.json files) written by `vladva eval`."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the merged results.json/.md/.png (default: the run folder when one is given).",
    ),
) -> None:
    """Merge evaluation runs (several models) into one table: results.md, results.json, results.png."""
    from vladva.eval.report import merge_reports, print_summary, read_report, write_report

    if out is None:
        if len(runs) > 1:
            raise UserError("several runs need --out DIR for the merged report")
        out = runs[0] if runs[0].is_dir() else runs[0].parent
    report = merge_reports([read_report(r) for r in runs])
    paths = write_report(report, out)
    print_summary(report)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
