"""A FAISS embedding index of images, stored as a folder of versions beside its id → path map.

Layout of an index folder::

    INDEX_DIR/index.json            meta: model spec (a path relative to the index folder when the
                                    model lies on disk), dim, kind, count, FAISS parameters, times,
                                    and the committed `version` with the names of its two files
    INDEX_DIR/index-000003.faiss    FAISS index (inner product on L2-normalised vectors = cosine),
                                    wrapped in IndexIDMap2 so FAISS ids are our entry ids
    INDEX_DIR/ids-000003.json       {"entries": [{"id": 0, "path": "/abs/img.png", "captions": [...],
                                                  "record_id": "000017"}, ...]}

Crash safety: a save writes version N+1's two files (each to a temporary name, fsynced, renamed),
then replaces `index.json` (the commit point), then deletes versions older than N. `kill -9` or a
full disk at any instant leaves `index.json` naming either version N or N+1, both complete; a
reader that opened version N while N+1 was committed still finds N's files. Writers hold
`INDEX_DIR/.lock` (`writer_lock`), so two `vladva index add` never interleave. `LiveIndex` is the
reader side of a running service: it picks up a newly committed version.
Folders of format 1 (`index.faiss`, `ids.json`) still load, and are rewritten as versions on the next save.

The model spec's folders are stored relative to the index folder when they lie inside it and
absolute otherwise (`vladva.model_kinds.portable_spec`), so `vladva serve --index /abs/path` works
from any working folder; `load` resolves them again.

Kinds: ``flat`` (exact, the default), ``hnsw`` (graph, approximate, no training) and ``ivf``
(inverted lists, approximate, trained with k-means on the first vectors added).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vladva.errors import UserError
from vladva.model_kinds import portable_spec, resolve_spec
from vladva.storage import atomic_write, atomic_write_text, fsync_dir, pause_for_tests, writing

log = logging.getLogger(__name__)

META_FILE, LOCK_FILE = "index.json", ".lock"
LEGACY_FILES = {"index": "index.faiss", "ids": "ids.json"}  # format 1: one unversioned pair
FORMAT_VERSION = 2
READS_FORMATS = (1, 2)
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
    """index.json. `version` counts the saves; `files` names the committed version's files."""

    model: str
    dim: int
    config: IndexConfig
    count: int = 0
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION
    version: int = 0
    files: dict[str, str] = field(default_factory=dict)


def version_files(version: int) -> dict[str, str]:
    """The names of version `version`'s FAISS file and id map."""
    return {"index": f"index-{version:06d}.faiss", "ids": f"ids-{version:06d}.json"}


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
        """The committed version of the index folder `directory`."""
        d = Path(directory)
        meta = _read_meta(d)
        for _ in range(4):
            try:
                return cls._load_version(d, meta)
            except FileNotFoundError:
                # Two writers committed and removed this version while we read it: read the newest.
                newer = _read_meta(d)
                if newer.version == meta.version:
                    raise
                meta = newer
        return cls._load_version(d, meta)

    @classmethod
    def _load_version(cls, d: Path, meta: IndexMeta) -> EmbeddingIndex:
        import faiss

        files = meta.files or LEGACY_FILES
        ids_path, index_path = d / files["ids"], d / files["index"]
        for p in (ids_path, index_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: not found, but {d / META_FILE} names it; rebuild the index")
        try:
            entries = [IndexEntry(**e) for e in json.loads(ids_path.read_text(encoding="utf-8"))["entries"]]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise IndexFolderError(f"{ids_path}: bad id map ({type(e).__name__}: {e})") from None
        try:
            faiss_index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            raise IndexFolderError(f"{index_path}: not a readable FAISS index ({str(e).splitlines()[0]})") from None
        if faiss_index.d != meta.dim or faiss_index.ntotal != len(entries):
            raise IndexFolderError(
                f"{d}: {index_path.name} holds {faiss_index.ntotal} vectors of dim {faiss_index.d} but the meta says "
                f"{len(entries)} entries of dim {meta.dim}; rebuild the index"
            )
        _apply_search_params(faiss_index, meta.config)
        return cls(meta, faiss_index, entries)

    def save(self, directory: Path | str) -> Path:
        """Commit the index as the folder's next version (see the module docstring): new files,
        then `index.json`, then old versions removed. Call it holding `writer_lock(directory)`.
        A full disk raises `DiskFullError`; the folder then still holds the previous version."""
        import faiss

        d = Path(directory)
        if self.faiss_index is None:
            raise IndexFolderError("refusing to save an empty IVF index (it has no trained cells yet)")
        d.mkdir(parents=True, exist_ok=True)
        previous = _read_meta(d) if (d / META_FILE).is_file() else None
        version = max(self.meta.version, previous.version if previous else 0) + 1
        files = version_files(version)
        meta = IndexMeta(**{**asdict(self.meta), "config": self.meta.config})
        meta.count, meta.updated, meta.version, meta.files = len(self.entries), _now(), version, files
        meta.format_version = FORMAT_VERSION
        intact = (
            f"the index still holds version {previous.version} ({previous.count} images)"
            if previous
            else "no index was written"
        )
        try:
            with writing(f"index version {version}", d, intact):
                atomic_write(d / files["index"], lambda tmp: faiss.write_index(self.faiss_index, str(tmp)))
                pause_for_tests(d, "index-files", version)  # crash tests stop here
                ids = {"entries": [asdict(e) for e in self.entries]}
                atomic_write_text(d / files["ids"], json.dumps(ids, indent=1, ensure_ascii=False))
                pause_for_tests(d, "index-commit", version)
                stored = asdict(meta) | {"model": portable_spec(meta.model, d)}  # loads from any folder
                atomic_write_text(d / META_FILE, json.dumps(stored, indent=1, ensure_ascii=False))
        except BaseException:
            for name in files.values():  # not committed: index.json still names the previous version
                (d / name).unlink(missing_ok=True)
            raise
        self.meta = meta
        pause_for_tests(d, "index-cleanup", version)
        keep = set(files.values()) | set((previous.files or LEGACY_FILES).values() if previous else ())
        _remove_old_versions(d, keep)
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


def _read_meta(d: Path) -> IndexMeta:
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found; is {d} an index folder made by `vladva index build`?")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
        raw["config"] = IndexConfig(**raw["config"])
        meta = IndexMeta(**raw)
        meta.model = resolve_spec(meta.model, d)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise IndexFolderError(f"{meta_path}: bad index meta ({type(e).__name__}: {e})") from None
    if meta.format_version not in READS_FORMATS:
        raise IndexFolderError(f"{meta_path}: index format {meta.format_version}, this vladva reads {READS_FORMATS}")
    return meta


def _remove_old_versions(d: Path, keep: set[str]) -> None:
    """Delete version files not in `keep` and temporary files of writers that died (we hold the lock)."""
    stale = [
        *d.glob("index-*.faiss"),
        *d.glob("ids-*.json"),
        *(d / n for n in LEGACY_FILES.values()),
        *d.glob(".*.tmp"),
    ]
    for p in stale:
        if p.name not in keep and p.exists():
            p.unlink(missing_ok=True)
    fsync_dir(d)


@contextlib.contextmanager
def writer_lock(directory: Path | str) -> Iterator[None]:
    """Hold the index folder's writer lock (created if needed); a second writer gets a `UserError`
    at once instead of overwriting the first one's additions. The lock dies with its process."""
    import fcntl

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{d}: another vladva process is writing this index (vladva index build/add); "
                "wait for it to finish, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class LiveIndex:
    """The reader side of an index folder for a long-running service: `current` is the newest
    committed version this reader has loaded; `refresh()` loads a newer one after `vladva index
    add` commits it (a request keeps the version it started with). Without a folder it is static."""

    def __init__(self, directory: Path | str | None, index: EmbeddingIndex | None = None):
        self.directory = Path(directory) if directory is not None else None
        if index is None:
            if self.directory is None:
                raise ValueError("LiveIndex needs a folder or an index")
            index = EmbeddingIndex.load(self.directory)
        self.current = index
        self._stamp = self._meta_stamp()

    def __len__(self) -> int:
        return len(self.current)

    def _meta_stamp(self) -> tuple | None:
        if self.directory is None:
            return None
        try:
            st = os.stat(self.directory / META_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)  # a commit renames a new file over it

    def refresh(self) -> bool:
        """Load the folder's committed version if it changed since the last look; True when swapped.
        A version built with another model or dimension is refused (`IndexFolderError`)."""
        stamp = self._meta_stamp()
        if self.directory is None or stamp is None or stamp == self._stamp:
            return False
        new = EmbeddingIndex.load(self.directory)
        old = self.current.meta
        if (new.meta.model, new.meta.dim) != (old.model, old.dim):
            raise IndexFolderError(
                f"{self.directory}: the index now holds {new.meta.model!r} vectors of dim {new.meta.dim}, but this "
                f"service embeds with {old.model!r} (dim {old.dim}); restart the service"
            )
        self.current, self._stamp = new, stamp
        if new.meta.version != old.version:
            log.info("index %s: now serving version %d (%d images)", self.directory, new.meta.version, len(new))
        return True


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
