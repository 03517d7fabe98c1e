"""`vladva base ...`: build the embedded default base models (tokenizer, vision tower, base LVLM,
text-only control, CLIP baseline) and their held-out report."""

from __future__ import annotations

from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors


def register(app: typer.Typer) -> None:
    base = typer.Typer(
        help="Pretrain the embedded default base LVLM (and the CLIP-style baseline).",
        no_args_is_help=True,
        rich_markup_mode=None,
    )

    @base.command("pretrain")
    @friendly_errors
    def pretrain(
        data: Path = typer.Option(
            ...,
            "--data",
            help="Folder with train.jsonl (and val.jsonl for the checks), e.g. from `vladva data shapes`.",
        ),
        out: Path = typer.Option(
            ..., "--out", help="Output folder: vision-tower/, base-lvlm/, clip-baseline/, pretrain_report.json."
        ),
        config: Path | None = typer.Option(
            None, "--config", help="YAML recipe, e.g. src/vladva/configs/pretrain.yaml."
        ),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda or auto (overrides the config)."),
        quick: bool = typer.Option(False, "--quick", help="Tiny budget (seconds): a smoke test, not a usable model."),
        overrides: list[str] | None = typer.Argument(
            None, help="key=value overrides, e.g. lvlm.steps=2000 stages=[vision,lvlm]."
        ),
    ) -> None:
        """Run the whole recipe; finished stages in OUT are reused (resume=false retrains them)."""
        from vladva.toyworld.base.presets import load_pretrain_config
        from vladva.toyworld.base.recipe import run_pretrain

        cfg = load_pretrain_config(config, overrides or [], quick=quick, device=device)
        report = run_pretrain(data, out, cfg)
        _summary(report, out)

    app.add_typer(base, name="base")


def _summary(report: dict, out: Path) -> None:
    lines = [f"wrote {out}"]
    probes = report.get("vision_probes")
    if probes:
        lines.append(
            "vision probes (%): "
            + ", ".join(
                f"{k} {probes[k]}"
                for k in ("largest_shape", "largest_colour", "colour_of_shape", "count")
                if k in probes
            )
        )
    cap = report.get("caption_token_accuracy")
    if cap:
        lines.append("caption token accuracy (%): " + ", ".join(f"{k} {v['all']['accuracy']}" for k, v in cap.items()))
    qa = report.get("instruction_accuracy", {}).get("all")
    if qa:
        lines.append(f"instruction accuracy (%): {qa['accuracy']} on {qa['questions']} questions")
    zs = report.get("summary_prompt_zero_shot")
    if zs:
        lines.append(
            f"zero-shot summary prompt R@1 t2i/i2t (%): {zs['t2i_r1']}/{zs['i2t_r1']} (chance {zs['chance_r1']})"
        )
    cl = report.get("clip_baseline_retrieval")
    if cl:
        lines.append(f"CLIP baseline R@1 t2i/i2t (%): {cl['t2i_r1']}/{cl['i2t_r1']}")
    typer.echo("\n".join(lines))
