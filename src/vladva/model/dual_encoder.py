"""`DualEncoder`: the LLM2CLIP / LiT-style baseline that isolates VladVA's thesis.

Same base LVLM folder, same text tower as VladVA (sentence + summary prompt through the language
model alone, pooled, with LoRA), but the image never enters the language model: the LVLM's
vision tower's pooled output (`pooler_output`, its final-norm CLS state) goes through a linear head
to the language model's width. Trained contrastively by the same trainer
(`vladva train architecture=dual_encoder`, no next-token loss), saved as a weights folder of
format "dual-encoder" (LoRA, the head, and the vision tower when trained), and loaded by the
`dual:` model kind.

    dual = DualEncoder.from_pretrained(base_dir, weights_dir)   # an Embedder
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vladva.model.inputs import TowerInputBuilder, TowerInputs
from vladva.model.vladva import VladVA

HEAD_SEED = 0


class DualInputBuilder(TowerInputBuilder):
    """Text tower inputs as VladVA's; image inputs are the image processor's pixels only."""

    def image_inputs(self, images: Sequence, padding_side: str | None = None) -> TowerInputs:
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return TowerInputs({"pixel_values": pixels}, torch.zeros(len(pixels), dtype=torch.long))

    def ntp_inputs(self, images: Sequence, long_captions: Sequence[str]) -> TowerInputs:
        raise ValueError(
            "a dual encoder has no next-token loss: train it with loss.ntp_weight=0 (data.ntp_batch_size is ignored)"
        )


class DualEncoder(VladVA):
    """Image: vision tower -> pooled `(batch, vision_hidden)` -> linear head -> `(batch, hidden)`;
    text: VladVA's text tower. Both L2-normalised float32. `config.train_projector` also trains the
    vision tower (the head always trains); the LVLM's projector and LM head are unused."""

    WEIGHTS_FORMAT = "dual-encoder"
    KIND = "dual"
    COMPUTE_STAGE = "dual-encoder"

    def __init__(self, model: nn.Module, processor, config=None, name: str = "dual"):
        super().__init__(model, processor, config, name)
        extra = self.config.soft_prompt.extra_tokens if self.config.soft_prompt.enabled else 0
        self.inputs = DualInputBuilder(processor, self.family, self.config.prompts, extra)
        width = self.vision_tower.config.hidden_size
        self.image_head = nn.Linear(width, self.hidden_size)
        g = torch.Generator().manual_seed(HEAD_SEED)  # the same fresh head for every load of a base
        with torch.no_grad():
            self.image_head.weight.copy_(torch.randn(self.hidden_size, width, generator=g) / width**0.5)
            self.image_head.bias.zero_()
        self.image_head.to(self.device)

    @property
    def vision_tower(self) -> nn.Module:
        return self.family.vision_tower(self.model)

    # ---- forward ---------------------------------------------------------------------------------

    def embed_image_inputs(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, hidden)` L2-normalised float32 image embeddings (keeps the graph for training)."""
        pixels = batch.model_inputs["pixel_values"].to(self.image_head.weight.dtype)
        pooled = self.vision_tower(pixel_values=pixels).pooler_output
        return F.normalize(self.image_head(pooled).float(), dim=-1)

    def image_hidden(self, batch: TowerInputs) -> torch.Tensor:
        raise NotImplementedError("a dual encoder's image never enters the language model")

    def embed_image_with_caption(self, batch: TowerInputs):
        raise ValueError("a dual encoder has no next-token loss: train it with loss.ntp_weight=0")

    # ---- training set-up ---------------------------------------------------------------------------

    def prepare_for_training(self) -> int:
        """LoRA (and soft prompts) on the text tower as VladVA; the head, and with
        `train_projector` the vision tower, trainable. Returns the trainable parameter count."""
        super().prepare_for_training()
        self.family.projector(self.model).requires_grad_(False)
        self.vision_tower.requires_grad_(self.config.train_projector)
        self.image_head.requires_grad_(True)
        return self.num_trainable()

    def _image_side(self) -> list[nn.Parameter]:
        tower = [p for p in self.vision_tower.parameters() if p.requires_grad]
        return list(self.image_head.parameters()) + tower

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`lora` (the text tower), `projector` (the image head and a trained vision tower),
        `soft_prompt`."""
        soft = [p for p in (self.soft_prompts.parameters() if self.soft_prompts is not None else []) if p.requires_grad]
        image = self._image_side()
        image_ids = {id(p) for p in image}
        lora = [p for p in self.model.parameters() if p.requires_grad and id(p) not in image_ids]
        return {"soft_prompt": soft, "lora": lora, "projector": image}

    @torch.no_grad()
    def hidden_stages(
        self, images: Sequence | None = None, texts: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """Probe stages (`vladva.embedder.StagedEmbedder`): the text tower's are VladVA's (the LM
        layers); the image never enters the LM, so its only stage is the embedding itself."""
        if images is None or texts is not None:
            return super().hidden_stages(images, texts, batch_size)
        return {"embedding": self.encode_images(list(images), batch_size)}

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.soft_prompts is not None:
            out["soft_prompt.image"] = self.soft_prompts.image.detach().float().cpu().contiguous()
            out["soft_prompt.text"] = self.soft_prompts.text.detach().float().cpu().contiguous()
        for n, p in self.image_head.named_parameters():
            out[f"image_head.{n}"] = p.detach().cpu().contiguous()
        if self.config.train_projector:
            for n, p in self.vision_tower.named_parameters():
                out[f"vision_tower.{n}"] = p.detach().cpu().contiguous()
        if self.config.train_language_model:
            for n, p in self.family.language_model(self.model).named_parameters():
                if "lora_" not in n:
                    out[f"language_model.{n}"] = p.detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load_trained_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_trained_tensors(tensors)
        for prefix, module in (("image_head.", self.image_head), ("vision_tower.", self.vision_tower)):
            params = dict(module.named_parameters())
            for key, value in tensors.items():
                if key.startswith(prefix):
                    name = key.removeprefix(prefix)
                    if name not in params:
                        raise KeyError(f"{key}: no such weight in this dual encoder")
                    params[name].copy_(value)

    def merge(self, out_dir: Path | str) -> Path:
        raise NotImplementedError("a dual encoder is not a single Hugging Face model; use its weights folder")
