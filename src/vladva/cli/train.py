"""`vladva train`: fine-tune an LVLM into a VladVA embedder from a YAML recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def default_recipe() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@friendly_errors
def train_command(
    overrides: list[str] = typer.Argument(
        None, help="Recipe overrides key=value, e.g. optim.max_steps=100 data.train=DATA/train.jsonl."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML recipe (default: the packaged configs/default.yaml)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue output_dir's run from its latest checkpoint."),
) -> None:
    """Train soft prompts + LoRA with contrastive (short captions) and next-token (long captions) losses."""
    import logging

    from vladva.config import load_config
    from vladva.train.config import TrainConfig
    from vladva.train.trainer import train

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(TrainConfig, config or default_recipe(), overrides or [])
    result = train(cfg, resume=resume)
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s; checkpoint: {result.checkpoint}")
    if result.compute is not None and result.checkpoint is not None:
        c = result.compute.to_dict()
        where = f"{c['device']} ({c['threads']} threads)" if c["device"] == "cpu" else c["device_name"] or c["device"]
        typer.echo(
            f"compute: {c['steps']} steps, {c['pairs']:,} image-caption pairs, {c['long_captions']:,} long captions, "
            f"{c['tokens']:,} tokens, {c['seconds']:.0f} s on {where} = {c['device_seconds'] / 60:.1f} "
            f"{'CPU' if c['device'] == 'cpu' else 'device'}-minutes; recorded in {result.checkpoint / 'compute.json'}"
        )
    if result.curves is not None:
        typer.echo(f"training curves: {result.curves}")
    if result.evals:
        first, last = result.evals[0], result.evals[-1]
        typer.echo(
            f"held-out R@1 text->image {first['eval']['t2i_r1']:.1f} -> {last['eval']['t2i_r1']:.1f}, "
            f"image->text {first['eval']['i2t_r1']:.1f} -> {last['eval']['i2t_r1']:.1f} "
            f"(steps {first['step']} -> {last['step']})"
        )
        before, after = first["eval"].get("hard_neg_acc", {}), last["eval"].get("hard_neg_acc", {})
        if after:
            chance = last["eval"].get("hard_neg_chance", {})
            parts = [
                (f"{k} {before[k]:.2f} -> {v:.2f}" if k in before else f"{k} {v:.2f}")
                + (f" (chance {chance[k]:.2f})" if k in chance else "")
                for k, v in after.items()
            ]
            typer.echo("held-out hard-negative accuracy: " + ", ".join(parts))
