"""Assemble a `LlavaForConditionalGeneration` from a causal LM and a CLIP vision tower.

    model, processor = assemble_llava(load_llm("smollm2", layers=6), "default", out="runs/smol-llava")

Parts: the LM as given (its decoder layers, final norm and tied LM head); a new `<image>` token
whose embedding row is the mean of the existing rows (deterministic; LLaVA overwrites image
positions, but a finite, in-distribution row keeps logit tables and `generate` sane); a copy of the
vision tower; a fresh 2-layer GELU projector (LLaVA-1.5's) seeded by `seed`, its output layer
scaled so projected image tokens start at the RMS of the LM's token embeddings (a fresh projector
gives ~6x that for SmolLM2); a ChatML chat template that renders LLaVA's list-of-parts messages
(`{"type": "image"}` -> `<image>`) and injects no system prompt; a `LlavaProcessor` around the
tower's image processor; a generation config that stops at `<|im_end|>`.

The folder loads with `AutoModelForImageTextToText` / `AutoProcessor` like any LVLM, and with
`vladva.model.VladVA.from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vladva.assemble.llm import llm_display_name
from vladva.errors import UserError

IMAGE_TOKEN = "<image>"
ASSEMBLY_FILE = "vladva_assembly.json"

# ChatML without a default system prompt; a message's content is a string or a list of parts.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def chat_template_for(tokenizer) -> str | None:
    """ChatML when the tokenizer has ChatML's special tokens, else None (prompts are then plain text)."""
    vocab = tokenizer.get_vocab()
    return CHATML_TEMPLATE if all(t in vocab for t in CHATML_TOKENS) else None


def load_vision_tower(vision: str | Path):
    """`(CLIPVisionModel, CLIPImageProcessor)` from `"default"` (the shipped tower), a CLIP vision
    tower folder, or a LLaVA folder (its tower)."""
    from transformers import AutoConfig, CLIPImageProcessor, CLIPVisionModel

    if str(vision) == "default":
        from vladva.pretrained.folders import shipped_vision_dir

        vision = shipped_vision_dir()
    path = Path(vision)
    if not (path / "config.json").is_file():
        raise UserError(f"--vision {vision}: not a model folder (no config.json)")
    kind = AutoConfig.from_pretrained(path).model_type
    if kind == "clip_vision_model":
        tower = CLIPVisionModel.from_pretrained(path)
    elif kind == "llava":
        from transformers import LlavaForConditionalGeneration

        lvlm = LlavaForConditionalGeneration.from_pretrained(path)
        tower = CLIPVisionModel(lvlm.config.vision_config)
        tower.load_state_dict(lvlm.model.vision_tower.state_dict())
    else:
        raise UserError(f"--vision {vision}: model type {kind!r} is neither a CLIP vision tower nor a LLaVA model")
    return tower.eval(), CLIPImageProcessor.from_pretrained(path)


def add_image_token(lm, tokenizer) -> int:
    """Add `<image>` as a special token, grow the (tied) embeddings by exactly one row and set it to
    the mean row. Returns its id."""
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    old = lm.get_input_embeddings().weight.shape[0]
    if image_id >= old:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            emb = lm.get_input_embeddings().weight
            emb[image_id:] = emb[:old].mean(dim=0)
    return image_id


@torch.no_grad()
def _match_projector_scale(model, image_size: int, seed: int) -> float:
    """Scale the projector's output layer so projected image tokens of random images have the RMS of
    the LM's token embeddings. Returns the factor applied."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(4, 3, image_size, image_size, generator=g)
    feats = model.model.get_image_features(pixel_values=pixels)
    feats = torch.cat(list(feats.pooler_output if hasattr(feats, "pooler_output") else feats))
    emb = model.model.language_model.get_input_embeddings().weight
    factor = float(emb.pow(2).mean().sqrt() / feats.pow(2).mean().sqrt())
    proj = model.model.multi_modal_projector.linear_2
    proj.weight.mul_(factor)
    proj.bias.mul_(factor)
    return factor


def assemble_llava(llm, vision: str | Path, out: Path | str | None = None, seed: int = 0, match_scale: bool = True):
    """`(LlavaForConditionalGeneration, LlavaProcessor)` from a causal LM and a vision tower; saved to
    `out` when given.

    Args:
        llm: `(causal LM, tokenizer)`, e.g. from `vladva.assemble.load_llm`. Used in place (the
            embedding matrix grows by the `<image>` row).
        vision: `"default"`, a CLIP vision tower folder or a LLaVA folder.
        seed: seeds the fresh projector.
        match_scale: start projected image tokens at the LM's token-embedding RMS.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    lm, tokenizer = llm
    tower, image_processor = load_vision_tower(vision)
    image_id = add_image_token(lm, tokenizer)
    template = chat_template_for(tokenizer)
    tokenizer.chat_template = template
    tokenizer.padding_side = "left"  # batched generation; vladva's towers pass their own side
    vc = tower.config
    n_image_tokens = (vc.image_size // vc.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vc,
        text_config=lm.config,
        image_token_id=image_id,
        image_seq_length=n_image_tokens,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    if not lm.config.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.model.vision_tower.load_state_dict(tower.state_dict(), strict=True)
    model.tie_weights()
    scale = _match_projector_scale(model, vc.image_size, seed) if match_scale else 1.0
    eos = tokenizer.convert_tokens_to_ids(CHATML_TOKENS[1]) if template else tokenizer.eos_token_id
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tokenizer.bos_token_id, eos, tokenizer.pad_token_id
    gc.do_sample, gc.max_new_tokens = False, 64
    for attr in ("temperature", "top_p", "top_k"):
        if hasattr(gc, attr):
            setattr(gc, attr, None)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vc.patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
        chat_template=template,
    )
    model.eval()
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        provenance = {
            "language_model": llm_display_name(lm),
            "layers": lm.config.num_hidden_layers,
            "vision": str(vision),
            "seed": seed,
            "image_tokens": n_image_tokens,
            "projector_scale": round(scale, 6),
            "chat_template": "chatml" if template else None,
        }
        (out / ASSEMBLY_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return model, processor
