"""`VladVAConfig`: what turns a base LVLM into the embedder (prompts, soft prompts, LoRA, pooling)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vladva.model.lora import LoraSettings
from vladva.model.pooling import POOLING
from vladva.model.prompts import PromptConfig
from vladva.model.soft_prompt import SoftPromptConfig


@dataclass
class VladVAConfig:
    """Prompts, soft prompts, LoRA, which base weights train, and how hidden states are pooled."""

    prompts: PromptConfig = field(default_factory=PromptConfig)
    soft_prompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_projector: bool = False
    # Also train every weight of the language model (full fine-tuning, not parameter-efficient;
    # usually with lora.enabled=false). Its weights are saved with the trained weights. A measurement
    # aid: does a small LM need more than LoRA to learn something (docs/results.md)?
    train_language_model: bool = False
    # How a tower's final hidden states become its embedding: "last" (the summary token after the
    # prompt, the paper's choice) or "mean" (mean over every real position: image or sentence
    # tokens and the prompt). A small LM's summary token can read its sentence as a bag of words
    # while its per-token states still bind attributes (benchmarks/binding_probe.py, docs/results.md).
    pooling: str = "last"

    def validate(self) -> None:
        if self.pooling not in POOLING:
            raise ValueError(f"model.pooling must be one of {sorted(POOLING)}, got {self.pooling!r}")
