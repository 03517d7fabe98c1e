"""Filling an index: list the images of a folder, JSONL manifest or Karpathy JSON, embed the
readable ones, add them (with the captions and record ids of a manifest or Karpathy JSON).

Unreadable images (missing, empty, corrupt, too large) are skipped and listed in the report,
never fatal; images already in the index are skipped, so `add_images` is incremental.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vladva.data.images import IMAGE_SUFFIXES, find_images
from vladva.embedder import Embedder
from vladva.serve.index import EmbeddingIndex, IndexConfig, writer_lock


@dataclass
class ImageSource:
    """One image to index, its captions and record id (from a manifest or Karpathy JSON; empty and
    None for a folder)."""

    path: Path
    captions: list[str] = field(default_factory=list)
    record_id: str | None = None


@dataclass
class AddReport:
    """What one build/add did: new ids, skipped `(path or file:line, reason)`, images already indexed."""

    added: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    already_indexed: int = 0

    def summary(self) -> str:
        s = f"{len(self.added)} images added, {self.already_indexed} already indexed, {len(self.skipped)} skipped"
        if self.skipped:
            s += "; first skipped: " + "; ".join(f"{p}: {why}" for p, why in self.skipped[:3])
        return s


def list_images(
    source: Path | str, skipped: list[tuple[str, str]] | None = None, split: str = "test"
) -> list[ImageSource]:
    """Images under a folder (recursive, sorted, by suffix), in a JSONL manifest (bad lines go to
    `skipped` as `("file:line", reason)`), or in a Karpathy-split JSON (COCO / Flickr30k
    `dataset_*.json`: the images of `split`, read as `vladva eval` reads them, so a missing image
    is an error). Manifest and Karpathy sources carry each image's captions and record id."""
    from vladva.data.manifest import read_manifest

    source = Path(source)
    if source.is_dir():
        return [ImageSource(p.resolve()) for p in find_images(source)]
    if source.is_file() and source.suffix == ".jsonl":
        records, report = read_manifest(source, strict=False)
        if skipped is not None:
            skipped.extend((f"{source}:{line}", why) for line, why in report.skipped)
        return [ImageSource(r.image.resolve(), list(r.captions), r.id) for r in records]
    if source.is_file() and source.suffix == ".json":
        return _karpathy_images(source, split)
    if source.is_file():
        raise ValueError(f"{source}: expected a folder of images, a .jsonl manifest or a Karpathy .json")
    raise FileNotFoundError(f"{source}: no such folder or manifest")


def _karpathy_images(path: Path, split: str) -> list[ImageSource]:
    from vladva.eval.benchmarks.retrieval import load_karpathy

    rs = load_karpathy(path, split=split)
    captions: list[list[str]] = [[] for _ in rs.images]
    for caption, i in zip(rs.captions, rs.caption_image):
        captions[i].append(caption)
    return [
        ImageSource(ref.path.resolve(), caps, record_id)
        for ref, caps, record_id in zip(rs.images, captions, rs.image_ids)
    ]


def add_images(
    index: EmbeddingIndex,
    embedder: Embedder,
    sources: list[ImageSource],
    batch_size: int = 32,
    show_progress: bool = False,
    report: AddReport | None = None,
) -> AddReport:
    """Embed the images not yet in `index` and add them, `batch_size` images per model call."""
    from tqdm.auto import tqdm

    from vladva.data.images import ImageLoadError, load_image

    report = report or AddReport()
    seen: set[str] = set()
    todo = []
    for s in sources:
        key = str(s.path)
        if index.contains_path(s.path) or key in seen:
            report.already_indexed += 1
            continue
        seen.add(key)
        todo.append(s)
    if not todo:
        return report
    pending_vectors, pending_paths, pending_captions, pending_ids = [], [], [], []
    with tqdm(total=len(todo), desc="embedding images", unit="img", disable=not show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for s in todo[start : start + batch_size]:
                try:
                    images.append(load_image(s.path))
                    batch.append(s)
                except ImageLoadError as e:
                    report.skipped.append((str(s.path), str(e).removeprefix(f"{s.path}: ")))
            if images:
                vectors = embedder.encode_images(images, batch_size=batch_size).numpy()
                pending_vectors.extend(vectors)
                pending_paths.extend(s.path for s in batch)
                pending_captions.extend(s.captions for s in batch)
                pending_ids.extend(s.record_id for s in batch)
            bar.update(len(todo[start : start + batch_size]))
    if pending_vectors:
        # One add at the end: an IVF index trains its cells on everything in the first add.
        report.added = index.add(pending_vectors, pending_paths, pending_captions, pending_ids)
    return report


def build_index(
    embedder: Embedder,
    model_spec: str,
    images: Path | str,
    out_dir: Path | str,
    config: IndexConfig | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    split: str = "test",
) -> tuple[EmbeddingIndex, AddReport]:
    """Embed every readable image of a folder, manifest or Karpathy JSON (its `split`) into a new
    index saved at `out_dir`."""
    from vladva.serve.index import META_FILE
    from vladva.serve.models import embedding_dim

    out_dir = Path(out_dir)
    if (out_dir / META_FILE).exists():
        raise ValueError(f"{out_dir}: already holds an index; use `vladva index add` or another --out")
    report = AddReport()
    sources = list_images(images, report.skipped, split)
    if not sources:
        raise ValueError(f"{images}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    index = EmbeddingIndex.create(model_spec, embedding_dim(embedder), config)
    add_images(index, embedder, sources, batch_size, show_progress, report)
    if not index.entries:
        raise ValueError(f"{images}: none of the {len(sources)} images could be read; first: {report.skipped[0]}")
    with writer_lock(out_dir):
        if (out_dir / META_FILE).exists():  # another build finished first while we embedded
            raise ValueError(f"{out_dir}: already holds an index; use `vladva index add` or another --out")
        index.save(out_dir)
    return index, report


def update_index(
    index_dir: Path | str,
    embedder: Embedder,
    images: Path | str,
    batch_size: int = 32,
    show_progress: bool = False,
    split: str = "test",
) -> tuple[EmbeddingIndex, AddReport]:
    """Add the images of a folder, manifest or Karpathy JSON that `index_dir` does not hold yet, and commit the
    result as the index's next version. Holds the folder's writer lock throughout, so a concurrent
    add is refused rather than lost; readers (a running service) keep the previous version until
    the commit."""
    with writer_lock(index_dir):
        index = EmbeddingIndex.load(index_dir)
        report = AddReport()
        sources = list_images(images, report.skipped, split)
        add_images(index, embedder, sources, batch_size, show_progress, report)
        if report.added:
            index.save(index_dir)
    return index, report
