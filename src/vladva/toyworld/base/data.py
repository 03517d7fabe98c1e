"""Training data for the base models, held in memory: the manifest's records, their images as one
uint8 tensor, and their scenes (from `meta.scene`) for the vision tower's dense labels.

The shapes world is small (40k 32-px images are ~120 MB as uint8), so every stage samples
batches straight from memory instead of decoding PNGs per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vladva.data.images import load_image
from vladva.data.manifest import Record, read_manifest
from vladva.toyworld.scene import SIZES, Scene

# Normalisation for black-background scenes: most pixels are 0, objects are bright and saturated.
IMAGE_MEAN: tuple[float, float, float] = (0.08, 0.08, 0.08)
IMAGE_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)


@dataclass
class SceneVocab:
    """The attribute words of the world, in label order (indices are the vision heads' classes)."""

    shapes: list[str]
    colours: list[str]
    sizes: list[str] = field(default_factory=lambda: list(SIZES))

    @classmethod
    def from_scenes(cls, scenes: list[Scene | None]) -> SceneVocab:
        shapes, colours, sizes = set(), set(), set(SIZES)
        for s in scenes:
            if s is None:
                continue
            for o in s.objects:
                shapes.add(o.shape)
                colours.add(o.colour)
                sizes.add(o.size)
        return cls(sorted(shapes), sorted(colours), sorted(sizes))

    def to_dict(self) -> dict:
        return {"shapes": self.shapes, "colours": self.colours, "sizes": self.sizes}


@dataclass
class Split:
    """One manifest in memory. `images`: `(n, 3, H, W)` uint8; `scenes[i]` is None without meta."""

    path: Path
    records: list[Record]
    images: torch.Tensor
    scenes: list[Scene | None]

    def __len__(self) -> int:
        return len(self.records)

    def require_scenes(self, what: str) -> None:
        """Raise naming the first record without `meta.scene` (needed for dense vision labels)."""
        for i, s in enumerate(self.scenes):
            if s is None:
                raise ValueError(
                    f"{self.path}:{i + 1}: record {self.records[i].id!r} has no meta.scene, which {what} needs "
                    "(generate data with `vladva data shapes`)"
                )


def load_split(manifest: Path | str, max_records: int = 0, image_size: int = 32) -> Split:
    """Read a JSONL manifest and all its images (resized to `image_size` if needed)."""
    manifest = Path(manifest)
    records, _ = read_manifest(manifest)
    if max_records > 0:
        records = records[:max_records]
    if not records:
        raise ValueError(f"{manifest}: no records")
    images = np.zeros((len(records), image_size, image_size, 3), dtype=np.uint8)
    scenes: list[Scene | None] = []
    for i, r in enumerate(records):
        im = load_image(r.image)
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size))
        images[i] = np.asarray(im)
        scene = r.meta.get("scene") if isinstance(r.meta, dict) else None
        try:
            scenes.append(Scene.from_dict(scene) if scene else None)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{manifest}:{i + 1}: bad meta.scene ({type(e).__name__}: {e})") from None
    return Split(manifest, records, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), scenes)


def to_pixel_values(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 `(n, 3, H, W)` -> normalised float32 `(n, 3, H, W)`, exactly as the saved image processor does."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def make_image_processor(image_size: int = 32):
    """The `CLIPImageProcessor` saved with every base model: no-op resize/crop at `image_size`, then
    the normalisation of `to_pixel_values`."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
