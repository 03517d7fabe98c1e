"""Synthetic compositional scenes: objects with shape, colour, size and position.

A `Scene` is the ground truth behind every caption of the embedded default data set: captions are
generated from it and negatives are verified false against it. Rendering draws at 4x resolution
and box-downsamples, so small shapes keep recognisable outlines at 32 px.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 230, 40),
    "purple": (150, 60, 220),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "pink": (250, 130, 200),
}
SIZES: dict[str, float] = {"small": 4.0, "large": 6.5}  # radius in pixels at image_size 32
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    """One object. `x`, `y` are the centre in pixels (y grows downwards), `size` a key of SIZES."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    def phrase(self, with_size: bool = False) -> str:
        """Noun phrase such as "red circle" or "small red circle"."""
        words = ([self.size] if with_size else []) + [self.colour, self.shape]
        return " ".join(words)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    image_size: int = 32

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(SceneObject(**o) for o in d["objects"]), int(d.get("image_size", 32)))

    def find(self, shape: str | None = None, colour: str | None = None) -> list[SceneObject]:
        return [
            o for o in self.objects if (shape is None or o.shape == shape) and (colour is None or o.colour == colour)
        ]

    def largest(self) -> SceneObject:
        return max(self.objects, key=lambda o: (o.radius, -self.objects.index(o)))


@dataclass
class SceneConfig:
    """How scenes are sampled. Defaults give the calibrated 32-px world (see docs/data.md)."""

    image_size: int = 32
    min_objects: int = 2
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    # Centres at least this far apart (pixels, at image_size 32), so objects never overlap much.
    min_gap: float = 2.0
    unique_shapes: bool = True
    unique_colours: bool = True
    extra: dict = field(default_factory=dict)


def _scale(cfg_or_size: SceneConfig | int) -> float:
    size = cfg_or_size.image_size if isinstance(cfg_or_size, SceneConfig) else cfg_or_size
    return size / 32.0


def sample_scene(rng: random.Random, cfg: SceneConfig) -> Scene:
    """Draw a scene with non-overlapping objects; shapes/colours unique within it when configured."""
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    shapes = rng.sample(list(cfg.shapes), n) if cfg.unique_shapes else [rng.choice(cfg.shapes) for _ in range(n)]
    colours = rng.sample(list(cfg.colours), n) if cfg.unique_colours else [rng.choice(cfg.colours) for _ in range(n)]
    s = _scale(cfg)
    for _ in range(1000):
        objs: list[SceneObject] = []
        ok = True
        for shape, colour in zip(shapes, colours):
            size = rng.choice(cfg.sizes)
            r = SIZES[size] * s
            placed = False
            for _ in range(100):
                x = rng.uniform(r + 1, cfg.image_size - r - 1)
                y = rng.uniform(r + 1, cfg.image_size - r - 1)
                if all(math.hypot(x - o.x, y - o.y) >= r + o.radius * s + cfg.min_gap * s for o in objs):
                    objs.append(SceneObject(shape, colour, size, round(x, 2), round(y, 2)))
                    placed = True
                    break
            if not placed:
                ok = False
                break
        if ok:
            return Scene(tuple(objs), cfg.image_size)
    raise RuntimeError(f"could not place {n} objects in a {cfg.image_size}px image; lower max_objects or sizes")


def _draw_object(draw: ImageDraw.ImageDraw, o: SceneObject, scale: float, fill) -> None:
    k = _SUPERSAMPLE
    cx, cy, r = o.x * k, o.y * k, o.radius * scale * k
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        h = r * 0.85
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.8), (cx + r * 0.95, cy + r * 0.8)], fill=fill)
    elif o.shape == "cross":
        t = r * 0.36
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif o.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif o.shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def render_scene(scene: Scene) -> Image.Image:
    """RGB image of `scene` on a black background, `(image_size, image_size)`."""
    k = _SUPERSAMPLE
    big = Image.new("RGB", (scene.image_size * k, scene.image_size * k), (0, 0, 0))
    draw = ImageDraw.Draw(big)
    for o in scene.objects:
        _draw_object(draw, o, _scale(scene.image_size), COLOURS[o.colour])
    return big.resize((scene.image_size, scene.image_size), Image.Resampling.BOX)


def object_masks(scene: Scene) -> np.ndarray:
    """Coverage of each object per pixel, `(n_objects, H, W)` floats in [0, 1]."""
    k = _SUPERSAMPLE
    out = np.zeros((len(scene.objects), scene.image_size, scene.image_size), dtype=np.float32)
    for i, o in enumerate(scene.objects):
        m = Image.new("L", (scene.image_size * k, scene.image_size * k), 0)
        _draw_object(ImageDraw.Draw(m), o, _scale(scene.image_size), 255)
        out[i] = (
            np.asarray(m.resize((scene.image_size, scene.image_size), Image.Resampling.BOX), dtype=np.float32) / 255.0
        )
    return out


def patch_labels(scene: Scene, patch_size: int, shapes=SHAPES, colours=tuple(COLOURS)) -> tuple[np.ndarray, np.ndarray]:
    """Dense labels for vision pretraining: per patch, the shape and colour index of the object
    covering most of it, or -1 for background. Returns two `(grid*grid,)` int arrays, row-major."""
    masks = object_masks(scene)
    g = scene.image_size // patch_size
    cover = (
        masks.reshape(len(scene.objects), g, patch_size, g, patch_size).sum(axis=(2, 4)).reshape(len(scene.objects), -1)
    )
    best = cover.argmax(axis=0)
    has = cover.max(axis=0) >= 0.1 * patch_size * patch_size
    shape_ids = np.array([shapes.index(o.shape) for o in scene.objects])
    colour_ids = np.array([colours.index(o.colour) for o in scene.objects])
    return np.where(has, shape_ids[best], -1), np.where(has, colour_ids[best], -1)
