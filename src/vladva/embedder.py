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


def as_text_list(texts: str | Sequence[str]) -> list[str]:
    """`texts` as a list: one string is one text (not one text per character). Raises `TypeError`
    naming the first item that is not a string."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, Image.Image, Path)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts: expected a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected a string, got {type(t).__name__}")
    return out


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """`images` as a list: one PIL image or one path (str or Path) is one image. Raises `TypeError`
    for a tensor (the model's processor prepares pixels itself) or any other type."""
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, torch.Tensor):
        raise TypeError(
            "images: expected PIL images or image paths, got a tensor; the model's own processor resizes "
            "and normalises images, so pass the images themselves"
        )
    if not isinstance(images, Sequence):
        raise TypeError(f"images: expected a PIL image, a path or a list of them, got {type(images).__name__}")
    out = list(images)
    for i, im in enumerate(out):
        if not isinstance(im, (str, Path, Image.Image)):
            raise TypeError(f"images[{i}]: expected a PIL image or a path, got {type(im).__name__}")
    return out


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
