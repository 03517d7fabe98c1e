"""The embedded default base models: a small LLaVA-architecture LVLM (the model VladVA fine-tunes)
and a CLIP-style dual encoder (the baseline), both pretrained on the synthetic shapes world.

`shipped_base_dir()` / `shipped_clip_dir()` return the checkpoints shipped in the package;
`vladva base pretrain` rebuilds them (see docs/pretraining.md).
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"


def _shipped(name: str) -> Path:
    path = PRETRAINED_ROOT / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no shipped checkpoint at {path}: build it with "
            f"`vladva data shapes --out data/shapes && vladva base pretrain --data data/shapes --out {PRETRAINED_ROOT}` "
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


__all__ = ["PRETRAINED_ROOT", "shipped_base_dir", "shipped_clip_dir", "shipped_vision_dir"]
