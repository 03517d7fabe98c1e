"""Model specs to embedders for the index, search and service.

Every spec (``toy:colours``, ``vladva:BASE[:WEIGHTS]``, ``zeroshot:BASE``, ``clip:DIR``, ...) goes
through the model-kind registry (`vladva.model_kinds`), so the serving code never depends on a
model class.
"""

from __future__ import annotations

from vladva.embedder import Embedder
from vladva.errors import UserError


def load_embedder(spec: str) -> Embedder:
    """Build the embedder named by `spec`. Raises `UserError` when the spec cannot be resolved."""
    from vladva.model_kinds import ModelSpecError
    from vladva.model_kinds import load_embedder as build

    try:
        return build(spec)
    except ModelSpecError as e:
        raise UserError(str(e)) from None


def embedding_dim(embedder: Embedder) -> int:
    """The embedder's output width, read from a `dim` attribute or by encoding one short text."""
    dim = getattr(embedder, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return int(embedder.encode_texts(["a photo"]).shape[1])
