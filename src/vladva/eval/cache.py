"""Embeddings computed once per (model, item list) and kept on disk.

Several suites and reruns ask for the same images and texts (SugarCrepe's categories share
images; a rerun after adding a model recomputes nothing for the others). `CachedEncoder`
deduplicates items, encodes the rest in batches with a progress bar, and stores one
safetensors file per (model identity, item list) keyed by a SHA-256 of both. Image identity is
path + size + modification time + crop box, so an edited file is re-encoded.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vladva.eval.loaders import ImageRef


def default_cache_dir() -> Path:
    """`$VLADVA_CACHE/eval`, else `$XDG_CACHE_HOME/vladva/eval`, else `~/.cache/vladva/eval`."""
    if os.environ.get("VLADVA_CACHE"):
        return Path(os.environ["VLADVA_CACHE"]) / "eval"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vladva" / "eval"


def cache_key(model_identity: str, kind: str, items: Sequence[str]) -> str:
    """SHA-256 hex of the model identity, the modality and the ordered item identities."""
    h = hashlib.sha256()
    for part in (model_identity, kind, str(len(items))):
        h.update(part.encode("utf-8") + b"\0")
    for item in items:
        h.update(item.encode("utf-8") + b"\0")
    return h.hexdigest()


@dataclass
class EncodeStats:
    """What the encoder did: items encoded vs served from cache, and seconds spent encoding."""

    images_encoded: int = 0
    texts_encoded: int = 0
    cache_hits: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"images": 0.0, "texts": 0.0})


class CachedEncoder:
    """Wraps an `Embedder`: `images(refs)` / `texts(strings)` -> `(n, dim)` float32 L2-normalised.

    `cache_dir=None` disables the disk cache (deduplication still applies)."""

    def __init__(
        self, embedder, identity: str, cache_dir: Path | None, batch_size: int = 32, show_progress: bool = True
    ):
        self.embedder, self.identity = embedder, identity
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size, self.show_progress = batch_size, show_progress
        self.stats = EncodeStats()
        self.texts_read: dict[str, None] = {}  # every text asked for, in order (the unknown-token check)

    def images(self, refs: Sequence[ImageRef], desc: str = "images") -> torch.Tensor:
        unique = list(dict.fromkeys(refs))
        keys = [r.fingerprint() for r in unique]
        table = self._cached("images", keys, lambda: self._encode_images(unique, desc))
        index = {r: i for i, r in enumerate(unique)}
        return table[[index[r] for r in refs]]

    def texts(self, texts: Sequence[str], desc: str = "texts") -> torch.Tensor:
        unique = list(dict.fromkeys(texts))
        self.texts_read.update(dict.fromkeys(unique))
        table = self._cached("texts", unique, lambda: self._encode_texts(unique, desc))
        index = {t: i for i, t in enumerate(unique)}
        return table[[index[t] for t in texts]]

    # -- internals

    def _cached(self, kind: str, keys: list[str], compute) -> torch.Tensor:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{cache_key(self.identity, kind, keys)}.safetensors"
            if path.is_file():
                try:
                    table = load_file(str(path))["embeddings"]
                    if table.shape[0] == len(keys):
                        self.stats.cache_hits += len(keys)
                        return table
                except Exception:  # a truncated or foreign file: recompute and overwrite it
                    pass
        table = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file(
                {"embeddings": table.contiguous()}, str(tmp), metadata={"model": self.identity[:500], "kind": kind}
            )
            tmp.replace(path)
        return table

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
        return torch.cat(parts) if parts else torch.zeros(0, 0)

    def _encode_texts(self, texts: list[str], desc: str) -> torch.Tensor:
        t0, parts = time.perf_counter(), []
        for s in self._batches(len(texts), desc):
            chunk = texts[s : s + self.batch_size]
            parts.append(
                self._check(self.embedder.encode_texts(chunk, batch_size=self.batch_size), len(chunk), "texts")
            )
        self.stats.texts_encoded += len(texts)
        self.stats.seconds["texts"] += time.perf_counter() - t0
        return torch.cat(parts) if parts else torch.zeros(0, 0)
