"""`vladva data ...`: make the embedded default data set."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError

data_app = typer.Typer(
    help="Data sets: make the embedded synthetic shapes data (`shapes`), re-check it (`check`).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@data_app.command("shapes")
@friendly_errors
def shapes(
    out: Path = typer.Option(..., "--out", help="Folder to write the data set into (created if missing)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the whole data set (default 0)."),
    n_train: int | None = typer.Option(None, "--n-train", help="Training images (default 20000)."),
    n_val: int | None = typer.Option(None, "--n-val", help="Validation images (default 500)."),
    n_test: int | None = typer.Option(
        None,
        "--n-test",
        help="Size of every evaluation split at once: retrieval "
        "images, SugarCrepe per category, Winoground, ARO, zero-shot per task, binding items (the paraphrase "
        "split follows).",
    ),
    world: str | None = typer.Option(
        None,
        "--world",
        help="default (2-3 objects) or hard (3-4 objects, partial "
        "training captions, held-out colour-shape combinations).",
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML file of ShapesDataConfig keys."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Config override key=value, e.g. --set n_aro=100 (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Regenerate even if OUT already holds this data set."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Write the synthetic compositional data set: train/val manifests and retrieval, SugarCrepe(++),
    Winoground, ARO and zero-shot splits, and the paraphrase split (retrieval, SugarCrepe and
    Winoground in words no training caption uses), every caption verified against its scene."""
    from vladva.config import ConfigError, load_config
    from vladva.toyworld.shapes import ShapesDataConfig, generate_shapes_dataset

    flags = {"seed": seed, "n_train": n_train, "n_val": n_val, "world": world}
    if n_test is not None:
        flags.update(
            dict.fromkeys(("n_retrieval", "n_sugarcrepe", "n_winoground", "n_aro", "n_zeroshot", "n_binding"), n_test)
        )
    # Flags apply before --set, so an explicit --set key=value wins over --n-test.
    cli = [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        cfg = load_config(ShapesDataConfig, config, cli + list(overrides))
    except ConfigError as e:
        raise UserError(str(e)) from None
    summary = generate_shapes_dataset(out, cfg, force=force, progress=not quiet)
    if summary.get("skipped"):
        typer.echo(f"{out} already holds this data set (same config); nothing written. Use --force to regenerate.")
        return
    if summary.get("replaced"):
        typer.echo(f"replaced the earlier shapes data set in {out} (its config differed or --force was given)")
    r = summary["retrieval"]
    typer.echo(
        f"wrote the {cfg.world} shapes data set to {out} in {summary['seconds']:.1f} s: "
        f"{summary['train']['images']} train, {summary['val']['images']} val, "
        f"retrieval {r['images']} images x {cfg.captions_per_image} captions "
        f"({100 * r['fraction_true_for_exactly_one_image']:.1f}% identify their image), "
        f"SugarCrepe {sum(summary['sugarcrepe'].values())}, Winoground {summary['winoground']['examples']}, "
        f"ARO {summary['aro']['relation']}+{summary['aro']['attribution']}, "
        f"zero-shot {len(summary['zeroshot'])} tasks, binding {summary.get('binding', {}).get('items', 0)} items. "
        f"Summary: {out / 'dataset_summary.json'}"
    )
    if "paraphrase" in summary:
        typer.echo(_paraphrase_line(summary["paraphrase"], out / "paraphrase"))


def _paraphrase_line(p: dict, folder: Path) -> str:
    """One line on the paraphrase split: its sizes and how much of its words training never showed."""
    line = (
        f"paraphrase split ({folder}): retrieval {p['retrieval']['images']} images, "
        f"SugarCrepe {sum(p['sugarcrepe'].values())}, Winoground {p['winoground']['examples']}; "
        f"{100 * p['unseen_in_training']['all']['unseen_fraction']:.1f}% of its caption tokens never occur "
        "in a training caption"
    )
    if "tokenizer" in p:
        name = p["tokenizer"]["tokenizer"]
        whose = "the shipped base's tokenizer" if name == "default" else f"the tokenizer of {name}"
        line += f", {100 * p['tokenizer']['unknown_token_rate']:.1f}% are <unk> to {whose}"
    return line


@data_app.command("check")
@friendly_errors
def check(folder: Path = typer.Argument(..., help="A folder written by `vladva data shapes`.")) -> None:
    """Re-check every caption of a shapes data set against its scenes: positives true, negatives
    false and of the kind they are typed as (swap_att, swap_obj, replace_rel, ...), Winoground
    captions true for exactly their own image, the paraphrase split through the claims stored
    beside its captions. Exit 1 if any check fails."""
    from vladva.toyworld.shapes import check_dataset

    result = check_dataset(folder)
    for p in result["problems"][:20]:
        typer.echo(f"problem: {p}")
    n = len(result["problems"])
    typer.echo(f"{folder}: {result['checked']} caption checks, {n} problem(s)")
    if n:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
