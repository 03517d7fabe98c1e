"""`vladva embed` (images or texts -> an embedding file) and `vladva merge` (fold LoRA into a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
    app.command("merge")(merge_command)
    app.command("score-prompts")(score_prompts_command)


def _base(model: str) -> Path:
    from vladva.pretrained import resolve_base

    return resolve_base(model)


def image_items(source: Path) -> tuple[list[Path], list[str]]:
    """Images of a folder (recursive, sorted) or of a JSONL manifest; returns paths and item names."""
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise UserError(f"--images {source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return paths, [p.relative_to(source).as_posix() for p in paths]
    if source.suffix == ".jsonl":
        from vladva.data.manifest import read_manifest

        records, _ = read_manifest(source)
        return [r.image for r in records], [r.id for r in records]
    raise UserError(f"--images {source}: give a folder of images or a .jsonl manifest")


def text_items(source: Path) -> list[str]:
    if not source.is_file():
        raise UserError(f"--texts {source}: file not found")
    texts = []
    for _i, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            texts.append(line.strip())
    if not texts:
        raise UserError(f"--texts {source}: no non-empty lines")
    return texts


def write_embeddings(out: Path, embeddings, items: list[str], meta: dict) -> None:
    """`.safetensors`: tensor `embeddings` + metadata (`items` JSON list, model); `.npy`: the array
    plus `OUT.items.txt` (one item per line, row order)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"embeddings": embeddings.contiguous()}, out, metadata={"items": json.dumps(items), **meta})
    elif out.suffix == ".npy":
        import numpy as np

        np.save(out, embeddings.numpy())
        out.with_suffix(".items.txt").write_text("".join(i.replace("\n", " ") + "\n" for i in items), encoding="utf-8")
    else:
        raise UserError(f"--out {out}: must end in .safetensors or .npy")


@friendly_errors
def embed_command(
    model: str = typer.Option(
        "default", "--model", "-m", help="Base LVLM folder, a merged VladVA folder, or 'default'."
    ),
    adapter: Path | None = typer.Option(
        None, "--adapter", "-a", help="Trained adapter: a checkpoint folder or a run folder."
    ),
    images: Path | None = typer.Option(None, "--images", help="Folder of images or a JSONL manifest."),
    texts: Path | None = typer.Option(None, "--texts", help="Text file, one sentence per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Output FILE.safetensors or FILE.npy."),
    batch_size: int = typer.Option(32, "--batch-size", help="Items per forward pass."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: cuda if available)."),
) -> None:
    """Embed images or texts (L2-normalised rows) into a file."""
    if (images is None) == (texts is None):
        raise UserError("give exactly one of --images or --texts")
    if out.suffix not in (".safetensors", ".npy"):
        raise UserError(f"--out {out}: must end in .safetensors or .npy")
    import torch

    from vladva.model import VladVA

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m = VladVA.from_pretrained(_base(model), adapter, device=device)
    if images is not None:
        paths, items = image_items(images)
        emb = m.encode_images(paths, batch_size=batch_size, show_progress=True)
    else:
        items = text_items(texts)
        emb = m.encode_texts(items, batch_size=batch_size, show_progress=True)
    write_embeddings(out, emb, items, {"model": m.name, "kind": "images" if images is not None else "texts"})
    typer.echo(f"wrote {tuple(emb.shape)} embeddings to {out}")


@friendly_errors
def merge_command(
    model: str = typer.Option("default", "--model", "-m", help="Base LVLM folder or 'default'."),
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Trained adapter: a checkpoint folder or a run folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the standalone merged model."),
) -> None:
    """Merge LoRA into the base weights and write a standalone folder (soft prompts included)."""
    from vladva.model import VladVA

    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty")
    m = VladVA.from_pretrained(_base(model), adapter)
    m.merge(out)
    typer.echo(f"wrote merged model to {out} (load with VladVA.from_pretrained({str(out)!r}))")


@friendly_errors
def score_prompts_command(
    candidates: Path = typer.Option(..., "--candidates", help="One candidate per line: IMAGE PROMPT<TAB>TEXT PROMPT."),
    images: Path = typer.Option(..., "--images", help="Folder of images or a JSONL manifest (a sample is used)."),
    texts: Path | None = typer.Option(
        None, "--texts", help="Sentences, one per line (default: the manifest's captions)."
    ),
    model: str = typer.Option("default", "--model", "-m", help="Base LVLM folder or 'default'."),
    limit: int = typer.Option(100, "--limit", help="Use the first N images and N texts."),
    out: Path | None = typer.Option(None, "--out", help="Also write the scores as JSON."),
) -> None:
    """Rank summary prompts zero-shot: next-token entropy at the summary position (higher is
    better) and effective rank of the embeddings (higher is more spread)."""
    from vladva.data.images import load_image
    from vladva.model.prompt_selection import score_prompts

    pairs = []
    for i, line in enumerate(candidates.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise UserError(f"{candidates}:{i}: expected IMAGE PROMPT<TAB>TEXT PROMPT")
        a, b = line.split("\t", 1)
        pairs.append((a.strip(), b.strip()))
    if not pairs:
        raise UserError(f"{candidates}: no candidate prompts")
    paths, _ = image_items(images)
    if texts is not None:
        sentences = text_items(texts)
    elif images.suffix == ".jsonl":
        from vladva.data.manifest import read_manifest

        sentences = [c for r in read_manifest(images)[0] for c in r.captions]
    else:
        raise UserError("--texts is required when --images is a folder")
    rows = score_prompts(_base(model), pairs, [load_image(p) for p in paths[:limit]], sentences[:limit])
    for r in rows:
        typer.echo(
            f"entropy image {r['image_entropy']:.3f} text {r['text_entropy']:.3f}  eff. rank image "
            f"{r['image_effective_rank']:.1f} text {r['text_effective_rank']:.1f}  "
            f"| {r['image_prompt']} | {r['text_prompt']}"
        )
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
