"""A content-addressed embedding cache: each image and each text is encoded once per model.

An embedding is keyed by the model's identity and the item's content: the SHA-256 of an image
file's bytes (plus its crop box), the SHA-256 of a text's UTF-8. The same image under two paths,
in two SugarCrepe categories, in SugarCrepe and SugarCrepe++, or in a rerun is encoded once; an
edited file has new bytes and is encoded again.

`CachedEncoder` keeps every embedding of its run in memory (so deduplication spans categories and
suites even with the disk cache off) and, with a cache folder, stores them on disk:

    CACHE/<model key>/model.txt                  the model identity the folder belongs to
    CACHE/<model key>/images-<sha>.safetensors   tensor "embeddings" (n, dim) float32; metadata
    CACHE/<model key>/texts-<sha>.safetensors    "keys": JSON list of the n content keys, row order

`<model key>` is the SHA-256 of the identity. A run adds one file per call that encoded new
items; when a model's folder holds more than `COMPACT_AFTER` files of a kind, they are merged into
one. Files are written to a temporary name and renamed; an unreadable file is ignored (its items
are encoded again), and a failed write (a full disk) is reported and skipped: the cache only
ever saves time, it never fails an evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import safe_open, save_file

from vladva.eval.loaders import ImageRef
from vladva.storage import DiskFullError, atomic_write, atomic_write_text

log = logging.getLogger(__name__)

COMPACT_AFTER = 64  # files of one kind per model before they are merged into one
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """`$VLADVA_CACHE/eval`, else `$XDG_CACHE_HOME/vladva/eval`, else `~/.cache/vladva/eval`."""
    if os.environ.get("VLADVA_CACHE"):
        return Path(os.environ["VLADVA_CACHE"]) / "eval"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vladva" / "eval"


def text_key(text: str) -> str:
    """Content key of a text: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def model_key(identity: str) -> str:
    """The cache folder name of a model identity."""
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]


@dataclass
class EncodeStats:
    """What the encoder did. `images_encoded` / `texts_encoded`: items the model encoded;
    `cache_hits`: requested items whose embedding was already known (from disk, or from an
    earlier call of this run: another category or suite); `requested`: items asked for, per kind,
    counting repeats; `seconds`: time spent encoding."""

    images_encoded: int = 0
    texts_encoded: int = 0
    cache_hits: int = 0
    requested: dict[str, int] = field(default_factory=lambda: {"images": 0, "texts": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"images": 0.0, "texts": 0.0})


class CachedEncoder:
    """Wraps an `Embedder`: `images(refs)` / `texts(strings)` -> `(n, dim)` float32 L2-normalised.

    `identity` names the model (vladva.eval.models.LoadedModel.identity); `cache_dir=None` keeps
    embeddings in memory only (deduplication across calls still applies)."""

    def __init__(
        self, embedder, identity: str, cache_dir: Path | None, batch_size: int = 32, show_progress: bool = True
    ):
        self.embedder, self.identity = embedder, identity
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.folder = self.cache_dir / model_key(identity) if self.cache_dir is not None else None
        self.batch_size, self.show_progress = batch_size, show_progress
        self.stats = EncodeStats()
        self.texts_read: dict[str, None] = {}  # every text asked for, in order (the unknown-token check)
        self._known: dict[str, dict[str, torch.Tensor]] = {}  # kind -> content key -> (dim,) row
        self._image_keys: dict[tuple, tuple] = {}  # (path, bytes, mtime_ns) -> (SHA-256, (width, height))

    def images(self, refs: Sequence[ImageRef], desc: str = "images") -> torch.Tensor:
        keys = [self.image_key(r) for r in refs]
        return self._lookup("images", keys, refs, lambda todo: self._encode_images(todo, desc))

    def texts(self, texts: Sequence[str], desc: str = "texts") -> torch.Tensor:
        self.texts_read.update(dict.fromkeys(texts))
        keys = [text_key(t) for t in texts]
        return self._lookup("texts", keys, texts, lambda todo: self._encode_texts(todo, desc))

    def image_key(self, ref: ImageRef) -> str:
        """Content key of an image reference: SHA-256 of the file's bytes, plus the crop in pixels
        when it is not the whole image. A file is hashed (and its size read from its header) once
        per run for each (path, size, modification time)."""
        st = ref.path.stat()
        memo = (str(ref.path.resolve()), st.st_size, st.st_mtime_ns)
        known = self._image_keys.get(memo)
        if known is None:
            known = self._image_keys[memo] = (file_sha256(ref.path), _image_size(ref) if ref.box else None)
        digest, size = known
        if ref.box is not None and size is None:  # hashed earlier for a reference without a box
            size = _image_size(ref)
            self._image_keys[memo] = (digest, size)
        box = ref.pixel_box(*size) if ref.box is not None else None
        return digest if box is None else f"{digest}|{','.join(map(str, box))}"

    # -- internals

    def _lookup(self, kind: str, keys: list[str], items: Sequence, encode: Callable[[list], torch.Tensor]):
        known = self._known_rows(kind)
        self.stats.requested[kind] += len(keys)
        todo: dict[str, object] = {}  # content key -> first item with it, in request order
        for key, item in zip(keys, items):
            if key not in known and key not in todo:
                todo[key] = item
        self.stats.cache_hits += len({k for k in keys if k not in todo})
        if todo:
            table = encode(list(todo.values()))
            new = dict(zip(todo, table))
            known.update(new)
            self._store(kind, list(new), table)
        if not keys:
            return torch.zeros(0, 0)
        return torch.stack([known[k] for k in keys])

    def _known_rows(self, kind: str) -> dict[str, torch.Tensor]:
        """This run's rows of `kind`, starting from what the disk cache holds for the model."""
        if kind in self._known:
            return self._known[kind]
        rows: dict[str, torch.Tensor] = {}
        for path in self._files(kind):
            try:
                with safe_open(str(path), framework="pt") as f:
                    keys = json.loads((f.metadata() or {})["keys"])
                    table = f.get_tensor("embeddings")
                if table.ndim != 2 or table.shape[0] != len(keys):
                    raise ValueError(f"{table.shape[0]} rows for {len(keys)} keys")
            except Exception as e:  # a truncated or foreign file: its items are encoded again
                log.warning("embedding cache: ignoring %s (%s: %s)", path, type(e).__name__, e)
                continue
            rows.update(zip(keys, table))
        self._known[kind] = rows
        return rows

    def _files(self, kind: str) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"{kind}-*.safetensors"))

    def _store(self, kind: str, keys: list[str], table: torch.Tensor) -> None:
        """Add a file of `keys` -> rows of `table`; merge the kind's files when there are many."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / "model.txt").is_file():
                atomic_write_text(self.folder / "model.txt", self.identity + "\n", durable=False)
            self._write_file(kind, keys, table)
            old = self._files(kind)
            if len(old) > COMPACT_AFTER:
                rows = self._known[kind]
                merged = self._write_file(kind, list(rows), torch.stack(list(rows.values())))
                for p in old:
                    if p != merged:
                        p.unlink(missing_ok=True)
        except (OSError, DiskFullError) as e:  # a full or read-only disk: the evaluation goes on without caching
            log.warning("embedding cache: could not write to %s (%s); continuing without it", self.folder, e)

    def _write_file(self, kind: str, keys: list[str], table: torch.Tensor) -> Path:
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        path = self.folder / f"{kind}-{name}.safetensors"
        meta = {"keys": json.dumps(keys), "kind": kind, "model": self.identity[:500]}
        atomic_write(
            path, lambda p: save_file({"embeddings": table.contiguous()}, str(p), metadata=meta), durable=False
        )
        return path

    def _batches(self, n: int, desc: str):
        starts = range(0, n, self.batch_size)
        if self.show_progress and n > self.batch_size:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI)
            return tqdm(starts, desc=f"encode {desc}", unit="batch", leave=False, disable=None)
        return starts

    def _check(self, out: torch.Tensor, n: int, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"model '{getattr(self.embedder, 'name', '?')}': encode_{what} returned {shape} "
                f"for {n} inputs; expected (n, dim)"
            )
        # The protocol promises L2-normalised rows; renormalising is cheap and guards cosine scores.
        return torch.nn.functional.normalize(out.detach().to("cpu", torch.float32), dim=-1)

    def _encode_images(self, refs: list[ImageRef], desc: str) -> torch.Tensor:
        t0, parts = time.perf_counter(), []
        for s in self._batches(len(refs), desc):
            chunk = [r.load() for r in refs[s : s + self.batch_size]]
            parts.append(
                self._check(self.embedder.encode_images(chunk, batch_size=self.batch_size), len(chunk), "images")
            )
        self.stats.images_encoded += len(refs)
        self.stats.seconds["images"] += time.perf_counter() - t0
        return torch.cat(parts)

    def _encode_texts(self, texts: list[str], desc: str) -> torch.Tensor:
        t0, parts = time.perf_counter(), []
        for s in self._batches(len(texts), desc):
            chunk = texts[s : s + self.batch_size]
            parts.append(
                self._check(self.embedder.encode_texts(chunk, batch_size=self.batch_size), len(chunk), "texts")
            )
        self.stats.texts_encoded += len(texts)
        self.stats.seconds["texts"] += time.perf_counter() - t0
        return torch.cat(parts)


def _image_size(ref: ImageRef) -> tuple[int, int]:
    """Width and height from the image file's header (not decoded); a file PIL cannot open is left
    to `ImageRef.load`, which names it, so its size here is (0, 0)."""
    from PIL import Image

    try:
        with Image.open(ref.path) as im:
            return im.size
    except Exception:
        return (0, 0)
