"""Training batches: samples from a JSONL manifest or webdataset shards, one collator, one DataLoader.

    files --(ManifestSamples | ShardBatchStream)--> TrainSample --(StepCollator)--> StepBatch

- A manifest is read in a deterministic, resumable order: the order is a pure function of
  `(seed, epoch)` and the position a pure function of the micro-batch index, so resuming needs no
  sampler state and each of `world` processes takes its own slice of a global batch
  (`BatchOrder`, `ManifestBatchSampler`).
- Shards stream (vladva.data.shards.ShardStream); each process and DataLoader worker reads its own
  shards, and every batch carries the position of its split just after it, which a checkpoint
  saves so a resumed run continues there (docs/distributed.md).
- `StepCollator` draws one caption per image (seeded per epoch and sample; short by default, long
  or either with `data.contrastive_captions`), the caption's own hard negatives when asked (of the
  kinds `data.negative_kinds` selects), picks the images that also get a next-token loss and their
  target (the long caption by default, short or either with `data.ntp_captions`), and builds every
  tensor the step needs with the model's
  `TowerInputBuilder`. It runs in the DataLoader's worker
  processes (`data.num_workers`), so images are decoded and tokenised off the training process.
- Unreadable samples are skipped and counted (or raise with `data.strict`).
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vladva.data.images import ImageLoadError, load_image
from vladva.data.manifest import Negative, Record, as_negatives, read_manifest
from vladva.model.inputs import TowerInputBuilder, TowerInputs
from vladva.train.losses import caption_keys

log = logging.getLogger(__name__)

# `data.negative_kinds` value that selects every kind of hard negative (typed or not).
ALL_KINDS = "all"
# `data.contrastive_captions` / `data.ntp_captions`: which caption length a term trains on.
CAPTION_LENGTHS = ("short", "long", "both")


def load_records(path: Path | str, strict: bool) -> list[Record]:
    """Read a manifest; in lenient mode bad lines are skipped with one log line naming them."""
    records, report = read_manifest(path, strict=strict)
    if report.skipped:
        log.warning("skipped bad manifest lines: %s", report.summary())
    if not records:
        raise ValueError(f"{path}: no usable records")
    return records


# ---- samples ---------------------------------------------------------------------------------------


@dataclass
class TrainSample:
    """One image with its texts, or a skipped one (`image is None`, the reason in `skipped`).

    `pair_id`: equal for the same image (positives), also across processes; `draw_key`: seeds the
    caption and negative draws (`"{epoch}/{index or key}"`)."""

    pair_id: int
    draw_key: str
    image: object | None
    captions: list[str]
    long_caption: str | None = None
    caption_negatives: list[list[Negative]] = field(default_factory=list)
    negative_captions: list[Negative] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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


class ManifestBatchSampler(torch.utils.data.Sampler):
    """Micro-batches `[(epoch, record index), ...]` of `order`, from micro-batch `start` on, endlessly."""

    def __init__(self, order: BatchOrder, start: int = 0):
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        index = self.start
        while True:
            epoch, indices = self.order.batch(index)
            yield [(epoch, i) for i in indices]
            index += 1


class ManifestSamples(torch.utils.data.Dataset):
    """`dataset[(epoch, i)]` -> record i as a `TrainSample` with its image loaded."""

    def __init__(self, records: list[Record], strict: bool = False):
        self.records, self.strict = records, strict

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> TrainSample:
        epoch, i = key
        rec = self.records[i]
        sample = TrainSample(
            i, f"{epoch}/{i}", None, rec.captions, rec.long_caption, rec.caption_negatives, rec.negative_captions
        )
        try:
            sample.image = load_image(rec.image)
        except ImageLoadError as e:
            if self.strict:
                raise
            sample.skipped.append(f"record {rec.id}: {e}")
            log.warning("skipped sample: record %s: %s", rec.id, e)
        return sample


@dataclass
class ShardGroup:
    """A batch's worth of shard samples and where their split resumes after them."""

    samples: list[TrainSample]
    skipped: list[str]
    positions: dict[int, dict]  # {split: {"epoch", "shard", "offset"}}


class ShardBatchStream(torch.utils.data.IterableDataset):
    """Groups of `batch_size` readable samples from this process's (and worker's) shards."""

    def __init__(self, stream, batch_size: int):
        super().__init__()
        self.stream, self.batch_size = stream, batch_size

    def __iter__(self) -> Iterator[ShardGroup]:
        samples, skipped, positions = [], [], {}
        for s in self.stream:
            skipped.extend(s.skipped)
            positions[s.split] = dict(s.position)
            if s.image is None:
                continue
            samples.append(
                TrainSample(
                    zlib.crc32(s.key.encode("utf-8")),  # same image (key) -> positive, across processes too
                    f"{s.position['epoch']}/{s.key}",
                    s.image,
                    s.captions,
                    s.long_caption,
                    s.caption_negatives,
                    s.negative_captions,
                )
            )
            if len(samples) == self.batch_size:
                yield ShardGroup(samples, skipped, positions)
                samples, skipped, positions = [], [], {}


# ---- batches ---------------------------------------------------------------------------------------


@dataclass
class ImageChunk:
    """Image-tower inputs of some rows of a batch: `ntp` holds the first rows (image, prompt and long
    caption: one pass gives their embedding and the next-token loss), `image` the others."""

    rows: list[int]  # batch rows, in the order the chunk's embeddings come out
    ntp: TowerInputs | None = None
    image: TowerInputs | None = None


@dataclass
class StepBatch:
    """One micro-batch: images with one short caption each (row i of each a pair), the rows that
    also get a next-token loss, hard negatives, and the tensors for each forward pass.

    `image_chunks` / `text_chunks` split the rows for GradCache (one chunk each without it); the
    texts are the captions followed by the negatives."""

    captions: list[str]
    image_ids: torch.Tensor  # (n,) same image -> positive
    caption_ids: torch.Tensor  # (n,) identical caption -> positive
    ntp_rows: list[int] = field(default_factory=list)  # rows whose long caption is trained (NTP)
    # Hard negatives: false captions, each a candidate for every image (image->text);
    # `negative_rows[k]` is the row of the image negative k was drawn for, `negative_kinds[k]` its
    # kind (`Negative.kind_name`: e.g. "swap_att", or "untyped").
    negatives: list[str] = field(default_factory=list)
    negative_rows: list[int] = field(default_factory=list)
    negative_kinds: list[str] = field(default_factory=list)
    image_chunks: list[ImageChunk] = field(default_factory=list)
    text_chunks: list[TowerInputs] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # Shards: the position of each split read, just after this batch (resume point).
    positions: dict[int, dict] = field(default_factory=dict)
    # Long captions trained in this batch (contrastive texts and next-token targets); None: the
    # next-token rows (every one a long caption, the default layout).
    n_long: int | None = None

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def pairs(self) -> int:
        return len(self.captions)

    @property
    def chunked(self) -> bool:
        """True when the tensors are split for GradCache (more than one chunk)."""
        return len(self.image_chunks) > 1 or len(self.text_chunks) > 1

    @property
    def long_captions(self) -> int:
        """Long captions trained: next-token targets, plus contrastive texts when those are long."""
        return len(self.ntp_rows) if self.n_long is None else self.n_long

    @property
    def n_tokens(self) -> int:
        """Real positions through the language model: image rows (with captions) and texts."""
        chunks = [x for c in self.image_chunks for x in (c.ntp, c.image) if x is not None] + self.text_chunks
        return sum(x.n_tokens for x in chunks)


def _chunks(n: int, size: int) -> list[range]:
    size = size if size > 0 else max(1, n)
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


class StepCollator:
    """`list[TrainSample]` (or a `ShardGroup`) -> `StepBatch` with its tensors.

    `ntp_batch_size`: how many images (the first ones with a next-token target) also get the
    next-token loss (0, or `with_ntp=False`, for none); `hard_negatives`: how many false captions
    per image join the batch (the drawn caption's own minimal edits first, then the record's),
    drawn only among `negative_kinds` (None or `["all"]`: every kind; `"untyped"` names negatives
    without a kind); `chunk_size` > 0 splits the tensors for GradCache. `contrastive_captions` /
    `ntp_captions` (`CAPTION_LENGTHS`): each term's caption length, "both" drawing short or long
    50/50 per image and step (seeded); a record without a long caption always gives a short one."""

    def __init__(
        self,
        builder: TowerInputBuilder,
        ntp_batch_size: int,
        caption_choice: str = "random",
        seed: int = 0,
        hard_negatives: int = 0,
        chunk_size: int = 0,
        with_ntp: bool = True,
        negative_kinds: Sequence[str] | None = None,
        contrastive_captions: str = "short",
        ntp_captions: str = "long",
    ):
        for name, value in (("contrastive_captions", contrastive_captions), ("ntp_captions", ntp_captions)):
            if value not in CAPTION_LENGTHS:
                raise ValueError(f"{name} must be one of {', '.join(CAPTION_LENGTHS)}, got {value!r}")
        self.builder = builder
        self.ntp_batch_size = ntp_batch_size if with_ntp else 0
        self.caption_choice, self.seed = caption_choice, seed
        self.hard_negatives, self.chunk_size = hard_negatives, chunk_size
        all_kinds = negative_kinds is None or ALL_KINDS in negative_kinds
        self.negative_kinds = None if all_kinds else frozenset(negative_kinds)
        self.contrastive_captions, self.ntp_captions = contrastive_captions, ntp_captions

    def _caption_index(self, s: TrainSample) -> int:
        if self.caption_choice == "first":
            return 0
        return random.Random(f"vladva-caption/{self.seed}/{s.draw_key}").randrange(len(s.captions))

    def _wanted(self, negatives: list[Negative | str]) -> list[Negative]:
        negatives = as_negatives(negatives)
        if self.negative_kinds is None:
            return negatives
        return [x for x in negatives if x.kind_name in self.negative_kinds]

    def _wants_long(self, s: TrainSample, lengths: str, term: str) -> bool:
        """Whether `term`'s caption of `s` is its long caption this step (`lengths`: CAPTION_LENGTHS)."""
        if not s.long_caption or lengths == "short":
            return False
        return lengths == "long" or random.Random(f"vladva-{term}-length/{self.seed}/{s.draw_key}").random() < 0.5

    def _contrastive_text(self, s: TrainSample) -> tuple[int | None, str]:
        """`(index of the drawn short caption, or None for the long one, the text)`."""
        if self._wants_long(s, self.contrastive_captions, "contrastive"):
            return None, s.long_caption
        c = self._caption_index(s)
        return c, s.captions[c]

    def _ntp_text(self, s: TrainSample) -> tuple[bool, str | None]:
        """`(is the long caption, the next-token target or None when the sample has none)`."""
        if self.ntp_captions == "long" or self._wants_long(s, self.ntp_captions, "ntp"):
            return True, s.long_caption
        rng = random.Random(f"vladva-ntp-caption/{self.seed}/{s.draw_key}")
        return False, s.captions[rng.randrange(len(s.captions))]

    def _negatives(self, s: TrainSample, c: int | None) -> list[Negative]:
        own = self._wanted(s.caption_negatives[c] if s.caption_negatives and c is not None else [])
        rng = random.Random(f"vladva-negative/{self.seed}/{s.draw_key}")
        picked = rng.sample(own, min(self.hard_negatives, len(own)))
        taken = {x.text for x in picked}
        rest = [x for x in self._wanted(s.negative_captions) if x.text not in taken]
        return picked + rng.sample(rest, min(self.hard_negatives - len(picked), len(rest)))

    def __call__(self, items: list[TrainSample] | ShardGroup) -> StepBatch:
        group = items if isinstance(items, ShardGroup) else ShardGroup(list(items), [], {})
        images, captions, ids, skipped = [], [], [], list(group.skipped)
        ntp_rows, ntp_images, ntp_captions, negatives, negative_rows, kinds = [], [], [], [], [], []
        n_long = 0
        for s in group.samples:
            skipped.extend(s.skipped)
            if s.image is None:
                continue
            c, text = self._contrastive_text(s)
            n_long += c is None
            images.append(s.image)
            captions.append(text)
            ids.append(s.pair_id)
            if self.hard_negatives > 0:
                picked = self._negatives(s, c)
                negatives.extend(x.text for x in picked)
                kinds.extend(x.kind_name for x in picked)
                negative_rows.extend([len(images) - 1] * len(picked))
            if len(ntp_images) < self.ntp_batch_size:
                is_long, target = self._ntp_text(s)
                if target:
                    ntp_rows.append(len(images) - 1)
                    ntp_images.append(s.image)
                    ntp_captions.append(target)
                    n_long += is_long
        if negatives:  # a negative that is some batch image's positive caption would punish a true pair
            keys = set(caption_keys(captions).tolist())
            keep = [j for j, key in enumerate(caption_keys(negatives).tolist()) if key not in keys]
            negatives, negative_rows = [negatives[j] for j in keep], [negative_rows[j] for j in keep]
            kinds = [kinds[j] for j in keep]
        batch = StepBatch(
            captions,
            torch.tensor(ids, dtype=torch.long),
            caption_keys(captions),
            ntp_rows,
            negatives,
            negative_rows,
            kinds,
            skipped=skipped,
            positions=group.positions,
            n_long=n_long,
        )
        if len(images) >= 2:  # the trainer refuses smaller batches with a message
            self._tensors(batch, images, ntp_images, ntp_captions)
        return batch

    def _tensors(self, batch: StepBatch, images: list, ntp_images: list, ntp_captions: list[str]) -> None:
        b = self.builder
        ntp_of = {row: k for k, row in enumerate(batch.ntp_rows)}
        for part in _chunks(len(images), self.chunk_size):
            ntp = [r for r in batch.ntp_rows if r in part]
            other = [r for r in part if r not in ntp_of]
            batch.image_chunks.append(
                ImageChunk(
                    ntp + other,
                    b.ntp_inputs([ntp_images[ntp_of[r]] for r in ntp], [ntp_captions[ntp_of[r]] for r in ntp])
                    if ntp
                    else None,
                    b.image_inputs([images[r] for r in other]) if other else None,
                )
            )
        texts = batch.captions + batch.negatives
        batch.text_chunks = [b.text_inputs([texts[i] for i in part]) for part in _chunks(len(texts), self.chunk_size)]


# ---- the training loop's source ------------------------------------------------------------------


class TrainBatches:
    """`next()` -> this process's next `StepBatch`, through one DataLoader for manifests and shards.

    `start`: the global micro-batch to start from (manifests; a resumed run passes its position);
    `shard_state`: a checkpoint's saved shard positions (shards). `state()` is what a checkpoint
    saves: the micro-batch index, or each split's position just after the last batch handed out."""

    def __init__(
        self,
        spec: str,
        collator: StepCollator,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        strict: bool = False,
        start: int = 0,
        shard_state: dict | None = None,
        records: list[Record] | None = None,
    ):
        from vladva.data.shards import is_shard_spec

        self.spec, self.world, self.rank = spec, world, rank
        self.num_workers = num_workers
        self.micro_batch = start
        self.positions: dict[int, dict] = {}
        self.is_shards = is_shard_spec(spec)
        generator = torch.Generator().manual_seed(seed)  # the loader never touches the global RNG
        options = {"num_workers": num_workers, "collate_fn": collator, "generator": generator}
        if num_workers:
            options |= {"prefetch_factor": 4, "persistent_workers": True}
        if self.is_shards:
            from vladva.data.shards import ShardStream, resolve_shards

            if shard_state:
                if shard_state.get("world") != world or shard_state.get("workers") != max(1, num_workers):
                    raise ValueError(
                        f"the checkpoint's data position is for {shard_state.get('world')} processes x "
                        f"{shard_state.get('workers')} data workers; resume with the same "
                        f"(now {world} x {max(1, num_workers)})"
                    )
                self.positions = {int(k): dict(v) for k, v in shard_state["positions"].items()}
            stream = ShardStream(resolve_shards(spec), seed, rank, world, positions=self.positions)
            self.records = None
            self.loader = torch.utils.data.DataLoader(ShardBatchStream(stream, batch_size), batch_size=None, **options)
        else:
            self.records = records if records is not None else load_records(spec, strict=strict)
            self.order = BatchOrder(len(self.records), batch_size, seed, rank, world)
            self.order.batches_per_epoch  # noqa: B018 (raises early when the manifest is smaller than a batch)
            sampler = ManifestBatchSampler(self.order, start)
            self.loader = torch.utils.data.DataLoader(
                ManifestSamples(self.records, strict), batch_sampler=sampler, **options
            )
        self._iter = None

    def next(self) -> StepBatch:
        if self._iter is None:
            self._iter = iter(self.loader)
        batch = next(self._iter)
        self.micro_batch += 1
        self.positions.update(batch.positions)
        return batch

    def state(self) -> dict:
        """This process's resume point."""
        if not self.is_shards:
            return {"micro_batch": self.micro_batch, "batches_per_epoch": self.order.batches_per_epoch}
        return {
            "micro_batch": self.micro_batch,
            "shards": {
                "world": self.world,
                "workers": max(1, self.num_workers),
                "positions": {str(k): dict(v) for k, v in sorted(self.positions.items())},
            },
        }

    def state_all_processes(self) -> dict:
        """`state()` with shard positions merged over every process (a collective: all call it)."""
        mine = self.state()
        if not self.is_shards:
            return mine
        from vladva.train.distributed import all_gather_objects

        merged = dict(mine["shards"], positions={})
        for st in all_gather_objects(mine["shards"]):
            merged["positions"].update(st["positions"])
        return dict(mine, shards=merged)


def collate_records(
    collator: StepCollator, records: list[Record], indices: list[int], epoch: int = 0, strict: bool = True
) -> StepBatch:
    """The `StepBatch` of `records[indices]` drawn as in `epoch` (what the training loop builds for
    that micro-batch); for tests, benchmarks and tools."""
    samples = ManifestSamples(records, strict)
    return collator([samples[(epoch, i)] for i in indices])
