"""The trained-weights folder: the one owner of its format (write, read, validate).

A weights folder holds only what VladVA training changed, beside a base LVLM it applies to:

  vladva_config.json            {"format", "version", "model_type", "base_model", "vladva": VladVAConfig}
  vladva_weights.safetensors    soft prompts ("soft_prompt.image" / ".text"), and when trained the
                                projector ("projector.*") and language model ("language_model.*")
  adapter/                      the PEFT LoRA folder (adapter_config.json, adapter_model.safetensors),
                                present when LoRA is enabled

A merged folder (`VladVA.merge`, `vladva export`) is a full Hugging Face model folder with the same
`vladva_config.json` (format "vladva-merged") and soft prompts. A training run's checkpoints
(`vladva.train.checkpoint`) are weights folders plus the trainer's state; a run folder's
`checkpoints/latest` names the newest. Only safetensors and JSON are ever read: no pickle, no code.

Folders are untrusted input (`check_untrusted_folder`): one whose configs ask for code to be run
(`auto_map`, PEFT's `auto_mapping` / `megatron_config`), whose shard index or `latest` pointer names
a file outside the folder, or whose weights are only pickles is refused before anything loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vladva.config import build_config, config_to_dict
from vladva.model.config import VladVAConfig

CONFIG_FILE = "vladva_config.json"
WEIGHTS_FILE = "vladva_weights.safetensors"
LORA_SUBDIR = "adapter"  # PEFT's own name for a LoRA folder
LATEST_FILE = "latest"
FORMAT_VERSION = 1


@dataclass
class TrainedWeights:
    """What a weights folder stores, whole and on the CPU: `tensors` (vladva_weights.safetensors:
    soft prompts, projector / language-model weights when trained) and `lora` (the PEFT LoRA
    state, None without LoRA)."""

    tensors: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor] | None = None


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """`t` detached, contiguous, on the CPU, and whole. A parameter sharded over processes is
    gathered first (FSDP2: a DTensor; DeepSpeed ZeRO-3: a parameter with `ds_id`), which is a
    collective: every process must call it, in the same order."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    elif hasattr(t, "ds_id"):  # the ZeRO-3 parameter itself (its state_dict entry is an empty shard)
        import deepspeed

        with deepspeed.zero.GatheredParameters([t]):
            return t.detach().cpu().clone()
    return t.detach().cpu().contiguous()


def resolve_weights_dir(path: Path | str) -> Path:
    """A weights (checkpoint) folder, or a run / run's checkpoints folder whose `latest` file names one
    (a folder name inside it; a pointer to anywhere else is refused)."""
    path = Path(path)
    for cand in (path, path / "checkpoints"):
        if (cand / CONFIG_FILE).is_file():
            return cand
        if (cand / LATEST_FILE).is_file():
            name = (cand / LATEST_FILE).read_text(encoding="utf-8").strip()
            if not is_plain_name(name):
                raise UnsafeFolderError(
                    f"{cand / LATEST_FILE}: names {name!r}, not a checkpoint folder inside {cand}; "
                    "refusing to load weights from elsewhere"
                )
            target = cand / name
            if (target / CONFIG_FILE).is_file():
                return target
            raise FileNotFoundError(f"{cand / LATEST_FILE} points to {target}, which is not a vladva checkpoint")
    raise FileNotFoundError(
        f"{path}: not a vladva weights folder (no {CONFIG_FILE} and no '{LATEST_FILE}' pointer); "
        "give a checkpoint folder or a training run folder"
    )


def is_weights_dir(path: Path | str) -> bool:
    """True when `path` holds a `vladva_config.json` (a weights, checkpoint or merged folder)."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_vladva_config(folder: Path | str) -> tuple[VladVAConfig, dict]:
    """`(VladVAConfig, the whole vladva_config.json)` of a weights or merged folder."""
    path = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return build_config(VladVAConfig, meta.get("vladva", {}), str(path), prefix="vladva."), meta


def read_safetensors(path: Path | str) -> dict[str, torch.Tensor]:
    """`load_file` with an error naming the file when it is missing, truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt") from None


def read_trained_tensors(folder: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of `vladva_weights.safetensors` ({} when the folder has none)."""
    path = Path(folder) / WEIGHTS_FILE
    return read_safetensors(path) if path.is_file() else {}


def lora_dir(folder: Path | str) -> Path:
    return Path(folder) / LORA_SUBDIR


def check_weights_dir(folder: Path | str) -> None:
    """Raise a clear error naming the file when a weights folder (or checkpoint) lacks a file or holds
    a truncated / corrupt safetensors file. Reads headers and tensors, never pickle; cheap."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: incomplete vladva checkpoint, {name} is missing")
    files = [folder / WEIGHTS_FILE]
    if read_vladva_config(folder)[0].lora.enabled:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (lora_dir(folder) / name).is_file():
                raise FileNotFoundError(f"{folder}: incomplete vladva checkpoint, {LORA_SUBDIR}/{name} is missing")
        files.append(lora_dir(folder) / "adapter_model.safetensors")
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt") from None


class UnsafeFolderError(ValueError):
    """A model or weights folder that would make loading run its code or read outside it."""


# The JSON files transformers and PEFT read from a model / weights folder.
_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    f"{LORA_SUBDIR}/adapter_config.json",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def is_plain_name(name: str) -> bool:
    """A relative path that stays inside its folder (no absolute path, no `..`, no NUL)."""
    return bool(name) and "\0" not in name and not Path(name).is_absolute() and ".." not in Path(name).parts


def _names_builtin_class(key: str, value) -> bool:
    """PEFT records the base model's own class as `auto_mapping` (`parent_library` in transformers):
    that names no code of the folder. Anything else under `auto_map` / `auto_mapping` does."""
    return (
        key == "auto_mapping"
        and isinstance(value, dict)
        and str(value.get("parent_library", "")).startswith("transformers.")
    )


def check_untrusted_folder(folder: Path | str) -> None:
    """Refuse (`UnsafeFolderError` naming the file and key) a model, merged or weights folder whose
    configs ask for its own code to run (`auto_map`; in an adapter config an `auto_mapping` outside
    transformers or a `megatron_config`, which makes PEFT import a module), whose `*.safetensors.index.json` names a
    shard outside the folder or a pickle, or whose LoRA weights are a pickle only. Reads JSON only."""
    folder = Path(folder)
    for name in _CONFIGS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            continue
        for key in ("auto_map", "auto_mapping") if name.endswith("adapter_config.json") else ("auto_map",):
            if data.get(key) and not _names_builtin_class(key, data[key]):
                names = ", ".join(map(str, data[key].values())) if isinstance(data[key], dict) else str(data[key])
                raise UnsafeFolderError(
                    f"{path}: '{key}' asks to run code shipped with the model ({names[:120]}); vladva never runs "
                    f"a model folder's own code (remove '{key}' to load it with transformers' built-in classes)"
                )
        if name.endswith("adapter_config.json"):
            if data.get("megatron_config"):
                raise UnsafeFolderError(
                    f"{path}: 'megatron_config' makes PEFT import the module {data.get('megatron_core')!r}; "
                    "vladva does not load such adapters"
                )
            if data.get("peft_type") not in (None, "LORA"):
                raise UnsafeFolderError(f"{path}: peft_type {data.get('peft_type')!r}; vladva loads LoRA adapters only")
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise ValueError(f"{index}: not a valid shard index ({e})") from None
        for shard in sorted(map(str, shards)):
            if not is_plain_name(shard):
                raise UnsafeFolderError(
                    f"{index}: weight_map names {shard!r}, outside {folder}; vladva reads weights only from "
                    "inside the model folder"
                )
            if not shard.endswith(".safetensors"):
                raise UnsafeFolderError(
                    f"{index}: weight_map names {shard!r}, not a .safetensors file; vladva never loads pickles"
                )
    adapter = lora_dir(folder)
    pickled = (
        [p.name for p in adapter.glob("adapter_model.*") if p.suffix in PICKLE_SUFFIXES] if adapter.is_dir() else []
    )
    if pickled and not (adapter / "adapter_model.safetensors").is_file():
        raise UnsafeFolderError(
            f"{adapter / pickled[0]}: LoRA weights as a pickle; vladva loads only adapter_model.safetensors "
            "(convert them first)"
        )


def read_model_type(base_dir: Path | str) -> str:
    """The `model_type` of a HF folder's config.json, read as plain JSON (no code is imported)."""
    path = Path(base_dir) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{path}: no 'model_type' string; not a Hugging Face model config")
    return data["model_type"]


def folder_meta(kind: str, model_type: str, base_model: str | None, config: VladVAConfig) -> dict:
    """The `vladva_config.json` mapping; `kind` is "vladva-adapter" (weights) or "vladva-merged"."""
    return {
        "format": kind,
        "version": FORMAT_VERSION,
        "model_type": model_type,
        "base_model": base_model,
        "vladva": config_to_dict(config),
    }


def write_weights_dir(out_dir: Path | str, meta: dict, weights: TrainedWeights, peft_model=None) -> Path:
    """Write a weights folder: the LoRA folder (when `peft_model`, from `weights.lora`), the tensors
    and the config. Writes only: `weights` is already whole (`VladVA.trained_weights`)."""
    from vladva.data.files import normal_file_modes, save_safetensors

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if peft_model is not None:
        peft_model.save_pretrained(lora_dir(out_dir), state_dict=weights.lora)
        normal_file_modes(lora_dir(out_dir))
    save_safetensors(weights.tensors, out_dir / WEIGHTS_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir
