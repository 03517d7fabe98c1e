"""`vladva ablate`: a grid of training runs with seeds -> ablations.json / .md / one PNG per block."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate_command)


def default_grid() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "ablations.yaml"


@friendly_errors
def ablate_command(
    grid: Path = typer.Option(
        None, "--grid", "-g", help="Grid YAML (default: the packaged configs/ablations.yaml; docs/ablations.md)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: runs/, cache/, ablations.json/.md, PNGs."),
    data: Path | None = typer.Option(
        None, "--data", help="Data folder (`vladva data shapes` layout); overrides the grid's."
    ),
    eval_limit: int | None = typer.Option(
        None, "--eval-limit", help="Evaluate a seeded subset of N items per benchmark (overrides the grid's)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs at a time, each in its own process (num_threads each)."),
    only: list[str] = typer.Option([], "--only", help="Run only this block's runs (repeatable); the report lists all."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Recipe override for every run, after the grid's, e.g. --set base_model=DIR (repeatable)."
    ),
    plan: bool = typer.Option(False, "--plan", help="Print the runs the grid asks for and exit."),
) -> None:
    """Run the paper's ablations in miniature: every (cell, seed) trained through the one trainer
    (finished runs reused, interrupted ones resumed), evaluated, and tabled as mean ± std."""
    from vladva.ablation.grid import load_grid, plan_grid, unique_runs
    from vladva.ablation.runner import run_ablation
    from vladva.config import ConfigError

    given = {}
    if data is not None:
        given["data"] = str(data)
    if eval_limit is not None:
        given["eval"] = {"limit": eval_limit}
    try:
        g = load_grid(grid or default_grid(), given)
        if plan:
            cells = plan_grid(g, out, overrides)
            for p in cells:
                how = f"same runs as {p.runs_of}" if p.runs_of else f"{len(p.runs)} run(s)"
                what = "zero-shot" if p.cell.zero_shot else " ".join(p.cell.overrides) or "(the grid's recipe)"
                typer.echo(f"{p.block.name}/{p.cell.name}: {how}: {what}")
            typer.echo(f"{len(unique_runs(cells))} runs in {len(cells)} cells")
            return
        if jobs < 1:
            raise UserError("--jobs must be >= 1")
        run_ablation(g, out, overrides, jobs=jobs, only_blocks=only or None, log=lambda m: typer.echo(m, err=True))
    except ConfigError as e:
        raise UserError(str(e)) from None
    typer.echo(f"wrote {out / 'ablations.md'} and {out / 'ablations.json'}")
