"""The `vladva:`, `zeroshot:` and `dual:` model kinds (`vladva.model_kinds`): VladVA over a base
LVLM with trained weights, or with none (the zero-shot summary-prompt baseline), and the dual
encoder baseline on the same base (`vladva.model.dual_encoder`). BASE_DIR may be `default` (the
shipped base), as everywhere a base is named; the bare spec `default` is `zeroshot:default`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vladva.model.dual_encoder import DualEncoder
from vladva.model.vladva import VladVA
from vladva.model.weights import read_vladva_config, resolve_weights_dir
from vladva.model_kinds import ModelSpecError, existing_paths, register_model_kind
from vladva.pretrained import DEFAULT_BASE, SMOLLM2_BASE, resolve_base, smollm2_parts_dir


def _vladva(base_dir: str, weights_dir: str | None = None) -> VladVA:
    return VladVA.from_pretrained(base_dir, weights_dir)


def _zeroshot(base_dir: str) -> VladVA:
    return VladVA.from_pretrained(base_dir, None)


def _tokenizer(base_dir: str, weights_dir: str | None = None):
    """The base's tokenizer, read without its weights (training never changes the vocabulary)."""
    from vladva.model.families import family_for
    from vladva.model.weights import read_model_type

    base = resolve_base(base_dir)
    return family_for(read_model_type(base)).load_processor(base).tokenizer


def _shipped_base_folder(name: str) -> list[Path]:
    """The folder that stands for a shipped base name in the cache identity and the compute columns:
    `default` -> the shipped base LVLM; `smollm2` -> its shipped trained parts (built into a cache
    folder on first use, so the parts, not the cache, say which base it is); else []."""
    if name == DEFAULT_BASE:
        return [resolve_base(name)]
    if name == SMOLLM2_BASE:
        return [smollm2_parts_dir()]
    return []


def _folders(args: Sequence[str]) -> list[Path]:
    """The base's folder (a shipped name's, whose compute.json counts too: `_shipped_base_folder`)
    and the weights folder as given (a run folder: `vladva.eval.models` follows it to its checkpoint)."""
    if not args:
        return []
    return (_shipped_base_folder(args[0]) or existing_paths(args[:1])) + existing_paths(list(args[1:]))


def _dual_folders(args: Sequence[str]) -> list[Path]:
    """`dual:WEIGHTS`: the weights folder and the shipped base it records; `dual:BASE:WEIGHTS` as `_folders`."""
    if len(args) > 1:
        return _folders(args)
    folders = existing_paths(args)
    if folders:
        _, meta = read_vladva_config(resolve_weights_dir(folders[0]))
        folders += _shipped_base_folder(str(meta.get("base_model") or ""))
    return folders


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
    folders=_folders,
    tokenizer=_tokenizer,
)
register_model_kind(
    "zeroshot",
    _zeroshot,
    "the same LVLM with the handcrafted prompts and no training",
    usage="zeroshot:BASE_DIR",
    folders=_folders,
    tokenizer=_tokenizer,
)
register_model_kind(
    "dual",
    _dual,
    "the dual-encoder baseline (vision tower + head | LM text tower): a weights or run folder",
    usage="dual:WEIGHTS_DIR or dual:BASE_DIR:WEIGHTS_DIR",
    folders=_dual_folders,
)
