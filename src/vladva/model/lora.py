"""LoRA on the language model's linear layers through PEFT (the vision tower never gets any)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """Defaults follow the paper's summary: rank 16, alpha 16, on attention and MLP projections."""

    enabled: bool = True
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    # Leaf names of the language model's linear layers to adapt.
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def validate(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.enabled and not self.target_modules:
            raise ValueError("lora.target_modules must name at least one layer")


def module_name(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def apply_lora(model: nn.Module, language_model: nn.Module, settings: LoraSettings):
    """Wrap `model` in a PEFT model with LoRA on `language_model`'s `target_modules` only."""
    from peft import LoraConfig, get_peft_model

    prefix = module_name(model, language_model)
    pattern = rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, settings.target_modules))})"
    if not any(re.fullmatch(pattern, n) for n, _ in model.named_modules()):
        raise ValueError(
            f"lora.target_modules {settings.target_modules} match no layer under '{prefix}' of {type(model).__name__}"
        )
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=pattern)
    return get_peft_model(model, config)
