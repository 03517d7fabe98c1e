"""One search of an index from the command line (`vladva search`): a text or image query, ranked
against the indexed images or against captions (a text file's lines, or the manifest captions the
index stores).

`search_index(index, embedder, ...)` returns a `SearchResult`; `to_json()` is what `--json` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vladva.data.items import read_text_lines
from vladva.embedder import Embedder
from vladva.errors import UserError
from vladva.serve.index import EmbeddingIndex, rank_texts

TARGETS = ("images", "captions")


@dataclass
class SearchResult:
    """`query`: `{"text": ...}` or `{"image": path}`. `results`: rows best first, with `rank`,
    `score` (cosine) and, for images, `id`, `path`, `captions`, `record_id` (the manifest or Karpathy
    id of the image; None for a folder source); for captions, `caption` and, when
    they came from the index, the `ids` of the images each describes. `source`: what captions were
    ranked (a file, or `INDEX captions`); None for images."""

    query: dict
    target: str
    results: list[dict] = field(default_factory=list)
    source: str | None = None

    def to_json(self) -> dict:
        return {"query": self.query, "target": self.target, "results": self.results}


def dimension_mismatch(dim: int, index: EmbeddingIndex, index_name: str) -> UserError:
    """The error for a model whose `dim`-wide vectors cannot be searched in `index`."""
    return UserError(
        f"model gives {dim}-dim vectors but {index_name} holds {index.meta.dim}-dim ones "
        f"(built with {index.meta.model!r})"
    )


def check_query(text: str | None, image: Path | None, target: str) -> None:
    """Refuse a query that is not exactly one of a text and an image, or an unknown target
    (before anything is loaded)."""
    if (text is None) == (image is None):
        raise UserError("give either a text QUERY or --image PATH (exactly one)")
    if target not in TARGETS:
        raise UserError(f"--target must be images or captions, got {target!r}")


def _caption_texts(index: EmbeddingIndex, captions_file: Path | None, index_name: str):
    """(texts to rank, where they came from, caption -> ids of the indexed images it describes or None)."""
    if captions_file is not None:
        if not captions_file.is_file():
            raise FileNotFoundError(f"{captions_file}: captions file not found")
        texts = [text for _, text in read_text_lines(captions_file)]
        return texts, str(captions_file), None
    owners: dict[str, list[int]] = {}  # a caption may describe several indexed images
    for entry_id, caption in index.captions:
        owners.setdefault(caption, []).append(entry_id)
    return sorted(owners), f"{index_name} captions", owners


def search_index(
    index: EmbeddingIndex,
    embedder: Embedder,
    text: str | None = None,
    image: Path | None = None,
    k: int = 5,
    target: str = "images",
    captions_file: Path | None = None,
    index_name: str = "the index",
) -> SearchResult:
    """Embed the query (exactly one of `text`, `image`) and rank the `k` best indexed images, or,
    with `target="captions"` (implied by `captions_file`), the `k` best captions: the lines of
    `captions_file`, else the captions stored in the index. `index_name` names the index in errors."""
    from vladva.data.images import load_image

    check_query(text, image, target)
    if captions_file is not None:
        target = "captions"
    if image is not None:
        vector = embedder.encode_images([load_image(image)])
    else:
        if not text.strip():
            raise UserError("the text query is empty")
        vector = embedder.encode_texts([text])
    if vector.shape[1] != index.meta.dim:
        raise dimension_mismatch(vector.shape[1], index, index_name)
    query = {"image": str(image)} if image is not None else {"text": text}

    if target == "captions":
        texts, source, owners = _caption_texts(index, captions_file, index_name)
        if not texts:
            raise UserError(
                f"no captions to rank in {source} (the index stores captions only when built from a manifest)"
            )
        ranked = rank_texts(vector[0].numpy(), texts, embedder.encode_texts(texts).numpy(), k)
        rows = [{"rank": r, "score": round(s, 6), "caption": t} for r, s, t in ranked]
        if owners is not None:  # index captions: say which images each one came from
            for row in rows:
                row["ids"] = owners[row["caption"]]
        return SearchResult(query, "captions", rows, source)

    hits = index.search(vector.numpy(), k)[0]
    rows = [
        {
            "rank": h.rank,
            "score": round(h.score, 6),
            "id": h.id,
            "path": h.path,
            "captions": h.captions,
            "record_id": h.record_id,
        }
        for h in hits
    ]
    return SearchResult(query, "images", rows)
