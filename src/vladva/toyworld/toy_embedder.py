"""A tiny deterministic embedder over the shapes world, for tests, demos and the web page.

Images become a histogram of the eight scene colours (share of object pixels nearest each
colour); texts become a bag of colour words. Both live in the same 9-dim space (the ninth
dimension is a small constant so a text without colour words still has a direction), so the
query "red" really finds the images with red objects. Spec: ``toy:colours``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vladva.data.images import load_image
from vladva.embedder import ImageInput, as_image_list, as_text_list
from vladva.model_kinds import ModelSpecError, register_model_kind
from vladva.toyworld.scene import COLOURS

TOY_SPEC = "toy:colours"
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (8, 3)
_PALETTE /= _PALETTE.max(axis=1, keepdims=True)  # compare hues, not brightness
_BIAS = 0.05  # the constant ninth component, small next to any real colour evidence
_BACKGROUND_MAX = 40  # pixels whose brightest channel is below this are background


def _normalise(x: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.nn.functional.normalize(x, dim=-1)


class ColourHistogramEmbedder:
    """Implements `vladva.embedder.Embedder` with colour histograms; 9-dim output."""

    name = TOY_SPEC
    dim = len(COLOURS) + 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (kind, batch size) per encode call, for tests

    def _image_vector(self, image: ImageInput) -> np.ndarray:
        im = load_image(image) if not hasattr(image, "convert") else image.convert("RGB")
        px = np.asarray(im, dtype=np.float32).reshape(-1, 3)
        bright = px.max(axis=1)
        keep = bright >= _BACKGROUND_MAX
        px, bright = px[keep], bright[keep]
        v = np.zeros(self.dim, dtype=np.float32)
        if len(px):
            # Edge pixels are colours blended with the black background: dividing by the
            # brightest channel restores the hue, and weighting by brightness counts coverage.
            hue = px / bright[:, None]
            nearest = ((hue[:, None, :] - _PALETTE[None]) ** 2).sum(-1).argmin(axis=1)
            v[: len(COLOURS)] = np.bincount(nearest, weights=bright, minlength=len(COLOURS)) / bright.sum()
        v[-1] = _BIAS
        return v

    def _text_vector(self, text: str) -> np.ndarray:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        v = np.zeros(self.dim, dtype=np.float32)
        for i, colour in enumerate(COLOURS):
            v[i] = words.count(colour)
        v[-1] = _BIAS
        return v

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 32, show_progress: bool = False
    ) -> torch.Tensor:
        """`(len(images), 9)` float32, L2-normalised rows; one image or path is one item."""
        images = as_image_list(images)
        self.calls.append(("image", len(images)))
        return _normalise(np.stack([self._image_vector(im) for im in images]) if images else np.zeros((0, self.dim)))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """`(len(texts), 9)` float32, L2-normalised rows; one string is one text."""
        texts = as_text_list(texts)
        self.calls.append(("text", len(texts)))
        return _normalise(np.stack([self._text_vector(t) for t in texts]) if texts else np.zeros((0, self.dim)))


def _toy_kind(palette: str) -> ColourHistogramEmbedder:
    if palette != TOY_SPEC.partition(":")[2]:
        raise ModelSpecError(f"expected {TOY_SPEC}")
    return ColourHistogramEmbedder()


register_model_kind("toy", _toy_kind, "the colour-histogram toy embedder", usage=TOY_SPEC)
