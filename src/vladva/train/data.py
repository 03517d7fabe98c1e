"""Training batches from a JSONL manifest: a deterministic, resumable order and a collator that
loads images, picks a short caption per image and skips (and counts) bad samples.

The order is a pure function of `(seed, epoch)` and the position a pure function of the step, so
resuming needs no sampler state and each of `world` processes takes its own slice of a batch.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vladva.data.images import ImageLoadError, load_image
from vladva.data.manifest import Record, read_manifest
from vladva.train.losses import caption_keys

log = logging.getLogger(__name__)


def load_records(path: Path | str, strict: bool) -> list[Record]:
    """Read a manifest; in lenient mode bad lines are skipped with one log line naming them."""
    records, report = read_manifest(path, strict=strict)
    if report.skipped:
        log.warning("skipped bad manifest lines: %s", report.summary())
    if not records:
        raise ValueError(f"{path}: no usable records")
    return records


@dataclass
class BatchOrder:
    """Shuffled batches of record indices; `batch(i)` is global micro-batch i (across epochs)."""

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1

    @property
    def batches_per_epoch(self) -> int:
        per = self.batch_size * self.world
        if self.n < per:
            raise ValueError(f"{self.n} training records are fewer than one global batch of {per}")
        return self.n // per  # the incomplete last batch is dropped

    def permutation(self, epoch: int) -> list[int]:
        cached = getattr(self, "_cached", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        order = list(range(self.n))
        random.Random(f"vladva-order/{self.seed}/{epoch}").shuffle(order)
        self._cached = (epoch, order)
        return order

    def batch(self, index: int) -> tuple[int, list[int]]:
        """`(epoch, this process's record indices)` of global micro-batch `index`."""
        epoch, pos = divmod(index, self.batches_per_epoch)
        per = self.batch_size * self.world
        chunk = self.permutation(epoch)[pos * per : (pos + 1) * per]
        return epoch, chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


@dataclass
class StepBatch:
    """One micro-batch: images with one short caption each, and the subset with long captions."""

    images: list
    captions: list[str]
    image_ids: torch.Tensor  # (n,) record index: same image -> positive
    caption_ids: torch.Tensor  # (n,) caption key: identical caption -> positive
    ntp_images: list = field(default_factory=list)
    ntp_captions: list[str] = field(default_factory=list)
    ntp_rows: list[int] = field(default_factory=list)  # position of each NTP image in `images`
    # Hard negatives (data.hard_negatives > 0): false captions, each a candidate for every image
    # (image->text); `negative_rows[k]` is the position in `images` of the image it was drawn for.
    negatives: list[str] = field(default_factory=list)
    negative_rows: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class BatchCollator:
    """Turns record indices into a `StepBatch`."""

    def __init__(
        self,
        records: list[Record],
        ntp_batch_size: int,
        caption_choice: str,
        seed: int,
        strict: bool,
        hard_negatives: int = 0,
    ):
        self.records = records
        self.hard_negatives = hard_negatives
        self.ntp_batch_size = ntp_batch_size
        self.caption_choice = caption_choice
        self.seed = seed
        self.strict = strict

    def __call__(self, epoch: int, indices: list[int]) -> StepBatch:
        images, captions, ids, ntp_images, ntp_caps, ntp_rows, skipped = [], [], [], [], [], [], []
        negatives, negative_rows = [], []
        for i in indices:
            rec = self.records[i]
            try:
                image = load_image(rec.image)
            except ImageLoadError as e:
                if self.strict:
                    raise
                skipped.append(f"record {rec.id}: {e}")
                log.warning("skipped sample: record %s: %s", rec.id, e)
                continue
            if self.caption_choice == "first":
                c = 0
            else:
                c = random.Random(f"vladva-caption/{self.seed}/{epoch}/{i}").randrange(len(rec.captions))
            caption = rec.captions[c]
            images.append(image)
            captions.append(caption)
            ids.append(i)
            if self.hard_negatives > 0:  # the drawn caption's own minimal edits first, then the record's
                own = rec.caption_negatives[c] if rec.caption_negatives else []
                rng = random.Random(f"vladva-negative/{self.seed}/{epoch}/{i}")
                picked = rng.sample(own, min(self.hard_negatives, len(own)))
                rest = [x for x in rec.negative_captions if x not in picked]
                picked += rng.sample(rest, min(self.hard_negatives - len(picked), len(rest)))
                negatives.extend(picked)
                negative_rows.extend([len(images) - 1] * len(picked))
            if rec.long_caption and len(ntp_images) < self.ntp_batch_size:
                ntp_rows.append(len(images) - 1)
                ntp_images.append(image)
                ntp_caps.append(rec.long_caption)
        if negatives:  # a negative that is some batch image's positive caption would punish a true pair
            keys = set(caption_keys(captions).tolist())
            keep = [j for j, key in enumerate(caption_keys(negatives).tolist()) if key not in keys]
            negatives, negative_rows = [negatives[j] for j in keep], [negative_rows[j] for j in keep]
        return StepBatch(
            images,
            captions,
            torch.tensor(ids, dtype=torch.long),
            caption_keys(captions),
            ntp_images,
            ntp_caps,
            ntp_rows,
            negatives,
            negative_rows,
            skipped,
        )
