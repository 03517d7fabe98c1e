"""`vladva baseline ...`: the CLIP-style dual-encoder baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


def register(app: typer.Typer) -> None:
    baseline = typer.Typer(
        help="Train the CLIP-style baseline VladVA is compared against.", no_args_is_help=True, rich_markup_mode=None
    )

    @baseline.command("train")
    @friendly_errors
    def train(
        data: Path = typer.Option(..., "--data", help="Folder with train.jsonl (val.jsonl for a retrieval check)."),
        out: Path = typer.Option(
            ..., "--out", help="Output folder for the CLIP model (loads with ClipBaselineEmbedder.from_pretrained)."
        ),
        vision: Path | None = typer.Option(
            None, "--vision", help="Stage-1 tower: a vision-tower or base-lvlm folder. Default: pretrain one first."
        ),
        config: Path | None = typer.Option(
            None, "--config", help="YAML recipe (its clip, vision, tokenizer and checks sections are used)."
        ),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda or auto."),
        quick: bool = typer.Option(False, "--quick", help="Tiny budget (seconds): a smoke test."),
        overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. clip.steps=2000."),
    ) -> None:
        """Contrastive training of a CLIPModel on the short captions, from a pretrained tower."""
        from vladva.toyworld.base.presets import load_pretrain_config
        from vladva.toyworld.base.recipe import train_baseline_only

        cfg = load_pretrain_config(config, overrides or [], quick=quick, device=device)
        result = train_baseline_only(data, out, cfg, vision)
        r = result.get("retrieval")
        msg = f"wrote {out}"
        if r:
            msg += (
                f"\nval R@1 t2i/i2t (%): {r['t2i_r1']}/{r['i2t_r1']} on {r['images']} images (chance {r['chance_r1']})"
            )
        typer.echo(msg)

    app.add_typer(baseline, name="baseline")
