"""Training data as webdataset tar shards: a writer from JSONL manifests and a resumable reader.

Shard layout (`vladva data shard --manifest train.jsonl --out DIR --shard-size N`):

  DIR/train-000000.tar, DIR/train-000001.tar, ...   N samples each (the last may hold fewer)
  DIR/shards.json                                   shard names, sample counts, skipped records

Each sample is three tar members sharing a key (the record id, dots replaced by `_`):
`KEY.png` (or `.jpg`: the image file's own bytes), `KEY.json` (`{"id", "captions",
"long_caption", "meta"}` and, when the record has them, its hard negatives `negative_captions` /
`caption_negatives`, typed negatives as `{"text", "kind"}`: the manifest record without its image
path).

Reading (`ShardStream`) is streaming and split two ways: every epoch shuffles the shard list
(seeded), then process `rank` with DataLoader worker `w` reads shards `split, split + S, ...`
where `split = rank * workers + w` and `S = world * workers`; shards are read in order. A
split's position is `(epoch, shard index in its list, samples consumed in that shard)`; a new
stream started from a saved position skips exactly what was consumed. A sample whose image or
JSON cannot be decoded is skipped, counted and logged with its shard and key.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vladva.data.manifest import Negative, parse_negatives

log = logging.getLogger(__name__)

INDEX_FILE = "shards.json"
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise ImportError("webdataset shards need the `data` extra: pip install 'vladva[data]'") from None
    return webdataset


def sample_key(record_id: str) -> str:
    """A webdataset key: no dots (they separate the key from the member's extension) or slashes."""
    return record_id.replace(".", "_").replace("/", "_")


# ---- writing ---------------------------------------------------------------------------------------


@dataclass
class ShardWriteReport:
    shards: list[dict]  # [{"name": "train-000000.tar", "samples": 1000}, ...]
    samples: int
    skipped: list[str] = field(default_factory=list)  # "manifest:line or record id: reason"


def write_shards(
    manifest: Path | str, out_dir: Path | str, shard_size: int = 1000, prefix: str = "train", strict: bool = False
) -> ShardWriteReport:
    """Convert a JSONL manifest and its images into tar shards of `shard_size` samples.

    Bad manifest lines and unreadable images are skipped and listed in the report (and in
    `shards.json`), or raise with `strict=True`. Each shard is written to a temporary name and
    renamed when complete."""
    from PIL import Image

    from vladva.data.images import ImageLoadError
    from vladva.data.manifest import iter_manifest

    wds = _webdataset()
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    skipped: list[str] = []
    writer, name, count, seen = None, "", 0, set()

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            os.replace(out_dir / f".{name}.tmp", out_dir / name)
            shards.append({"name": name, "samples": count})
            writer = None

    for rec in _records(iter_manifest, manifest, strict, skipped):
        try:
            data = Path(rec.image).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                fmt = (im.format or "").lower()
                im.verify()  # catches truncated / corrupt files without decoding every pixel
        except (OSError, ValueError) as e:
            if strict:
                raise ImageLoadError(f"{rec.image}: unreadable image ({e})") from None
            skipped.append(f"record {rec.id}: unreadable image {rec.image} ({e})")
            log.warning("skipped record %s: unreadable image %s (%s)", rec.id, rec.image, e)
            continue
        ext = {"jpeg": "jpg"}.get(fmt, fmt)
        if ext not in IMAGE_EXTENSIONS:  # keep the original bytes when webdataset readers know the format
            buf = io.BytesIO()
            with Image.open(io.BytesIO(data)) as im:
                im.convert("RGB").save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        key = sample_key(rec.id)
        if key in seen:
            raise ValueError(f"{manifest}: duplicate record id {rec.id!r} (sample key {key!r}); ids must be unique")
        seen.add(key)
        if writer is None or count >= shard_size:
            close()
            name, count = f"{prefix}-{len(shards):06d}.tar", 0
            writer = wds.TarWriter(str(out_dir / f".{name}.tmp"), mtime=0.0)
        meta = {"id": rec.id, "captions": rec.captions, "long_caption": rec.long_caption, "meta": rec.meta}
        line = rec.to_json(Path(manifest).parent)  # the negatives as the manifest writes them (typed or not)
        meta |= {k: line[k] for k in ("negative_captions", "caption_negatives") if k in line}
        writer.write({"__key__": key, ext: data, "json": json.dumps(meta).encode("utf-8")})
        count += 1
    close()
    report = ShardWriteReport(shards, sum(s["samples"] for s in shards), skipped)
    index = {
        "format": "vladva-shards",
        "version": 1,
        "source": str(manifest),
        "shard_size": shard_size,
        **asdict(report),
    }
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return report


def _records(iter_manifest, manifest, strict: bool, skipped: list[str]):
    """Manifest records; in lenient mode bad lines are listed in `skipped` as `file:line: reason`."""
    from vladva.data.manifest import ReadReport

    report = ReadReport(str(manifest))
    yield from iter_manifest(manifest, strict=strict, report=report)
    for line, reason in report.skipped:
        skipped.append(f"{manifest}:{line}: {reason}")
        log.warning("skipped manifest line %s:%s: %s", manifest, line, reason)


# ---- reading ---------------------------------------------------------------------------------------


def resolve_shards(spec: str | Path) -> list[str]:
    """Shard paths from a folder (its `shards.json`, else every `*.tar` sorted), one `.tar`, or a
    brace pattern such as `DIR/train-{000000..000063}.tar`."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        index = path / INDEX_FILE
        if index.is_file():
            names = [s["name"] for s in json.loads(index.read_text(encoding="utf-8"))["shards"]]
        else:
            names = sorted(p.name for p in path.glob("*.tar"))
        if not names:
            raise FileNotFoundError(f"{path}: no .tar shards (write them with `vladva data shard`)")
        return [str(path / n) for n in names]
    if "{" in text:
        from braceexpand import braceexpand

        urls = list(braceexpand(text))
        missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).is_file()]
        if missing:
            raise FileNotFoundError(f"{text}: {len(missing)} of {len(urls)} shards missing, e.g. {missing[0]}")
        return urls
    if text.endswith(".tar"):
        if not path.is_file():
            raise FileNotFoundError(f"{text}: no such shard")
        return [text]
    raise ValueError(f"{text}: not a shard folder, .tar file or brace pattern")


def is_shard_spec(spec: str | Path) -> bool:
    """True when `spec` names shards rather than a JSONL manifest."""
    text = str(spec)
    return text.endswith(".tar") or ("{" in text and ".tar" in text) or Path(text).is_dir()


@dataclass
class ShardSample:
    """One decoded training sample and the position of its split just after it."""

    key: str
    shard: str
    image: object  # PIL.Image (RGB)
    captions: list[str]
    long_caption: str | None
    meta: dict
    split: int
    position: dict  # {"epoch", "shard", "offset"}: where this split resumes after this sample
    skipped: list[str] = field(default_factory=list)  # bad samples skipped just before this one
    # Hard negatives, as in the manifest (vladva.data.manifest): per caption and per record.
    caption_negatives: list[list[Negative]] = field(default_factory=list)
    negative_captions: list[Negative] = field(default_factory=list)


@dataclass
class SplitPosition:
    epoch: int = 0
    shard: int = 0  # index into the split's shard list for `epoch`
    offset: int = 0  # samples of that shard already consumed (bad ones included)


def split_shards(shards: list[str], seed: int, epoch: int, split: int, n_splits: int) -> list[str]:
    """The shards `split` of `n_splits` reads in `epoch`: a seeded shuffle, then every
    `n_splits`-th shard from `split`. Splits are disjoint and together cover every shard."""
    order = list(shards)
    random.Random(f"vladva-shards/{seed}/{epoch}").shuffle(order)
    return order[split::n_splits]


def decode_sample(raw: dict) -> tuple[object, dict]:
    """`(RGB PIL image, record dict)` from a webdataset sample's raw members; raises ValueError."""
    from PIL import Image

    ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
    if ext is None:
        raise ValueError(f"no image member (.{'/.'.join(IMAGE_EXTENSIONS)})")
    if "json" not in raw:
        raise ValueError("no .json member")
    try:
        record = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"bad .json member ({e})") from None
    captions = record.get("captions") if isinstance(record, dict) else None
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise ValueError(".json member has no non-empty 'captions' list")
    record["negative_captions"], record["caption_negatives"] = parse_negatives(record, len(captions))
    try:
        with Image.open(io.BytesIO(raw[ext])) as im:
            image = im.convert("RGB")
    except OSError as e:
        raise ValueError(f"bad .{ext} member ({e})") from None
    return image, record


class ShardStream(torch.utils.data.IterableDataset):
    """Endless stream of `ShardSample`s for one process, split further across DataLoader workers.

    `positions`: `{split: SplitPosition or dict}` to resume from (see `vladva.train.batches.TrainBatches.state`)."""

    def __init__(
        self,
        shards: list[str],
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        positions: dict | None = None,
        epochs: int | None = None,
    ):
        super().__init__()
        if not shards:
            raise ValueError("no shards to read")
        self.shards, self.seed, self.rank, self.world = list(shards), seed, rank, world
        self.positions = {
            int(k): SplitPosition(**v) if isinstance(v, dict) else v for k, v in (positions or {}).items()
        }
        self.epochs = epochs  # None: endless (training); an int: stop after that many epochs (tests, tools)

    def split_of_worker(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        n_splits = self.world * workers
        if len(self.shards) < n_splits:
            raise ValueError(
                f"{len(self.shards)} shards cannot feed {self.world} processes x {workers} data workers; "
                f"write at least {n_splits} shards (smaller --shard-size) or lower data.num_workers"
            )
        return self.rank * workers + worker, n_splits

    def __iter__(self) -> Iterator[ShardSample]:
        split, n_splits = self.split_of_worker()
        pos = self.positions.get(split, SplitPosition())
        epoch, first_shard, skip = pos.epoch, pos.shard, pos.offset
        while self.epochs is None or epoch < self.epochs:
            mine = split_shards(self.shards, self.seed, epoch, split, n_splits)
            for i in range(first_shard, len(mine)):
                yield from self._read_shard(mine[i], split, epoch, i, skip)
                skip = 0
            epoch, first_shard = epoch + 1, 0

    def _read_shard(self, url: str, split: int, epoch: int, shard_index: int, skip: int) -> Iterator[ShardSample]:
        wds = _webdataset()
        pending: list[str] = []
        errors: list[str] = []

        def handler(exn: Exception) -> bool:  # a broken tar stream: log, count, give up on the rest of this shard
            errors.append(str(exn))
            return False

        offset = 0
        for raw in wds.tariterators.tarfile_samples([{"url": url}], handler=handler):
            offset += 1
            if offset <= skip:
                continue  # consumed before the checkpoint
            key = raw.get("__key__", "?")
            try:
                image, record = decode_sample(raw)
            except ValueError as e:
                msg = f"shard {url} key {key}: {e}"
                log.warning("skipped sample: %s", msg)
                pending.append(msg)
                continue
            yield ShardSample(
                key,
                url,
                image,
                list(record["captions"]),
                record.get("long_caption"),
                record.get("meta") or {},
                split,
                {"epoch": epoch, "shard": shard_index, "offset": offset},
                pending,
                record["caption_negatives"],
                record["negative_captions"],
            )
            pending = []
        for e in errors:
            msg = f"shard {url}: unreadable tar data, rest of the shard skipped ({e})"
            log.warning("skipped: %s", msg)
            pending.append(msg)
        if pending:  # bad samples at the end of a shard: report them on an empty marker
            yield ShardSample(
                "", url, None, [], None, {}, split, {"epoch": epoch, "shard": shard_index + 1, "offset": 0}, pending
            )
