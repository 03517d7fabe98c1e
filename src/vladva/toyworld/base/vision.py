"""Stage 1: a small CLIP-type vision tower pretrained on the scenes' attributes.

LLaVA starts from a pretrained CLIP tower; this stands in for it. The tower learns from dense
labels (per patch: shape and colour of the object covering it, or background) and from linear
heads on its mean-pooled patch tokens (per shape: its colour and size or "absent"; the largest
object's shape and colour). Many small steps are what made it learn on a 2-core CPU
(docs/pretraining.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vladva.toyworld.base.data import SceneVocab, Split, to_pixel_values
from vladva.toyworld.base.training import (
    StepBudget,
    autocast,
    finish_compute,
    param_groups,
    progress_bar,
    set_lr,
    start_compute,
)
from vladva.toyworld.scene import Scene, patch_labels


@dataclass
class VisionTowerConfig:
    """`CLIPVisionConfig` sizes: ~0.8M parameters at the defaults; 64 patch tokens at 32 px / patch 4."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    patch_size: int = 4
    image_size: int = 32

    def to_hf(self):
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            projection_dim=self.hidden_size,
        )


@dataclass
class VisionPretrainConfig:
    tower: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    max_seconds: float = 0.0  # > 0: stop early when the clock runs out (schedule follows the clock)
    patch_weight: float = 1.0  # dense per-patch shape/colour losses
    object_weight: float = 1.0  # per-shape colour/size and largest-object losses on pooled features
    log_every: int = 50

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("vision.steps and vision.batch_size must be >= 1")
        if self.tower.image_size % self.tower.patch_size:
            raise ValueError("vision.tower.image_size must be a multiple of vision.tower.patch_size")


IGNORE = -100


def unique_largest(scene: Scene):
    """The strictly largest object, or None when the largest size is shared (then "the largest"
    names nothing and its label would be noise)."""
    big = max(o.radius for o in scene.objects)
    top = [o for o in scene.objects if o.radius == big]
    return top[0] if len(top) == 1 else None


def vision_labels(scenes: list[Scene], vocab: SceneVocab, patch_size: int) -> dict[str, torch.Tensor]:
    """Integer targets per image. Background / absent is the last class of each head:
    `patch_shape`, `patch_colour`: `(n, patches)`; `shape_colour`, `shape_size`: `(n, n_shapes)`;
    `largest_shape`, `largest_colour`: `(n,)`, -100 (ignored) when no object is strictly largest."""
    S, C, Z = len(vocab.shapes), len(vocab.colours), len(vocab.sizes)
    ps, pc, sc, sz, ls, lc = [], [], [], [], [], []
    for scene in scenes:
        shp, col = patch_labels(scene, patch_size, tuple(vocab.shapes), tuple(vocab.colours))
        ps.append(np.where(shp < 0, S, shp))
        pc.append(np.where(col < 0, C, col))
        per_colour, per_size = np.full(S, C), np.full(S, Z)
        # Larger objects first so that, if a shape repeats, the label names the most visible one.
        for o in sorted(scene.objects, key=lambda o: o.radius):
            per_colour[vocab.shapes.index(o.shape)] = vocab.colours.index(o.colour)
            per_size[vocab.shapes.index(o.shape)] = vocab.sizes.index(o.size)
        sc.append(per_colour)
        sz.append(per_size)
        big = unique_largest(scene)
        ls.append(vocab.shapes.index(big.shape) if big else IGNORE)
        lc.append(vocab.colours.index(big.colour) if big else IGNORE)
    t = lambda a: torch.as_tensor(np.stack(a) if isinstance(a[0], np.ndarray) else np.array(a), dtype=torch.long)
    return {
        "patch_shape": t(ps),
        "patch_colour": t(pc),
        "shape_colour": t(sc),
        "shape_size": t(sz),
        "largest_shape": t(ls),
        "largest_colour": t(lc),
    }


class VisionPretrainHeads(nn.Module):
    """Linear heads on the tower's patch tokens `(b, patches, hidden)` and their mean `(b, hidden)`."""

    def __init__(self, hidden: int, vocab: SceneVocab):
        super().__init__()
        S, C, Z = len(vocab.shapes), len(vocab.colours), len(vocab.sizes)
        self.S, self.C, self.Z = S, C, Z
        self.patch_shape = nn.Linear(hidden, S + 1)
        self.patch_colour = nn.Linear(hidden, C + 1)
        self.shape_colour = nn.Linear(hidden, S * (C + 1))
        self.shape_size = nn.Linear(hidden, S * (Z + 1))
        self.largest_shape = nn.Linear(hidden, S)
        self.largest_colour = nn.Linear(hidden, C)

    def losses(self, patches: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(patch_loss, object_loss)`, each a mean cross-entropy summed over its heads."""
        b = patches.shape[0]
        pooled = patches.mean(1)
        patch = F.cross_entropy(
            self.patch_shape(patches).flatten(0, 1), labels["patch_shape"].flatten()
        ) + F.cross_entropy(self.patch_colour(patches).flatten(0, 1), labels["patch_colour"].flatten())
        obj = (
            F.cross_entropy(self.shape_colour(pooled).view(b * self.S, self.C + 1), labels["shape_colour"].flatten())
            + F.cross_entropy(self.shape_size(pooled).view(b * self.S, self.Z + 1), labels["shape_size"].flatten())
            + F.cross_entropy(self.largest_shape(pooled), labels["largest_shape"])
            + F.cross_entropy(self.largest_colour(pooled), labels["largest_colour"])
        )
        return patch, obj


def build_vision_tower(cfg: VisionTowerConfig):
    from transformers import CLIPVisionModel

    return CLIPVisionModel(cfg.to_hf())


def train_vision_tower(
    train: Split, vocab: SceneVocab, cfg: VisionPretrainConfig, device: torch.device, seed: int = 0, bf16: bool = False
):
    """Pretrain a fresh tower on `train` (needs `meta.scene`). Returns `(CLIPVisionModel on CPU, StageCompute)`."""
    train.require_scenes("vision-tower pretraining")
    torch.manual_seed(seed)
    tower = build_vision_tower(cfg.tower).to(device)
    heads = VisionPretrainHeads(cfg.tower.hidden_size, vocab).to(device)
    labels = {k: v.to(device) for k, v in vision_labels(train.scenes, vocab, cfg.tower.patch_size).items()}
    opt = torch.optim.AdamW(
        param_groups([(list(tower.parameters()) + list(heads.parameters()), cfg.lr)], cfg.weight_decay)
    )
    budget = StepBudget(cfg.steps, cfg.warmup, cfg.max_seconds)
    gen = torch.Generator().manual_seed(seed)
    compute = start_compute("vision", device)
    tower.train()
    step, ema = 0, None
    bar = progress_bar(cfg.steps, "stage 1: vision tower")
    t0 = time.perf_counter()
    while not budget.done(step):
        set_lr(opt, budget.lr_factor(step))
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen)
        pix = to_pixel_values(train.images[idx], device)
        batch_labels = {k: v[idx.to(device)] for k, v in labels.items()}
        with autocast(device, bf16):
            patches = tower(pixel_values=pix).last_hidden_state[:, 1:]
        patch_loss, obj_loss = heads.losses(patches.float(), batch_labels)
        loss = cfg.patch_weight * patch_loss + cfg.object_weight * obj_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tower.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{ema:.3f}", patch=f"{patch_loss.item():.3f}", obj=f"{obj_loss.item():.3f}")
    bar.close()
    finish_compute(compute, step, budget, time.perf_counter() - t0, ema)
    compute.examples = step * cfg.batch_size
    tower.eval()
    return tower.cpu(), compute


@torch.no_grad()
def pooled_patch_features(
    tower, images: torch.Tensor, batch_size: int = 256, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Mean of the tower's final patch tokens (CLS excluded): uint8 `(n, 3, H, W)` -> `(n, hidden)` float32 CPU."""
    was = tower.training
    tower.eval()
    dev = next(tower.parameters()).device if device is None else torch.device(device)
    tower.to(dev)
    out = []
    for i in range(0, len(images), batch_size):
        h = tower(pixel_values=to_pixel_values(images[i : i + batch_size], dev)).last_hidden_state[:, 1:]
        out.append(h.mean(1).float().cpu())
    tower.train(was)
    return torch.cat(out)
