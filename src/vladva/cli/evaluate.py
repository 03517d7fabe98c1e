"""`vladva eval` (benchmarks -> results.json / .md / .png) and `vladva report` (merge runs)."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("eval")(with_benchmark_path_options(eval_command))
    app.command("report")(report_command)


def with_benchmark_path_options(command):
    """`command` with one `--FLAG PATH` option per benchmark path option in the registry
    (`vladva.eval.benchmarks`), inserted before `--split`, so a new benchmark's flags appear in
    `vladva eval --help` from its own module. typer reads a command's options from its signature,
    so the wrapper carries one built from the registry; the values arrive in `**paths`."""
    from vladva.eval.benchmarks import path_options

    sig = inspect.signature(command)  # follows friendly_errors to eval_command's own signature
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in params}
    extra = []
    for opt in path_options():
        if opt.key in taken:
            raise ValueError(f"benchmark path option {opt.key!r} clashes with a `vladva eval` option")
        default = typer.Option(None, opt.flag, help=opt.help)
        extra.append(
            inspect.Parameter(opt.key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Path | None)
        )
    at = next(i for i, p in enumerate(params) if p.name == "split")

    @functools.wraps(command)
    def command_with_paths(**kwargs):
        return command(**kwargs)

    command_with_paths.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
    return command_with_paths


def _model_help() -> str:
    from vladva.model_kinds import model_kind_names

    return (
        f"Model spec, repeatable: [NAME=]KIND:ARGS, KIND one of {', '.join(model_kind_names())}; "
        "e.g. vladva:BASE[:WEIGHTS] | zeroshot:BASE | clip:DIR | python:MODULE:ATTR[:ARG]."
    )


def _suite_help() -> str:
    from vladva.eval.benchmarks import suite_names

    return " | ".join((*suite_names(), "all")) + " (repeatable or comma-separated; default all)."


@friendly_errors
def eval_command(
    *,
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help=_model_help(),
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
        help=_suite_help(),
    ),
    split: str | None = typer.Option(None, "--split", help="Karpathy split / zero-shot split folder (default: test)."),
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
    **paths: Path | None,
) -> None:
    """Evaluate one or more models on retrieval, compositionality and zero-shot benchmarks."""
    from vladva.config import ConfigError, build_config, load_config, parse_overrides
    from vladva.eval.runner import EvalConfig, evaluate_to_dir
    from vladva.model_kinds import ModelSpecError

    flags = {
        "data": data,
        "split": split,
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
    }
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    given_paths = {key: str(value) for key, value in paths.items() if value is not None}
    if suite:
        flags["suites"] = [s.strip() for item in suite for s in item.split(",") if s.strip()]
    if no_cache:
        flags["use_cache"] = False
    try:
        cfg = load_config(EvalConfig, config)
        if given_paths:  # flags add to (or override) the config file's paths rather than replace them
            flags["paths"] = cfg.paths | given_paths
        cfg = build_config(EvalConfig, flags, "command line", base=cfg)
        if overrides:
            parsed = parse_overrides(overrides)
            if isinstance(parsed.get("paths"), dict):  # --set paths.KEY=... adds one path
                parsed["paths"] = cfg.paths | parsed["paths"]
            cfg = build_config(EvalConfig, parsed, "--set", base=cfg)
    except ConfigError as e:
        raise UserError(str(e)) from None
    try:
        paths_written = evaluate_to_dir(model, cfg, out, log=lambda msg: typer.echo(msg, err=True))
    except ModelSpecError as e:
        raise UserError(str(e)) from None
    typer.echo("wrote " + ", ".join(str(p) for p in paths_written.values()))


@friendly_errors
def report_command(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders (or results.json files) written by `vladva eval`, or a `vladva ablate` folder."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the merged results.json/.md/.png (default: the run folder when one is given).",
    ),
) -> None:
    """Merge evaluation runs (several models) into one table: results.md, results.json, results.png;
    or, for a `vladva ablate` folder (ablations.json), rewrite its tables and plots."""
    from vladva.eval.report import (
        ABLATIONS_FILE,
        merge_reports,
        print_ablation_summary,
        print_summary,
        read_ablations,
        read_report,
        write_ablation_report,
        write_report,
    )

    if len(runs) == 1 and (runs[0] / ABLATIONS_FILE).is_file() and not (runs[0] / "results.json").is_file():
        ablations = read_ablations(runs[0])
        paths = write_ablation_report(ablations, out or runs[0])
        print_ablation_summary(ablations)
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    if out is None:
        if len(runs) > 1:
            raise UserError("several runs need --out DIR for the merged report")
        out = runs[0] if runs[0].is_dir() else runs[0].parent
    report = merge_reports([read_report(r) for r in runs])
    paths = write_report(report, out)
    print_summary(report)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
