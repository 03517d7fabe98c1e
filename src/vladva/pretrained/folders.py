"""Where the shipped checkpoints lie, and nothing else: the builders (`vladva.assemble`) read
these paths, and `vladva.pretrained` (which builds the SmolLM2 base with them) re-exports them."""

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
