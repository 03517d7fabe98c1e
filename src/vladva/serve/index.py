"""A FAISS embedding index of images, stored as a folder beside its id → path map.

Layout of an index folder::

    INDEX_DIR/index.faiss   FAISS index (inner product on L2-normalised vectors = cosine),
                            wrapped in IndexIDMap2 so FAISS ids are our entry ids
    INDEX_DIR/ids.json      {"entries": [{"id": 0, "path": "/abs/img.png", "captions": [...],
                                          "record_id": "000017"}, ...]}
    INDEX_DIR/index.json    meta: model spec, dim, kind, count, FAISS parameters, times

The model spec's folders are stored relative to the index folder when they lie inside it and
absolute otherwise (`vladva.model_kinds.portable_spec`), so `vladva serve --index /abs/path` works
from any working folder; `load` resolves them again.

Kinds: ``flat`` (exact, the default), ``hnsw`` (graph, approximate, no training) and ``ivf``
(inverted lists, approximate, trained with k-means on the first vectors added).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vladva.model_kinds import portable_spec, resolve_spec

INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.json", "index.json"
FORMAT_VERSION = 1
KINDS = ("flat", "hnsw", "ivf")


class IndexFolderError(ValueError):
    """A bad or mismatched index folder; the message names the file."""


@dataclass
class IndexConfig:
    """How vectors are indexed. Exact `flat` search of 100k 64-dim vectors takes ~0.6 ms per query
    on one CPU core, so approximate kinds pay off only for millions of images."""

    kind: str = "flat"
    hnsw_m: int = 32  # graph neighbours per node
    hnsw_ef_search: int = 128  # candidates explored per query; higher = closer to exact
    ivf_nlist: int = 0  # k-means cells; 0 = automatic from the first batch (≈ 4·sqrt(n), ≥ 39 points per cell)
    ivf_nprobe: int = 0  # cells visited per query; 0 = automatic (1/8 of the cells)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for key in ("hnsw_m", "hnsw_ef_search"):
            if getattr(self, key) < 1:
                raise ValueError(f"index setting {key} must be >= 1, got {getattr(self, key)}")
        for key in ("ivf_nlist", "ivf_nprobe"):
            if getattr(self, key) < 0:
                raise ValueError(f"index setting {key} must be >= 0 (0 = automatic), got {getattr(self, key)}")


@dataclass
class IndexEntry:
    """One indexed image. `path` is absolute; `captions` and `record_id` (the manifest record's
    `id`, the Karpathy `imgid`) come from a manifest or Karpathy JSON source (else empty / None)."""

    id: int
    path: str
    captions: list[str] = field(default_factory=list)
    record_id: str | None = None


@dataclass
class SearchHit:
    """One result: `score` is the cosine similarity (inner product of L2-normalised vectors)."""

    rank: int
    score: float
    id: int
    path: str
    captions: list[str] = field(default_factory=list)
    record_id: str | None = None


@dataclass
class IndexMeta:
    model: str
    dim: int
    config: IndexConfig
    count: int = 0
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION


def auto_nlist(n: int) -> int:
    """IVF cells for `n` training vectors: about 4·sqrt(n), with at least 39 vectors per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _as_matrix(vectors, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != dim:
        raise IndexFolderError(
            f"expected vectors of shape (n, {dim}), got {tuple(x.shape)}; was the index built with another model?"
        )
    return x


class EmbeddingIndex:
    """Vectors in FAISS plus the entries they stand for. Create with `create`, open with `load`."""

    def __init__(self, meta: IndexMeta, faiss_index, entries: list[IndexEntry]):
        self.meta = meta
        self.faiss_index = faiss_index
        self.entries = entries
        self._by_id = {e.id: e for e in entries}
        self._by_path = {e.path: e for e in entries}

    # ---- construction and persistence -------------------------------------------------
    @classmethod
    def create(cls, model: str, dim: int, config: IndexConfig | None = None) -> EmbeddingIndex:
        """An empty index for `dim`-wide vectors from the model spec `model`. IVF is built on first add."""
        config = config or IndexConfig()
        now = _now()
        meta = IndexMeta(model=model, dim=dim, config=config, created=now, updated=now)
        return cls(meta, None if config.kind == "ivf" else _new_faiss_index(dim, config, 0), [])

    @classmethod
    def load(cls, directory: Path | str) -> EmbeddingIndex:
        import faiss

        d = Path(directory)
        meta_path, ids_path, index_path = d / META_FILE, d / IDS_FILE, d / INDEX_FILE
        for p in (meta_path, ids_path, index_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: not found; is {d} an index folder made by `vladva index build`?")
        try:
            raw = json.loads(meta_path.read_text())
            raw["config"] = IndexConfig(**raw["config"])
            meta = IndexMeta(**raw)
            meta.model = resolve_spec(meta.model, d)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise IndexFolderError(f"{meta_path}: bad index meta ({type(e).__name__}: {e})") from None
        if meta.format_version != FORMAT_VERSION:
            raise IndexFolderError(
                f"{meta_path}: index format {meta.format_version}, this vladva reads {FORMAT_VERSION}"
            )
        try:
            entries = [IndexEntry(**e) for e in json.loads(ids_path.read_text())["entries"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise IndexFolderError(f"{ids_path}: bad id map ({type(e).__name__}: {e})") from None
        faiss_index = faiss.read_index(str(index_path))
        if faiss_index.d != meta.dim or faiss_index.ntotal != len(entries):
            raise IndexFolderError(
                f"{d}: index.faiss holds {faiss_index.ntotal} vectors of dim {faiss_index.d} but the meta says "
                f"{len(entries)} entries of dim {meta.dim}; rebuild the index"
            )
        _apply_search_params(faiss_index, meta.config)
        return cls(meta, faiss_index, entries)

    def save(self, directory: Path | str) -> Path:
        """Write the three files atomically (each to a temporary name, then renamed)."""
        import faiss

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.meta.count = len(self.entries)
        self.meta.updated = _now()
        if self.faiss_index is None:
            raise IndexFolderError("refusing to save an empty IVF index (it has no trained cells yet)")
        tmp = d / (INDEX_FILE + ".tmp")
        faiss.write_index(self.faiss_index, str(tmp))
        os.replace(tmp, d / INDEX_FILE)
        _write_json(d / IDS_FILE, {"entries": [asdict(e) for e in self.entries]})
        _write_json(d / META_FILE, asdict(self.meta) | {"model": portable_spec(self.meta.model, d)})
        return d

    # ---- contents ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def contains_path(self, path: str | Path) -> bool:
        return str(Path(path).resolve()) in self._by_path

    def entry(self, entry_id: int) -> IndexEntry | None:
        return self._by_id.get(entry_id)

    @property
    def captions(self) -> list[tuple[int, str]]:
        """Every stored caption as `(entry id, caption)`, in entry order."""
        return [(e.id, c) for e in self.entries for c in e.captions]

    def add(
        self,
        vectors,
        paths: list[str | Path],
        captions: list[list[str]] | None = None,
        record_ids: list[str | None] | None = None,
    ) -> list[int]:
        """Add `(n, dim)` L2-normalised vectors for images at `paths` (with their source captions and
        record ids, if any); returns the new ids. Paths already in the index are refused (call
        `contains_path` first)."""
        x = _as_matrix(vectors, self.meta.dim)
        if len(x) != len(paths):
            raise ValueError(f"{len(x)} vectors for {len(paths)} paths")
        captions = captions if captions is not None else [[] for _ in paths]
        record_ids = record_ids if record_ids is not None else [None for _ in paths]
        resolved = [str(Path(p).resolve()) for p in paths]
        dup = [p for p in resolved if p in self._by_path]
        if dup or len(set(resolved)) != len(resolved):
            raise ValueError(f"already indexed or repeated: {(dup or resolved)[0]}")
        if len(x) == 0:
            return []
        if self.faiss_index is None:  # IVF: the first vectors added train the cells
            self.faiss_index = _new_faiss_index(self.meta.dim, self.meta.config, len(x))
            self.faiss_index.train(x)
            _apply_search_params(self.faiss_index, self.meta.config)
        start = max(self._by_id, default=-1) + 1
        ids = list(range(start, start + len(x)))
        self.faiss_index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
        for i, p, c, r in zip(ids, resolved, captions, record_ids):
            e = IndexEntry(i, p, list(c), None if r is None else str(r))
            self.entries.append(e)
            self._by_id[i] = e
            self._by_path[p] = e
        return ids

    def search(self, queries, k: int = 5) -> list[list[SearchHit]]:
        """Top-`k` entries for each row of `queries` `(n, dim)`, best first."""
        q = _as_matrix(queries, self.meta.dim)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not self.entries:
            return [[] for _ in range(len(q))]
        scores, ids = self.faiss_index.search(q, min(k, len(self.entries)))
        out = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for s, i in zip(row_scores, row_ids):
                if i < 0:  # approximate kinds may return fewer than k
                    continue
                e = self._by_id[int(i)]
                hits.append(SearchHit(len(hits) + 1, float(s), e.id, e.path, list(e.captions), e.record_id))
            out.append(hits)
        return out


def rank_texts(query, texts: list[str], text_vectors, k: int = 5) -> list[tuple[int, float, str]]:
    """Rank `texts` by cosine similarity to one `(dim,)` query vector; `(rank, score, text)`, best first."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    t = np.asarray(text_vectors, dtype=np.float32)
    scores = t @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [(r + 1, float(scores[i]), texts[i]) for r, i in enumerate(order)]


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def _new_faiss_index(dim: int, config: IndexConfig, n_train: int):
    import faiss

    if config.kind == "flat":
        spec = "IDMap2,Flat"
    elif config.kind == "hnsw":
        spec = f"IDMap2,HNSW{config.hnsw_m}"
    else:
        # The automatic choices are written back so index.json records what was used.
        config.ivf_nlist = min(config.ivf_nlist or auto_nlist(n_train), n_train)
        config.ivf_nprobe = min(config.ivf_nprobe or max(1, config.ivf_nlist // 8), config.ivf_nlist)
        spec = f"IDMap2,IVF{config.ivf_nlist},Flat"
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    _apply_search_params(index, config)
    return index


def _apply_search_params(index, config: IndexConfig) -> None:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if config.kind == "hnsw":
        inner.hnsw.efSearch = config.hnsw_ef_search
    elif config.kind == "ivf":
        inner.nprobe = config.ivf_nprobe
