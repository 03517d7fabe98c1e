"""Training losses: symmetric multi-positive InfoNCE with a CLIP-style temperature, and next-token.

Two kinds, because of where they can be computed:
- *embedding losses* score a whole batch's embeddings (`BatchEmbeddings`), so GradCache can compute
  them on cached embeddings. Each is a class registered with `@register_loss(name)` whose config (a
  dataclass with a `weight`) is the field `name` of `LossConfig`: a new loss is one class plus that
  config value; `StepObjective` (vladva.train.step) sums every registered loss with weight > 0.
- the *next-token loss* needs the language model's states at the caption tokens, so it is computed
  inside each forward pass (`caption_cross_entropy` on `VladVA.caption_logits`) and weighted by
  `LossConfig.ntp_weight`.

`ContrastiveLoss` takes a `positives` mask so a batch may hold duplicate captions or several
captions of one image: for query i the loss is `-log(sum_{j in P(i)} e^{s_ij} / sum_j e^{s_ij})`,
which equals CLIP's loss when P(i) = {i}. A `gather` hook (identity by default) lets distributed
training concatenate every process's embeddings with gradient before the loss.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def caption_keys(captions: Sequence[str]) -> torch.Tensor:
    """`(n,)` int64 key per caption (CRC32 of the lower-cased, whitespace-normalised text):
    equal captions get equal keys, and keys can be all-gathered across processes."""
    return torch.tensor([zlib.crc32(" ".join(c.lower().split()).encode("utf-8")) for c in captions], dtype=torch.long)


def positive_mask(image_ids: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
    """`(n, n)` bool: pair (i, j) is positive when image i and image j are the same image or
    their captions are identical (then caption j is true for image i too)."""
    return (image_ids[:, None] == image_ids[None, :]) | (caption_ids[:, None] == caption_ids[None, :])


@dataclass
class BatchEmbeddings:
    """A step's embeddings and how they pair up: what every embedding loss reads.

    `image`, `text`: `(n, dim)` L2-normalised, row i of each a pair; `image_ids`, `caption_ids`:
    `(n,)` int keys (same key = positive, see `positive_mask`); `negatives`: `(m, dim)` false
    captions, `negative_rows[k]` the row of the image negative k was drawn for, or None when
    hard negatives are off."""

    image: torch.Tensor
    text: torch.Tensor
    image_ids: torch.Tensor
    caption_ids: torch.Tensor
    negatives: torch.Tensor | None = None
    negative_rows: list[int] = field(default_factory=list)


LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str):
    """Class decorator: an embedding loss `cls(config, gather=...)` with `cls.batch_loss(emb) -> ()`,
    configured by the field `name` of `vladva.train.config.LossConfig` (a dataclass with `weight`)."""

    def add(cls):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = cls
        return cls

    return add


@dataclass
class ContrastiveLossConfig:
    # Weight of this loss in the step's total (0 turns it off).
    weight: float = 1.0
    # CLIP: learnable logit scale initialised to 1/0.07 and clamped at 100.
    learnable_temperature: bool = True
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def validate(self) -> None:
        if not 0 < self.init_temperature <= 1:
            raise ValueError(f"loss.contrastive.init_temperature must be in (0, 1], got {self.init_temperature}")
        if not 0 <= self.weight < float("inf"):
            raise ValueError(f"loss.contrastive.weight must be a finite number >= 0, got {self.weight}")


@register_loss("contrastive")
class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a batch of `(n, dim)` L2-normalised image and text embeddings."""

    def __init__(
        self, config: ContrastiveLossConfig | None = None, gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    ):
        super().__init__()
        self.config = config or ContrastiveLossConfig()
        # Shape (1,), not a scalar: FSDP2 shards parameters along dim 0 and refuses 0-dim ones.
        init = torch.tensor([math.log(1.0 / self.config.init_temperature)])
        self.logit_scale = nn.Parameter(init, requires_grad=self.config.learnable_temperature)
        self.gather = gather or _identity

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "logit_scale"
        if key in state_dict and state_dict[key].dim() == 0:  # saved when it was a scalar
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale(self) -> torch.Tensor:
        return self._scale(self.logit_scale)

    def _scale(self, logit_scale: torch.Tensor) -> torch.Tensor:
        return logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def current_scale(self) -> float:
        """`scale()` as a number, for logs. The temperature is gathered whole first when the training
        engine shards it over processes (FSDP, ZeRO-3): a collective, every process calls it."""
        from vladva.model.weights import full_tensor

        return float(self._scale(full_tensor(self.logit_scale)))

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        hard_negatives: torch.Tensor | None = None,
        positives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`image_emb`, `text_emb`: `(n, dim)`, row i of each a pair.

        Positives: pairs with the same `image_ids` or `caption_ids` (`(n,)` int keys, see
        `caption_keys`), or an explicit `(n, n)` bool `positives` mask (after gather), or the
        identity when neither is given. `hard_negatives`: optional `(n, k, dim)` false texts per
        image, added to every image's candidates (image->text direction only)."""
        img, txt = self.gather(image_emb), self.gather(text_emb)
        n = img.shape[0]
        if positives is None:
            if image_ids is None and caption_ids is None:
                positives = torch.eye(n, dtype=torch.bool, device=img.device)
            else:
                idx = torch.arange(n, device=img.device)
                im = self.gather(image_ids.to(img.device)) if image_ids is not None else idx
                cap = self.gather(caption_ids.to(img.device)) if caption_ids is not None else idx
                positives = positive_mask(im, cap)
        if positives.shape != (n, n):
            raise ValueError(f"positives must be ({n}, {n}), got {tuple(positives.shape)}")
        positives = positives.to(img.device)
        logits = self.scale() * img.float() @ txt.float().T  # (n_img, n_txt)
        loss_t2i = _multi_positive_nll(logits.T, positives.T)
        if hard_negatives is not None:
            neg = self.gather(hard_negatives).float().reshape(-1, img.shape[1])  # (n*k, dim)
            logits = torch.cat([logits, self.scale() * img.float() @ neg.T], dim=1)
            positives = torch.cat([positives, positives.new_zeros(n, neg.shape[0])], dim=1)
        loss_i2t = _multi_positive_nll(logits, positives)
        return 0.5 * (loss_i2t + loss_t2i)

    def batch_loss(self, emb: BatchEmbeddings) -> torch.Tensor:
        return self(
            emb.image, emb.text, image_ids=emb.image_ids, caption_ids=emb.caption_ids, hard_negatives=emb.negatives
        )


def _multi_positive_nll(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `-log(sum of softmax mass on the row's positives)`."""
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


def caption_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The next-token loss: mean cross-entropy of `logits` `(k, vocab)` predicting `targets` `(k,)`,
    the k labelled caption positions (`VladVA.caption_logits`)."""
    return F.cross_entropy(logits.float(), targets)
