"""Stage 2: the CLIP-style dual-encoder baseline and its `Embedder` wrapper.

A transformers `CLIPModel` whose vision tower starts from stage 1 and whose text tower (same
word-level vocabulary) starts fresh, trained with CLIP's own symmetric contrastive loss on the
short captions, as CLIP is on alt-text. It is what VladVA is compared against on equal compute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vladva.embedder import ImageInput
from vladva.model_kinds import register_model_kind
from vladva.toyworld.base.data import Split, make_image_processor, to_pixel_values
from vladva.toyworld.base.tokenizer import wrap_tokenizer
from vladva.toyworld.base.training import (
    StepBudget,
    autocast,
    finish_compute,
    param_groups,
    progress_bar,
    set_lr,
    start_compute,
)


@dataclass
class ClipTextTowerConfig:
    """`CLIPTextConfig` sizes; short captions are < 30 tokens, so 64 positions suffice."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 64


@dataclass
class ClipBaselineConfig:
    text: ClipTextTowerConfig = field(default_factory=ClipTextTowerConfig)
    projection_dim: int = 128
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    vision_lr_scale: float = 0.3  # the stage-1 tower moves, but slower than the fresh text tower
    weight_decay: float = 0.1
    warmup: int = 100
    max_seconds: float = 0.0
    # Train at least as long (wall seconds) as the base LVLM's stage took, so the two are
    # compared on equal compute; `steps` is then a minimum.
    match_lvlm_seconds: bool = True
    log_every: int = 50

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("clip.steps must be >= 1 and clip.batch_size >= 2 (contrastive needs negatives)")


def clip_tokenizer(tokenizer):
    """The LVLM's vocabulary with </s> appended (CLIP's text tower pools at the end token) and right padding."""
    return wrap_tokenizer(tokenizer.backend_tokenizer, padding_side="right", add_eos=True)


def build_clip_model(vision_tower, tokenizer, cfg: ClipBaselineConfig):
    """`CLIPModel` with a copy of `vision_tower`'s weights and a fresh text tower over `tokenizer`'s vocabulary."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    t = cfg.text
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads,
        max_position_embeddings=t.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=cfg.projection_dim,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_tower.config.to_dict(),
        projection_dim=cfg.projection_dim,
    )
    model = CLIPModel(config)
    model.vision_model.load_state_dict(vision_tower.state_dict())
    return model


def train_clip_baseline(
    train: Split,
    tokenizer,
    vision_tower,
    cfg: ClipBaselineConfig,
    device: torch.device,
    seed: int = 0,
    bf16: bool = False,
    min_seconds: float = 0.0,
):
    """Contrastive training on `train`'s short captions for `cfg.steps` steps and at least
    `min_seconds`. `tokenizer` is the shared word-level one (any padding side).
    Returns `(ClipBaselineEmbedder on CPU, StageCompute)`."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = clip_tokenizer(tokenizer)
    model = build_clip_model(vision_tower, tok, cfg).to(device).train()
    vision = list(model.vision_model.parameters()) + list(model.visual_projection.parameters())
    vision_ids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in vision_ids]
    opt = torch.optim.AdamW(
        param_groups(
            [
                (list(model.vision_model.parameters()), cfg.lr * cfg.vision_lr_scale),
                (list(model.visual_projection.parameters()) + rest, cfg.lr),
            ],
            cfg.weight_decay,
        )
    )
    budget = StepBudget(cfg.steps, cfg.warmup, cfg.max_seconds, min_seconds)
    compute = start_compute("clip", device)
    gen = torch.Generator().manual_seed(seed)
    max_len = cfg.text.max_positions
    step, ema, curve, tokens = 0, None, [], 0
    bar = progress_bar(cfg.steps, "stage 2: CLIP baseline")
    t0 = time.perf_counter()
    while not budget.done(step):
        set_lr(opt, budget.lr_factor(step))
        idx = torch.randperm(len(train), generator=gen)[: cfg.batch_size]
        texts = [rng.choice(train.records[i].captions) for i in idx.tolist()]
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tokens += int(enc["attention_mask"].sum())  # real text-tower tokens, </s> included (counted on the CPU)
        enc = enc.to(device)
        with autocast(device, bf16):
            loss = model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                pixel_values=to_pixel_values(train.images[idx], device),
                return_loss=True,
            ).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # CLIP's clamp: keep the logit scale at most 100
            model.logit_scale.clamp_(0, 4.6052)
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        if step % cfg.log_every == 0 or step == 1:
            curve.append((step, round(loss.item(), 4)))
            bar.set_postfix(loss=f"{ema:.3f}")
    bar.close()
    finish_compute(compute, step, budget, time.perf_counter() - t0, ema)
    # Each example is one image with one of its captions, in a contrastive batch.
    compute.examples = compute.pairs = step * cfg.batch_size
    compute.tokens = tokens
    compute.extra["loss_curve"] = curve
    compute.extra["min_seconds"] = round(min_seconds, 1)
    model.eval()
    return ClipBaselineEmbedder(model.cpu(), tok, make_image_processor(vision_tower.config.image_size)), compute


class ClipBaselineEmbedder:
    """`vladva.embedder.Embedder` over a `CLIPModel`: projected, L2-normalised image and text features."""

    def __init__(
        self, model, tokenizer, image_processor, device: str | torch.device = "cpu", name: str = "clip-baseline"
    ):
        self.model = model.to(device).eval()
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.device = torch.device(device)
        self.name = name

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", name: str | None = None
    ) -> ClipBaselineEmbedder:
        """Load a folder written by `save_pretrained` (or `vladva baseline train`), offline."""
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a CLIP baseline folder (no config.json); train one with `vladva baseline train`"
            )
        from vladva.model.quiet import quiet_transformers

        with quiet_transformers():
            model = CLIPModel.from_pretrained(path)
            tok = AutoTokenizer.from_pretrained(path)
            ip = CLIPImageProcessor.from_pretrained(path)
        return cls(model, tok, ip, device=device, name=name or path.name)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 32, show_progress: bool = False
    ) -> torch.Tensor:
        """`(len(images), projection_dim)` float32, L2-normalised rows, on CPU; one image or path is one item."""
        from vladva.data.images import load_image
        from vladva.embedder import as_image_list

        images = as_image_list(images)

        out = []
        for i in _batches(len(images), batch_size, show_progress, "images"):
            ims = [im if not isinstance(im, (str, Path)) else load_image(im) for im in images[i : i + batch_size]]
            ims = [im.convert("RGB") for im in ims]
            pix = self.image_processor(images=ims, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(self.model.get_image_features(pixel_values=pix).pooler_output.float())
        return _normalise(out, self.model.config.projection_dim)

    @torch.no_grad()
    def encode_pixel_values(self, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Already-normalised `(n, 3, H, W)` pixels -> `(n, projection_dim)` L2-normalised, CPU."""
        out = [
            self.model.get_image_features(
                pixel_values=pixel_values[i : i + batch_size].to(self.device)
            ).pooler_output.float()
            for i in range(0, len(pixel_values), batch_size)
        ]
        return _normalise(out, self.model.config.projection_dim)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """`(len(texts), projection_dim)` float32, L2-normalised rows, on CPU. Long texts are truncated
        to the text tower's positions (the end token is kept). One string is one text."""
        from vladva.embedder import as_text_list

        texts = as_text_list(texts)
        out = []
        for i in _batches(len(texts), batch_size, show_progress, "texts"):
            ids, mask = self._tokenize(texts[i : i + batch_size])
            out.append(self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output.float())
        return _normalise(out, self.model.config.projection_dim)

    def _tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, attention_mask)` on the device, right-padded, each row ending in </s>."""
        max_len = self.model.config.text_config.max_position_embeddings
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        ids = enc["input_ids"]
        # Truncation can cut the appended </s>; put it back where the pooling looks for it.
        last = enc["attention_mask"].sum(1) - 1
        ids[torch.arange(len(ids)), last] = self.tokenizer.eos_token_id
        return ids.to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def hidden_stages(
        self, images: Sequence[ImageInput] | None = None, texts: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """Each encoder layer's features for probes (`vladva.embedder.StagedEmbedder`), `(n, dim)`
        float32 on CPU: `vision0` (patch embeddings) to `vision<L>` (last layer) at the class token
        (the position CLIP pools and projects) and `vision<k>.mean` over the patch tokens; or
        `text0` to `text<L>` at the end token (CLIP's pooled position) and `text<k>.mean` over
        real tokens; last, `embedding` (what `encode_images` / `encode_texts` return)."""
        from vladva.data.images import load_image

        if (images is None) == (texts is None):
            raise ValueError("hidden_stages: give images or texts, not both")
        parts: dict[str, list[torch.Tensor]] = {}
        items = list(images if images is not None else texts)
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            stages = {}
            if images is not None:
                ims = [(load_image(im) if isinstance(im, (str, Path)) else im).convert("RGB") for im in chunk]
                pix = self.image_processor(images=ims, return_tensors="pt")["pixel_values"].to(self.device)
                out = self.model.vision_model(pixel_values=pix, output_hidden_states=True)
                for k, h in enumerate(out.hidden_states):
                    stages[f"vision{k}"], stages[f"vision{k}.mean"] = h[:, 0], h[:, 1:].mean(dim=1)
                stages["embedding"] = self.model.visual_projection(out.pooler_output)
            else:
                ids, mask = self._tokenize(chunk)
                out = self.model.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                end = mask.sum(1) - 1
                m = mask.unsqueeze(-1).to(out.hidden_states[0].dtype)
                for k, h in enumerate(out.hidden_states):
                    stages[f"text{k}"] = h[torch.arange(len(h), device=h.device), end]
                    stages[f"text{k}.mean"] = (h * m).sum(1) / m.sum(1)
                stages["embedding"] = self.model.text_projection(out.pooler_output)
            for name, value in stages.items():
                parts.setdefault(name, []).append(value.float().cpu())
        out = {name: torch.cat(chunks) for name, chunks in parts.items()}
        return out | {"embedding": torch.nn.functional.normalize(out["embedding"], dim=-1)}


def _batches(n: int, batch_size: int, show_progress: bool, what: str):
    starts = range(0, n, batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        return tqdm(starts, desc=f"encoding {what}", unit="batch")
    return starts


def _normalise(chunks: list[torch.Tensor], dim: int) -> torch.Tensor:
    if not chunks:
        return torch.zeros((0, dim), dtype=torch.float32)
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu().float()


register_model_kind(
    "clip",
    lambda model_dir: ClipBaselineEmbedder.from_pretrained(model_dir),
    "the CLIP-style baseline",
    usage="clip:DIR",
)
