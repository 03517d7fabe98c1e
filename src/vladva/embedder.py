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
