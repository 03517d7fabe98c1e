"""Training batches streamed from webdataset shards, with a resumable position per data split.

The shard counterpart of `vladva.train.data.BatchOrder` + `BatchCollator`: one process reads its
shards (`vladva.data.shards.ShardStream`, optionally through DataLoader workers), groups
`batch_size` samples into a `StepBatch` (one short caption per image, long captions for the
first `ntp_batch_size`), and remembers, per split, the position just after the last sample it
handed to training. That position (`state()`), saved in the checkpoint, is where a resumed run
continues; samples prefetched by workers but never used are read again, none are skipped.
"""

from __future__ import annotations

import random
import zlib

import torch

from vladva.data.shards import ShardStream, resolve_shards
from vladva.train.data import StepBatch
from vladva.train.losses import caption_keys


def _as_list(sample):
    return sample


class ShardBatches:
    """`next_batch()` -> `StepBatch` for this process; `state()` / `positions` to resume."""

    def __init__(
        self,
        spec: str,
        batch_size: int,
        ntp_batch_size: int,
        caption_choice: str,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        state: dict | None = None,
    ):
        self.shards = resolve_shards(spec)
        self.batch_size, self.ntp_batch_size = batch_size, ntp_batch_size
        self.caption_choice, self.seed = caption_choice, seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.positions: dict[int, dict] = {}
        if state:
            if state.get("world") != world or state.get("workers") != max(1, num_workers):
                raise ValueError(
                    f"the checkpoint's data position is for {state.get('world')} processes x {state.get('workers')} "
                    f"data workers; resume with the same (now {world} x {max(1, num_workers)})"
                )
            self.positions = {int(k): dict(v) for k, v in state["positions"].items()}
        self._iter = None

    def _samples(self):
        if self._iter is None:
            stream = ShardStream(self.shards, self.seed, self.rank, self.world, positions=self.positions)
            loader = torch.utils.data.DataLoader(
                stream,
                batch_size=None,
                num_workers=self.num_workers,
                collate_fn=_as_list,
                prefetch_factor=4 if self.num_workers else None,
            )
            self._iter = iter(loader)
        return self._iter

    def next_batch(self) -> StepBatch:
        """The next `batch_size` readable samples; bad ones are skipped and listed in `.skipped`."""
        samples, skipped = [], []
        it = self._samples()
        while len(samples) < self.batch_size:
            s = next(it)
            skipped.extend(s.skipped)
            self.positions[s.split] = dict(s.position)
            if s.image is not None:
                samples.append(s)
        images, captions, ids, ntp_images, ntp_caps, ntp_rows = [], [], [], [], [], []
        for s in samples:
            if self.caption_choice == "first":
                caption = s.captions[0]
            else:
                caption = random.Random(f"vladva-caption/{self.seed}/{s.position['epoch']}/{s.key}").choice(s.captions)
            images.append(s.image)
            captions.append(caption)
            ids.append(zlib.crc32(s.key.encode("utf-8")))  # same image (key) -> positive, across processes too
            if s.long_caption and len(ntp_images) < self.ntp_batch_size:
                ntp_rows.append(len(images) - 1)
                ntp_images.append(s.image)
                ntp_caps.append(s.long_caption)
        return StepBatch(
            images=images,
            captions=captions,
            image_ids=torch.tensor(ids, dtype=torch.long),
            caption_ids=caption_keys(captions),
            ntp_images=ntp_images,
            ntp_captions=ntp_caps,
            ntp_rows=ntp_rows,
            skipped=skipped,
        )

    def state(self) -> dict:
        """This process's resume point: `{"world", "workers", "positions": {split: {epoch, shard, offset}}}`."""
        return {
            "world": self.world,
            "workers": max(1, self.num_workers),
            "positions": {str(k): dict(v) for k, v in sorted(self.positions.items())},
        }

    def state_all_processes(self) -> dict:
        """`state()` merged over every process (a collective: all processes must call it)."""
        import torch.distributed as dist

        from vladva.train.distributed import is_distributed

        mine = self.state()
        if not is_distributed():
            return mine
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, mine)
        merged = dict(mine, positions={})
        for st in states:
            merged["positions"].update(st["positions"])
        return merged
