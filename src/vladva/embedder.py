"""What every model that the evaluation harness, the index and the service can use provides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

ImageInput = Image.Image | str | Path


@runtime_checkable
class Embedder(Protocol):
    """A dual encoder: images and texts to L2-normalised vectors in one space."""

    name: str

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 32, show_progress: bool = False
    ) -> torch.Tensor:
        """`(len(images), dim)` float32, L2-normalised rows, on CPU."""
        ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """`(len(texts), dim)` float32, L2-normalised rows, on CPU."""
        ...


@runtime_checkable
class StagedEmbedder(Embedder, Protocol):
    """An `Embedder` that also shows what its towers hold before the embedding, for linear probes
    (`vladva eval --suite binding`). Optional: only benchmarks that look inside a model ask for it,
    and they fall back to the final embedding when a model does not implement it."""

    def hidden_stages(
        self, images: Sequence[ImageInput] | None = None, texts: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """One tower's intermediate features for `images` or `texts` (exactly one of them): stage
        name -> `(n, dim)` float32 on CPU, not normalised, ordered from the input side towards the
        embedding. A name ending in `.mean` is a side reading of the stage without that suffix
        (its mean over positions, where the model itself pools another position). It may end with
        `embedding`: the model's own L2-normalised embedding of the same inputs, as `encode_*`
        returns it, which spares the caller a second pass."""
        ...
