"""The user-facing embedder: `VladVA` over a Hugging Face LVLM, its prompts, pooling and adapters."""

from vladva.model.adapters import SUPPORTED_MODEL_TYPES, UnsupportedModelError, adapter_for
from vladva.model.lora import LoraSettings
from vladva.model.pooling import last_token_pool
from vladva.model.prompts import PromptConfig
from vladva.model.soft_prompt import SoftPromptConfig
from vladva.model.vladva import VladVA, VladVAConfig

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "LoraSettings",
    "PromptConfig",
    "SoftPromptConfig",
    "UnsupportedModelError",
    "VladVA",
    "VladVAConfig",
    "adapter_for",
    "last_token_pool",
]
