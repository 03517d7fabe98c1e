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
        f"Model spec, repeatable: [NAME=]KIND:ARGS, KIND one of {', '.join(model_kind_names())}, or default "
        "(the shipped base, zero-shot); e.g. vladva:BASE[:WEIGHTS] | zeroshot:BASE | clip:DIR | "
        "python:MODULE:ATTR[:ARG]. BASE may be default."
    )


def _suite_help() -> str:
    from vladva.eval.benchmarks import suite_names

    return " | ".join((*suite_names(), "all")) + " (repeatable or comma-separated; default all)."


def _split_list(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated values as one list: `-s a,b -s c` -> [a, b, c]."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@friendly_errors
def eval_command(
    *,
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        metavar="[NAME=]SPEC",
        help=_model_help(),
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Run folder for results.json, results.md, results.png and eval_config.yaml "
        "(required unless --output is given).",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        "--dataset_root",
        help="Folder in the `vladva data shapes` layout; its benchmark subfolders are discovered. "
        "--dataset_root is CLIP_benchmark's name for it.",
    ),
    suite: list[str] | None = typer.Option(
        None,
        "--suite",
        "-s",
        metavar="SUITE",
        help=_suite_help(),
    ),
    dataset: list[str] | None = typer.Option(
        None,
        "--dataset",
        metavar="NAME",
        help="CLIP_benchmark's name for --suite: a suite, or mscoco_captions / flickr30k / flickr8k (retrieval), "
        "sugar_crepe or sugar_crepe/CATEGORY, winoground (repeatable or comma-separated).",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        metavar="TASK",
        help="CLIP_benchmark's task: zeroshot_retrieval, zeroshot_classification or image_caption_selection "
        "(the compositional suites); runs the suites of that task. auto: every suite.",
    ),
    split: str | None = typer.Option(None, "--split", help="Karpathy split / zero-shot split folder (default: test)."),
    limit: int | None = typer.Option(
        None, "--limit", help="Evaluate a seeded random subset of N items per benchmark (quick looks)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for --limit subsets (default: 0)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "--batch_size", help="Encoding batch size (default: 32)."
    ),
    recall_k: list[str] | None = typer.Option(
        None,
        "--recall_k",
        "--recall-k",
        metavar="K",
        help="Recall@k cut-offs for retrieval (default 1,5,10): repeat the option or comma-separate "
        "(CLIP_benchmark's space-separated list is not accepted).",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        metavar="TEMPLATE",
        help="Also write one CLIP_benchmark-style JSON per dataset and model to this path template, "
        "e.g. '{dataset}_{model}_{task}.json' (placeholders: dataset, model, pretrained, task, language; "
        "metrics as fractions).",
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Embedding cache folder (default: ~/.cache/vladva/eval)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    config: Path | None = typer.Option(None, "--config", help="YAML EvalConfig; flags and --set override it."),
    overrides: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="EvalConfig override key=value (e.g. --set ks=[1,10]), repeatable."
    ),
    pretrained: str | None = typer.Option(None, "--pretrained", hidden=True),
    **paths: Path | None,
) -> None:
    """Evaluate one or more models on retrieval, compositionality and zero-shot benchmarks.
    CLIP_benchmark users: --dataset, --dataset_root, --task, --recall_k, --batch_size and --output
    work as there; the model is one -m spec (docs/evaluation.md)."""
    from vladva.config import ConfigError, build_config, load_config, parse_overrides
    from vladva.eval.clip_benchmark import dataset_suites, task_suites
    from vladva.eval.runner import EvalConfig, evaluate_to_dir
    from vladva.model_kinds import ModelSpecError

    if pretrained is not None:
        raise UserError(
            "vladva eval has no --pretrained: CLIP_benchmark's --model ARCH --pretrained CKPT is one spec here, "
            "-m vladva:BASE:WEIGHTS (or zeroshot:BASE, clip:DIR, default)"
        )
    if out is None and output is None:
        raise UserError(
            "give --out RUN_DIR (results.json/.md/.png) and/or --output TEMPLATE.json (CLIP_benchmark files)"
        )
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
    asked = dataset_suites(_split_list(dataset)) if dataset else {}
    suites = list(dict.fromkeys(_split_list(suite) + list(asked)))
    of_task = task_suites(task) if task is not None else None
    if of_task is not None and suites:
        suites = [s for s in suites if s in of_task]
        if not suites:
            raise UserError(f"--task {task}: none of the asked suites / datasets is a {task} benchmark")
    if suites:
        flags["suites"] = suites
    if recall_k:
        try:
            flags["ks"] = [int(k) for k in _split_list(recall_k)]
        except ValueError:
            raise UserError(
                f"--recall_k {', '.join(recall_k)}: expected whole numbers, e.g. --recall_k 1,5,10"
            ) from None
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
    if of_task is not None and "all" in cfg.suites:  # the task's benchmarks among those with data
        from vladva.eval.runner import resolve_benchmarks

        cfg.suites = [s for s in resolve_benchmarks(cfg) if s in of_task]
        if not cfg.suites:
            raise UserError(f"--task {task}: no {task} benchmark data found")
    try:
        written = evaluate_to_dir(
            model,
            cfg,
            out,
            log=lambda msg: typer.echo(msg, err=True),
            clip_benchmark_output=output,
            clip_benchmark_datasets=asked,
        )
    except ModelSpecError as e:
        raise UserError(str(e)) from None
    files = [p for v in written.values() for p in (v if isinstance(v, list) else [v])]
    typer.echo("wrote " + ", ".join(str(p) for p in files))


@friendly_errors
def report_command(
    runs: list[Path] = typer.Argument(
        ...,
        help="Run folders (or results.json files) written by `vladva eval`, training run folders "
        "(`vladva train`'s output_dir, with metrics.jsonl), or a `vladva ablate` folder.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for the merged results.json/.md/.png and training_curves.png "
        "(default: the run folder when one is given).",
    ),
) -> None:
    """Merge evaluation runs (several models) into one table: results.md, results.json, results.png;
    draw a training run's curves (loss terms, temperature, held-out R@1, hard-negative accuracy)
    as training_curves.png; or, for a `vladva ablate` folder (ablations.json), rewrite its tables
    and plots."""
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
    from vladva.train.curves import CURVES_FILE, METRICS_FILE, plot_training_curves

    if len(runs) == 1 and (runs[0] / ABLATIONS_FILE).is_file() and not (runs[0] / "results.json").is_file():
        ablations = read_ablations(runs[0])
        paths = write_ablation_report(ablations, out or runs[0])
        print_ablation_summary(ablations)
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    training = [r for r in runs if r.is_dir() and (r / METRICS_FILE).is_file()]
    evaluations = [r for r in runs if r not in training or (r / "results.json").is_file()]
    for run in training:
        target = None if out is None else out / (CURVES_FILE if len(training) == 1 else f"{run.name}_{CURVES_FILE}")
        typer.echo(f"wrote {plot_training_curves(run, target)}")
    if not evaluations:
        return
    if out is None:
        if len(evaluations) > 1:
            raise UserError("several runs need --out DIR for the merged report")
        out = evaluations[0] if evaluations[0].is_dir() else evaluations[0].parent
    report = merge_reports([read_report(r) for r in evaluations])
    paths = write_report(report, out)
    print_summary(report)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
