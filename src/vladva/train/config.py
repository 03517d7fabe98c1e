"""The training recipe: dataclass configs read from YAML (`vladva.config.load_config(TrainConfig, ...)`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vladva.model.config import VladVAConfig
from vladva.pretrained import DEFAULT_BASE, resolve_base
from vladva.train.batches import CAPTION_LENGTHS
from vladva.train.distributed import DistributedConfig
from vladva.train.losses import ContrastiveLossConfig
from vladva.train.step import GradCacheConfig


@dataclass
class DataConfig:
    """JSONL manifests (docs/data-layouts.md) or webdataset shards (docs/distributed.md). Batch
    sizes are per process and per micro-step."""

    # A .jsonl manifest, or shards: a folder of .tar files, one .tar, or a brace pattern
    # "DIR/train-{000000..000063}.tar".
    train: str = ""
    val: str | None = None
    contrastive_batch_size: int = 32
    # Images of the contrastive batch that also get a next-token loss on their long caption.
    ntp_batch_size: int = 16
    # "random": one of the image's short captions per step (seeded); "first": always the first.
    caption_choice: str = "random"
    # Which caption of each image is the contrastive term's text: "short" (one short caption, the
    # paper's choice), "long" (the record's long caption, cut to model.prompts.max_text_tokens) or
    # "both" (short or long, drawn 50/50 per image and step; images without a long caption: short).
    contrastive_captions: str = "short"
    # Which caption the next-token term predicts: "long" (the paper's choice), "short" (one short
    # caption, drawn apart from the contrastive one) or "both" (short or long, drawn 50/50).
    ntp_captions: str = "long"
    # NegCLIP-style hard negatives: how many false captions per image join the contrastive batch as
    # extra text candidates (image->text only): the drawn caption's own minimal edits
    # (`caption_negatives`) first, then the record's `negative_captions`. 0: off. Records without
    # negatives contribute none. Works with manifests, shards, GradCache and several processes.
    hard_negatives: int = 0
    # Which kinds of hard negative the collator draws (a manifest negative's "kind", docs/core.md):
    # [all] (every kind, typed or not), or a list such as [swap_att, swap_obj] (binding only);
    # "untyped" names negatives written as plain strings.
    negative_kinds: list[str] = field(default_factory=lambda: ["all"])
    # Unreadable images and bad manifest lines: skipped and counted (false) or an error (true).
    strict: bool = False
    # DataLoader worker processes that read images (or shards) and build the batch tensors
    # (0: in the training process).
    num_workers: int = 0

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.contrastive_batch_size < 2:
            raise ValueError(f"data.contrastive_batch_size must be >= 2, got {self.contrastive_batch_size}")
        if not 0 <= self.ntp_batch_size <= self.contrastive_batch_size:
            raise ValueError("data.ntp_batch_size must be between 0 and data.contrastive_batch_size")
        if self.hard_negatives < 0:
            raise ValueError(f"data.hard_negatives must be >= 0 (0: off), got {self.hard_negatives}")
        if not self.negative_kinds or not all(isinstance(k, str) and k.strip() for k in self.negative_kinds):
            raise ValueError(f"data.negative_kinds must be a non-empty list of kind names, got {self.negative_kinds!r}")
        if "all" in self.negative_kinds and len(self.negative_kinds) > 1:
            raise ValueError(f"data.negative_kinds: 'all' stands alone, got {self.negative_kinds!r}")
        if self.caption_choice not in ("random", "first"):
            raise ValueError(f"data.caption_choice must be 'random' or 'first', got {self.caption_choice!r}")
        if self.contrastive_captions not in CAPTION_LENGTHS:
            raise ValueError(
                f"data.contrastive_captions must be short, long or both, got {self.contrastive_captions!r}"
            )
        if self.ntp_captions not in CAPTION_LENGTHS:
            raise ValueError(f"data.ntp_captions must be long, short or both, got {self.ntp_captions!r}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to `min_lr_ratio` of each group's peak."""

    max_steps: int = 300
    lr_lora: float = 5e-4
    lr_soft_prompt: float = 1e-3
    lr_projector: float = 1e-4
    lr_temperature: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 20
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"optim.max_steps must be >= 1, got {self.max_steps}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if len(self.betas) != 2:
            raise ValueError("optim.betas must be two numbers")
        for name in ("lr_lora", "lr_soft_prompt", "lr_projector", "lr_temperature", "weight_decay"):
            value = getattr(self, name)
            if not 0 <= value < float("inf"):  # also refuses NaN
                raise ValueError(f"optim.{name} must be a finite number >= 0, got {value}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must each be in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"optim.max_grad_norm must be > 0, got {self.max_grad_norm}")


@dataclass
class LossConfig:
    """One field per embedding loss registered in `vladva.train.losses.LOSSES` (each with its
    `weight`), and the next-token loss's weight: total = sum of weight x loss + ntp_weight x NTP."""

    contrastive: ContrastiveLossConfig = field(default_factory=ContrastiveLossConfig)
    ntp_weight: float = 1.0

    def validate(self) -> None:
        if not 0 <= self.ntp_weight < float("inf"):
            raise ValueError(f"loss.ntp_weight must be a finite number >= 0, got {self.ntp_weight}")


@dataclass
class ValidationConfig:
    """Held-out retrieval during training on `data.val` (first `max_images` records, all their
    captions); recipe key `eval`."""

    every: int = 100
    at_start: bool = True
    max_images: int = 200
    batch_size: int = 64

    def validate(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0 (0: only at the end), got {self.every}")
        if self.max_images < 1 or self.batch_size < 1:
            raise ValueError(
                f"eval.max_images and eval.batch_size must be >= 1, got {self.max_images}, {self.batch_size}"
            )


@dataclass
class CheckpointConfig:
    every: int = 100
    keep_last: int = 2

    def validate(self) -> None:
        if self.every < 0:
            raise ValueError(f"checkpoint.every must be >= 0 (0: only at the end), got {self.every}")
        if self.keep_last < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 0 (0: keep all), got {self.keep_last}")


ARCHITECTURES = ("vladva", "dual_encoder")


@dataclass
class TrainConfig:
    # A Hugging Face LVLM folder, or "default" for the embedded base (vladva/pretrained/base-lvlm).
    base_model: str = DEFAULT_BASE
    # What trains on the base: "vladva" (image through the LVLM), or "dual_encoder" (the baseline:
    # vision tower + linear head for images, the same LM text tower; vladva.model.dual_encoder),
    # contrastive only (loss.ntp_weight=0).
    architecture: str = "vladva"
    output_dir: str = "runs/vladva"
    seed: int = 0
    model: VladVAConfig = field(default_factory=VladVAConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Multi-process: global negatives through a gather with gradient (docs/distributed.md).
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # Contrastive batches larger than memory: chunked forward with cached embedding gradients.
    grad_cache: GradCacheConfig = field(default_factory=GradCacheConfig)
    # "auto": bf16 autocast on CUDA with bf16 support, full precision otherwise.
    mixed_precision: str = "auto"
    # CPU threads for torch; 0: automatic, the idle cores (all on an idle machine, 1 on a busy one;
    # VLADVA_NUM_THREADS or OMP_NUM_THREADS override it: vladva.threads).
    num_threads: int = 0
    log_every: int = 10
    progress: bool = True

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.architecture == "dual_encoder" and self.loss.ntp_weight > 0 and self.data.ntp_batch_size > 0:
            raise ValueError("architecture=dual_encoder has no next-token loss: set loss.ntp_weight=0")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0: automatic), got {self.num_threads}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")

    def base_dir(self) -> Path:
        return resolve_base(self.base_model)
