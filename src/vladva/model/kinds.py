"""The `vladva:` and `zeroshot:` model kinds (`vladva.model_kinds`): VladVA over a base LVLM with
trained weights, or with none (the zero-shot summary-prompt baseline)."""

from __future__ import annotations

from vladva.model.vladva import VladVA
from vladva.model_kinds import register_model_kind


def _vladva(base_dir: str, weights_dir: str | None = None) -> VladVA:
    return VladVA.from_pretrained(base_dir, weights_dir)


def _zeroshot(base_dir: str) -> VladVA:
    return VladVA.from_pretrained(base_dir, None)


register_model_kind(
    "vladva",
    _vladva,
    "VladVA.from_pretrained(BASE_DIR, WEIGHTS_DIR): a checkpoint or a training run folder",
    usage="vladva:BASE_DIR[:WEIGHTS_DIR]",
)
register_model_kind(
    "zeroshot", _zeroshot, "the same LVLM with the handcrafted prompts and no training", usage="zeroshot:BASE_DIR"
)
