"""`vladva embed` (images or texts -> an embeddings file, `vladva.data.embeddings`), `vladva merge`
(fold LoRA into a folder) and `vladva score-prompts`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.cli.options import deprecated_adapter_flag, for_option, resolve_weights_flag, weights_flag
from vladva.errors import UserError
from vladva.pretrained import resolve_base


def _stderr_is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
    app.command("merge")(merge_command)
    app.command("score-prompts")(score_prompts_command)


@friendly_errors
def embed_command(
    model: str = typer.Option(
        "default", "--model", "-m", help="Base LVLM folder, a merged VladVA folder, or 'default'."
    ),
    weights: Path | None = weights_flag(),
    adapter: Path | None = deprecated_adapter_flag(),
    images: Path | None = typer.Option(None, "--images", help="Folder of images or a JSONL manifest."),
    texts: Path | None = typer.Option(
        None, "--texts", help="UTF-8 text file, one sentence per line (row i = line i; no blank lines)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output FILE.safetensors or FILE.npy."),
    batch_size: int = typer.Option(32, "--batch-size", help="Items per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: cuda if available)."),
) -> None:
    """Embed images or texts (L2-normalised rows) into a file."""
    from vladva.data.embeddings import check_embeddings_path, write_embeddings
    from vladva.data.items import image_items, text_items

    if (images is None) == (texts is None):
        raise UserError("give exactly one of --images or --texts")
    weights = resolve_weights_flag(weights, adapter)
    for_option("--out", check_embeddings_path, out)
    # The inputs are read (and a bad line named) before the model loads.
    if images is not None:
        paths, items = for_option("--images", image_items, images)
    else:
        items = for_option("--texts", text_items, texts)
    import torch

    from vladva.model import VladVA

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m = VladVA.from_pretrained(resolve_base(model), weights, device=device)
    if images is not None:
        emb = m.encode_images(paths, batch_size=batch_size, show_progress=_stderr_is_terminal())
    else:
        from vladva.data.vocab import warn_unknown_tokens

        warn_unknown_tokens(m.tokenizer, items, f"the sentences of {texts}")
        emb = m.encode_texts(items, batch_size=batch_size, show_progress=_stderr_is_terminal())
    write_embeddings(out, emb, items, {"model": m.name, "kind": "images" if images is not None else "texts"})
    typer.echo(f"wrote {tuple(emb.shape)} embeddings to {out}")


@friendly_errors
def merge_command(
    model: str = typer.Option("default", "--model", "-m", help="Base LVLM folder or 'default'."),
    weights: Path | None = weights_flag(
        "Trained VladVA weights (required): a run folder (its latest checkpoint) or a checkpoint folder."
    ),
    adapter: Path | None = deprecated_adapter_flag(),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the standalone merged model."),
) -> None:
    """Merge LoRA into the base weights and write a standalone folder (soft prompts included)."""
    from vladva.model import VladVA

    weights = resolve_weights_flag(weights, adapter)
    if weights is None:
        raise UserError("give the trained weights to merge: --weights RUN_OR_CHECKPOINT_FOLDER")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty")
    m = VladVA.from_pretrained(resolve_base(model), weights)
    m.merge(out)
    typer.echo(f"wrote merged model to {out} (load with VladVA.from_pretrained({str(out)!r}))")


def default_candidates() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "prompt_candidates.tsv"


@friendly_errors
def score_prompts_command(
    candidates: Path | None = typer.Option(
        None,
        "--candidates",
        help="One candidate per line: IMAGE PROMPT<TAB>TEXT PROMPT (default: the packaged 14 candidates, "
        "configs/prompt_candidates.tsv).",
    ),
    images: Path = typer.Option(
        ...,
        "--images",
        help="A JSONL manifest (its images and captions: signals and measured zero-shot retrieval R@1) "
        "or a folder of images (signals only, with --texts).",
    ),
    texts: Path | None = typer.Option(None, "--texts", help="Sentences, one per line (with an image folder)."),
    model: str = typer.Option("default", "--model", "-m", help="Base LVLM folder or 'default'."),
    limit: int = typer.Option(100, "--limit", help="Use the first N images (manifest: N records with their captions)."),
    rank_by: str = typer.Option(
        "entropy",
        "--rank-by",
        help="Order of the list: a signal (entropy, effective_rank, image_entropy, ...) or a measured "
        "target (mean_R@1, t2i_R@1, i2t_R@1).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Also write the scores as JSON (and the tables as .md beside it)."
    ),
) -> None:
    """Rank summary prompts zero-shot by the paper's signals (next-token entropy at the summary
    position, effective rank of the embeddings; higher is better) and, on a manifest, set them
    against each prompt's measured zero-shot retrieval R@1 (Spearman rank correlation)."""
    from vladva.data.images import load_image
    from vladva.data.items import image_items, prompt_pairs, text_items
    from vladva.eval.prompt_choice import (
        PROMPT_SCORES_SCHEMA,
        prompt_scores_markdown,
        rank_prompts,
        write_prompt_scores,
    )
    from vladva.model.prompt_selection import score_prompts

    pairs = prompt_pairs(candidates or default_candidates())
    if images.suffix == ".jsonl" and texts is None:
        from vladva.data.manifest import read_manifest

        records = for_option("--images", lambda p: read_manifest(p)[0], images)[:limit]
        scores = rank_prompts(resolve_base(model), pairs, records, rank_by=rank_by)
        typer.echo(prompt_scores_markdown(scores))
    else:
        if texts is None:
            raise UserError("--texts is required when --images is a folder")
        paths, _ = for_option("--images", image_items, images)
        sentences = for_option("--texts", text_items, texts)
        rows = score_prompts(resolve_base(model), pairs, [load_image(p) for p in paths[:limit]], sentences[:limit])
        scores = {
            "schema": PROMPT_SCORES_SCHEMA,
            "base": str(resolve_base(model)),
            "ranked_by": "entropy",
            "rows": rows,
        }
        for r in rows:
            typer.echo(
                f"entropy image {r['image_entropy']:.3f} text {r['text_entropy']:.3f}  eff. rank image "
                f"{r['image_effective_rank']:.1f} text {r['text_effective_rank']:.1f}  "
                f"| {r['image_prompt']} | {r['text_prompt']}"
            )
    if out is not None:
        if "correlations" in scores:
            written = write_prompt_scores(scores, out)
        else:
            out.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
            written = [out]
        typer.echo("wrote " + ", ".join(str(p) for p in written))
