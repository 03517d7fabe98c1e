"""The checkpoints shipped inside the package, and the one place that resolves the name `default`.

Folders: `base-lvlm` (the embedded default base LVLM), `clip-baseline` (the CLIP-style baseline)
and `vision-tower` (the stage-1 vision tower both start from). `vladva base pretrain` rebuilds
them from the synthetic world (`vladva.toyworld.base`, docs/pretraining.md).
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_ROOT = Path(__file__).resolve().parent
# The model name every command accepts for the shipped base LVLM.
DEFAULT_BASE = "default"


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


def resolve_base(name: str | Path) -> Path:
    """`"default"` -> the shipped base LVLM folder; anything else is a folder path."""
    return shipped_base_dir() if str(name) == DEFAULT_BASE else Path(name)


__all__ = [
    "DEFAULT_BASE",
    "PRETRAINED_ROOT",
    "resolve_base",
    "shipped_base_dir",
    "shipped_clip_dir",
    "shipped_vision_dir",
]
