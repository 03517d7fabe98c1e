"""Model specs to embedders for the index, search and service.

``toy:colours`` is the built-in colour-histogram embedder; every other spec
(``vladva:BASE[:ADAPTER]``, ``zeroshot:BASE``, ``clip:DIR``) goes to
`vladva.eval.models.load_embedder`, so the serving code never depends on a model class.
"""

from __future__ import annotations

import importlib

from vladva.embedder import Embedder
from vladva.errors import UserError
from vladva.toyworld.toy_embedder import TOY_SPEC, ColourHistogramEmbedder


def load_embedder(spec: str) -> Embedder:
    """Build the embedder named by `spec`. Raises `UserError` when the spec cannot be resolved."""
    if spec == TOY_SPEC:
        return ColourHistogramEmbedder()
    try:
        models = importlib.import_module("vladva.eval.models")
    except ModuleNotFoundError as e:
        raise UserError(f"model spec {spec!r} needs vladva.eval.models, which is not available ({e})") from None
    return models.load_embedder(spec)


def embedding_dim(embedder: Embedder) -> int:
    """The embedder's output width, read from a `dim` attribute or by encoding one short text."""
    dim = getattr(embedder, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return int(embedder.encode_texts(["a photo"]).shape[1])
