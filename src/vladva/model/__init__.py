"""The user-facing embedder: `VladVA` over a Hugging Face LVLM, its prompts, pooling and backbone families."""

from vladva.model.config import VladVAConfig
from vladva.model.families import SUPPORTED_MODEL_TYPES, UnsupportedModelError, family_for
from vladva.model.lora import LoraSettings
from vladva.model.pooling import last_token_pool
from vladva.model.prompts import PromptConfig
from vladva.model.soft_prompt import SoftPromptConfig
from vladva.model.vladva import VladVA

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "LoraSettings",
    "PromptConfig",
    "SoftPromptConfig",
    "UnsupportedModelError",
    "VladVA",
    "VladVAConfig",
    "family_for",
    "last_token_pool",
]
