"""The `vladva:`, `zeroshot:` and `dual:` model kinds (`vladva.model_kinds`): VladVA over a base
LVLM with trained weights, or with none (the zero-shot summary-prompt baseline), and the dual
encoder baseline on the same base (`vladva.model.dual_encoder`)."""

from __future__ import annotations

from vladva.model.dual_encoder import DualEncoder
from vladva.model.vladva import VladVA
from vladva.model.weights import read_vladva_config, resolve_weights_dir
from vladva.model_kinds import ModelSpecError, register_model_kind


def _vladva(base_dir: str, weights_dir: str | None = None) -> VladVA:
    return VladVA.from_pretrained(base_dir, weights_dir)


def _zeroshot(base_dir: str) -> VladVA:
    return VladVA.from_pretrained(base_dir, None)


def _dual(folder: str, weights_dir: str | None = None) -> DualEncoder:
    """`dual:WEIGHTS` (a dual encoder's weights or run folder: its base is the one it records) or
    `dual:BASE_DIR:WEIGHTS_DIR`."""
    if weights_dir is not None:
        return DualEncoder.from_pretrained(folder, weights_dir)
    weights = resolve_weights_dir(folder)
    _, meta = read_vladva_config(weights)
    if not meta.get("base_model"):
        raise ModelSpecError(f"{weights}: records no base model; use dual:BASE_DIR:{folder}")
    return DualEncoder.from_pretrained(meta["base_model"], weights)


register_model_kind(
    "vladva",
    _vladva,
    "VladVA.from_pretrained(BASE_DIR, WEIGHTS_DIR): a checkpoint or a training run folder",
    usage="vladva:BASE_DIR[:WEIGHTS_DIR]",
)
register_model_kind(
    "zeroshot", _zeroshot, "the same LVLM with the handcrafted prompts and no training", usage="zeroshot:BASE_DIR"
)
register_model_kind(
    "dual",
    _dual,
    "the dual-encoder baseline (vision tower + head | LM text tower): a weights or run folder",
    usage="dual:WEIGHTS_DIR or dual:BASE_DIR:WEIGHTS_DIR",
)
