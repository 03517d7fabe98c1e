"""The shapes world that every split of the data set draws from.

A `World` says which scenes exist and how training captions are drawn; `ShapesDataConfig` says
what `vladva data shapes` writes. Each item draws from its own random generator seeded by
`(seed, split, index)` (`item_rng`), so splits never share seeds, a run is reproducible byte for
byte, and an item does not depend on how many came before it. Also here: the true claims and
short captions of a scene, which training records, negatives and evaluation splits all start
from, and the two file helpers every split writer uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vladva.toyworld.captions import (
    SHORT_MAX_TOKENS,
    Claim,
    ObjectRef,
    Relation,
    claim_holds,
    count_tokens,
    from_object,
    random_style,
    render_claim,
    true_relations,
)
from vladva.toyworld.scene import Scene, SceneConfig, SceneObject, sample_scene

# The splits written as training manifests; they never show a held-out colour-shape combination.
TRAIN_SPLITS = ("train", "val")

# Hard world: 8 of the 32 colour-shape combinations never appear in training. Each shape loses
# two colours and each colour one shape, so every word is still seen in training, only not together.
HARD_HELDOUT: tuple[tuple[str, str], ...] = (
    ("red", "square"),
    ("green", "circle"),
    ("blue", "triangle"),
    ("yellow", "cross"),
    ("purple", "square"),
    ("orange", "circle"),
    ("white", "triangle"),
    ("pink", "cross"),
)


@dataclass(frozen=True)
class World:
    """How scenes and training captions are drawn.

    `partial_captions`: training short captions name one or two objects only (never all, never
    a count). `heldout`: (colour, shape) pairs absent from train/val; in evaluation splits a scene
    contains at least one of them with probability `heldout_eval_fraction`."""

    name: str
    min_objects: int
    max_objects: int
    partial_captions: bool = False
    heldout: tuple[tuple[str, str], ...] = ()
    heldout_eval_fraction: float = 0.0

    def scene_config(self, image_size: int = 32) -> SceneConfig:
        return SceneConfig(image_size=image_size, min_objects=self.min_objects, max_objects=self.max_objects)


WORLDS: dict[str, World] = {
    "default": World("default", 2, 3),
    "hard": World("hard", 3, 4, partial_captions=True, heldout=HARD_HELDOUT),
}


@dataclass
class ShapesDataConfig:
    """What `vladva data shapes` writes. Counts are per split (SugarCrepe: per category, zero-shot:
    per task). `relation_threshold_px`: centres must differ by this much (at 32 px) before
    left/right/above/below is stated."""

    seed: int = 0
    world: Literal["default", "hard"] = "default"
    n_train: int = 20000
    n_val: int = 500
    n_retrieval: int = 1000
    captions_per_image: int = 5
    n_sugarcrepe: int = 500
    n_winoground: int = 200
    n_aro: int = 500
    n_zeroshot: int = 500
    max_short_captions: int = 3
    n_instructions: int = 8
    relation_threshold_px: float = 4.0
    image_size: int = 32
    # Hard-negative captions per train/val record (manifest key negative_captions; 0: none):
    # swap-attribute, swap-object and replace-relation edits of a true two-object claim, each
    # verified false for the scene. Drawn from their own seed namespace, so the rest of a record
    # does not depend on this setting.
    n_train_negatives: int = 2
    # Minimal-edit negatives of each train/val caption (manifest key caption_negatives; 0: none):
    # the caption's own words with attributes or shapes swapped or the relation replaced.
    n_caption_negatives: int = 2
    # The paraphrase split (DATA/paraphrase/: retrieval, SugarCrepe and Winoground with the sizes
    # above, in words no training caption uses; own images and seed namespaces, so nothing else
    # changes with this setting). `paraphrase_tokenizer`: the tokenizer whose unknown-token rate
    # on it the summary reports ("default": the shipped base LVLM's; a model folder; "": none).
    paraphrase: bool = True
    paraphrase_tokenizer: str = "default"
    # Binding diagnostic (binding/, `vladva eval --suite binding`): two-object scenes, each with its
    # colour-swapped twin, and captions of both in the training captions' forms. 0: no folder.
    n_binding: int = 400
    n_binding_captions: int = 2

    def validate(self) -> None:
        for name in (
            "n_train",
            "n_val",
            "n_retrieval",
            "n_sugarcrepe",
            "n_winoground",
            "n_aro",
            "n_zeroshot",
            "n_train_negatives",
            "n_caption_negatives",
            "n_binding",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {self.n_train}")
        if self.n_binding == 1:
            raise ValueError("n_binding must be 0 (no binding split) or >= 2 (items are paired with another item)")
        for name in ("captions_per_image", "max_short_captions", "n_instructions", "n_binding_captions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.relation_threshold_px <= 0:
            raise ValueError(f"relation_threshold_px must be > 0, got {self.relation_threshold_px}")
        if self.image_size != 32:
            raise ValueError(f"image_size: only the calibrated 32 px world is supported, got {self.image_size}")


def item_rng(seed: int, split: str, index: int) -> random.Random:
    """The generator of one item. String seeds are hashed with SHA-512 by `random`, so this is
    stable across processes and Python runs, and distinct splits never share a seed."""
    return random.Random(f"vladva-shapes/{seed}/{split}/{index}")


def has_heldout(scene: Scene, world: World) -> bool:
    return any((o.colour, o.shape) in world.heldout for o in scene.objects)


def sample_world_scene(rng: random.Random, world: World, split: str, image_size: int = 32, accept=None) -> Scene:
    """A scene of `world` for `split`: never a held-out combination in train/val; in evaluation
    splits, at least one with probability `world.heldout_eval_fraction`. `accept(scene)` may
    reject scenes a split cannot use (e.g. zero-shot classes)."""
    cfg = world.scene_config(image_size)
    want_heldout = split not in TRAIN_SPLITS and world.heldout and rng.random() < world.heldout_eval_fraction
    for _ in range(20000):
        scene = sample_scene(rng, cfg)
        held = has_heldout(scene, world)
        if split in TRAIN_SPLITS and held:
            continue
        if want_heldout and not held:
            continue
        if accept is not None and not accept(scene):
            continue
        return scene
    raise RuntimeError(f"could not sample a {world.name}-world scene for split {split!r}")


# ----------------------------------------------------------------------------- claims and short captions


def _pick_ref(
    o: SceneObject, rng: random.Random, p_size: float = 0.35, p_colour: float = 0.85, p_shape: float = 0.9
) -> ObjectRef:
    shape, colour = rng.random() < p_shape, rng.random() < p_colour
    if not (shape or colour):
        shape = True
    return from_object(o, size=rng.random() < p_size, colour=colour, shape=shape)


def relation_pairs(scene: Scene, threshold: float) -> list[tuple[int, str, int]]:
    """Every (i, relation, j) that certainly holds in the scene."""
    out = []
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i != j:
                out += [(i, r, j) for r in true_relations(a, b, threshold, scene.image_size)]
    return out


def pair_claim(scene: Scene, rng: random.Random, threshold: float, full: bool = False) -> Claim:
    """ "a red circle left of a blue square": two objects and one relation that holds.
    `full`: both objects named by colour and shape (size sometimes)."""
    i, rel, j = rng.choice(relation_pairs(scene, threshold))
    a, b = scene.objects[i], scene.objects[j]
    if full:
        refs = (from_object(a, size=rng.random() < 0.3), from_object(b, size=rng.random() < 0.3))
    else:
        refs = (_pick_ref(a, rng), _pick_ref(b, rng))
    return Claim(refs, (Relation(0, rel, 1),))


def identifying_claim(scene: Scene, rng: random.Random, threshold: float) -> Claim:
    """Names every object with size, colour and shape, the object count, one relation, and a
    second relation for a third object when it fits in a short caption. With shapes and colours
    unique within a scene, it is true of a gallery image only if that image has the same objects."""
    objs = list(scene.objects)
    order = list(range(len(objs)))
    rng.shuffle(order)
    pairs = relation_pairs(scene, threshold)
    i, rel, j = rng.choice(pairs)
    rest = [k for k in order if k not in (i, j)]
    mentioned = [i, j] + rest
    refs = tuple(from_object(objs[k]) for k in mentioned)
    rels = [Relation(0, rel, 1)]
    if len(rest) == 1:
        second = [(r, t) for (s, r, t) in pairs if s == rest[0] and t in (i, j)]
        if second and rng.random() < 0.7:
            r, t = rng.choice(second)
            rels.append(Relation(2, r, mentioned.index(t)))
    return Claim(refs, tuple(rels), count=len(objs))


def short_claim(scene: Scene, rng: random.Random, threshold: float, partial: bool) -> Claim:
    """One claim of a training short caption, of a kind drawn with the training shares: two objects
    and a relation, one object, a count, every object listed, or an identifying description
    (`partial`, the hard world: only the first two)."""
    kinds = ("pair", "single") if partial else ("pair", "single", "count", "list", "full")
    weights = (0.6, 0.4) if partial else (0.45, 0.15, 0.05, 0.1, 0.25)
    kind = rng.choices(kinds, weights)[0]
    if kind == "pair":
        return pair_claim(scene, rng, threshold)
    if kind == "single":
        return Claim((_pick_ref(rng.choice(scene.objects), rng, p_size=0.5),))
    if kind == "count":
        return Claim(count=len(scene.objects))
    if kind == "list":
        objs = list(scene.objects)
        rng.shuffle(objs)
        return Claim(tuple(from_object(o, size=rng.random() < 0.3) for o in objs), count=len(objs))
    return identifying_claim(scene, rng, threshold)


def short_captions(
    scene: Scene, rng: random.Random, n: int, partial: bool = False, threshold: float = 4.0
) -> list[str]:
    """`n` distinct true captions under 30 tokens (fewer if the scene cannot give `n` distinct
    ones). Kinds: two objects and a relation, one object, a count, every object listed, or an
    identifying description. `partial` (hard world): only one or two objects, never a count."""
    out: list[str] = []
    for _ in range(20 * n):
        claim = short_claim(scene, rng, threshold, partial)
        style = random_style(rng)
        text = render_claim(claim, style)
        # Both guards hold by construction; checking keeps a future wording change honest.
        if claim_holds(claim, scene, threshold) is not True or count_tokens(text) > SHORT_MAX_TOKENS:
            continue
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------- writing


def save_png(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def split_progress(total: int, desc: str, enabled: bool):
    """A tqdm bar over the `total` images of one split (`enabled=False`: none)."""
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs stay clean).
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True, leave=False)
