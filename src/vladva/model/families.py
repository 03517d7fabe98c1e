"""Backbone families: how each LVLM family names its parts and takes its image inputs.

Everything else (prompts, soft prompts, pooling, LoRA, losses) is shared. A family answers: where
is the language model, which string stands for an image in the text, which processor outputs the
model's forward needs, how its processor is loaded, and whether we must pass position ids
(Llama-style models count positions from 0 even on left-padded rows; Qwen2-VL computes its own
M-RoPE positions). A new family is one `BackboneFamily(...)` value added to `FAMILIES`; generic
code never branches on a family's name (a missing behaviour becomes a field here).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The checkpoint's `model_type` has no backbone family."""


def load_auto_processor(folder: Path | str):
    """`AutoProcessor.from_pretrained(folder)`: what most families need."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


@dataclass(frozen=True)
class BackboneFamily:
    name: str
    model_types: tuple[str, ...]
    # Attribute paths tried in order from the *ForConditionalGeneration model.
    language_model_paths: tuple[str, ...] = ("model.language_model",)
    vision_paths: tuple[str, ...] = ("model.vision_tower",)
    projector_paths: tuple[str, ...] = ("model.multi_modal_projector",)
    # Processor outputs forwarded to the model besides input_ids / attention_mask.
    image_input_keys: tuple[str, ...] = ("pixel_values",)
    # Text placed where the image goes when no chat template is used (None: processor.image_token).
    image_placeholder: str | None = None
    # Pass position ids counted from the attention mask (correct for left padding).
    explicit_positions: bool = True
    # `folder -> processor`; families whose processor needs more than AutoProcessor set their own.
    processor_loader: Callable[[Path | str], object] = load_auto_processor

    @staticmethod
    def _get(model: nn.Module, paths: tuple[str, ...], what: str) -> nn.Module:
        for path in paths:
            obj = model
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            return obj
        raise AttributeError(f"cannot find the {what} of {type(model).__name__} (tried {', '.join(paths)})")

    def language_model(self, model: nn.Module) -> nn.Module:
        return self._get(model, self.language_model_paths, "language model")

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return self._get(model, self.vision_paths, "vision tower")

    def projector(self, model: nn.Module) -> nn.Module:
        return self._get(model, self.projector_paths, "projector")

    def load_processor(self, folder: Path | str):
        """The checkpoint's processor (without torchvision, transformers falls back to the PIL image
        processors)."""
        return self.processor_loader(folder)

    def core(self, model: nn.Module) -> nn.Module:
        """The LVLM without its LM head (returns `last_hidden_state`)."""
        return model.model

    def image_token_text(self, processor) -> str:
        if self.image_placeholder is not None:
            return self.image_placeholder
        return processor.image_token

    def chat_image_content(self) -> dict:
        return {"type": "image"}

    def image_inputs(self, processor, texts: list[str], images: list, padding_side: str) -> dict[str, torch.Tensor]:
        """Processor call for the image tower: `input_ids`, `attention_mask` and the image keys."""
        out = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side=padding_side)
        keep = ("input_ids", "attention_mask", *self.image_input_keys)
        return {k: out[k] for k in keep if k in out}


def load_qwen2_vl_processor(folder: Path | str):
    """Qwen2-VL's processor insists on a video processor, which needs torchvision: without
    torchvision (or for a folder saved without a video processor config) build it images-only."""
    from transformers import AutoProcessor

    if importlib.util.find_spec("torchvision") is None:
        return qwen2_vl_image_only_processor().from_pretrained(folder)
    try:
        return AutoProcessor.from_pretrained(folder)
    except OSError:  # a folder saved without a video processor config (e.g. by vladva without torchvision)
        return qwen2_vl_image_only_processor().from_pretrained(folder)


def qwen2_vl_image_only_processor():
    """`Qwen2VLProcessor` without the video processor (which needs torchvision); saves as the
    regular `Qwen2VLProcessor` so other tools still load the folder."""
    from transformers import Qwen2VLProcessor

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        def to_dict(self):
            out = super().to_dict()
            out["processor_class"] = "Qwen2VLProcessor"
            return out

    return Qwen2VLImageOnlyProcessor


LLAVA = BackboneFamily("llava", ("llava", "llava_next"), image_input_keys=("pixel_values", "image_sizes"))
QWEN2_VL = BackboneFamily(
    "qwen2_vl",
    ("qwen2_vl", "qwen2_5_vl"),
    vision_paths=("model.visual",),
    projector_paths=("model.visual.merger",),
    image_input_keys=("pixel_values", "image_grid_thw", "mm_token_type_ids"),
    image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
    explicit_positions=False,
    processor_loader=load_qwen2_vl_processor,
)
IDEFICS3 = BackboneFamily(
    "idefics3",
    ("idefics3", "smolvlm"),
    language_model_paths=("model.text_model",),
    vision_paths=("model.vision_model",),
    projector_paths=("model.connector",),
    image_input_keys=("pixel_values", "pixel_attention_mask"),
)

FAMILIES: tuple[BackboneFamily, ...] = (LLAVA, QWEN2_VL, IDEFICS3)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)


def family_for(model_type: str) -> BackboneFamily:
    """The family of a config's `model_type`; a clear error naming the supported list otherwise."""
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    raise UnsupportedModelError(
        f"unsupported model_type {model_type!r}: vladva supports {', '.join(SUPPORTED_MODEL_TYPES)}"
    )
