"""The embedded default data set: synthetic compositional scenes with verified captions.

`generate_shapes_dataset(out_dir, cfg)` writes training/validation manifests and every
evaluation split in the layouts of docs/data-layouts.md. Each item draws from its own random
generator seeded by `(seed, split, index)`, so splits never share seeds, a run is reproducible
byte for byte, and an item does not depend on how many came before it.

Two worlds (see docs/data.md): "default" (2-3 objects, captions that often name everything) and
"hard" (3-4 objects, training captions naming only one or two objects as alt-text does, and
colour-shape combinations held out of training that appear in the evaluation splits).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vladva.data.manifest import Record, write_manifest
from vladva.toyworld.captions import (
    FRAMES,
    LONG_MAX_TOKENS,
    LONG_MIN_TOKENS,
    NUMBER_WORDS,
    SHORT_MAX_TOKENS,
    SPATIAL,
    Claim,
    ObjectRef,
    Relation,
    Style,
    claim_holds,
    count_tokens,
    from_object,
    random_style,
    relation_truth,
    render_claim,
    tokenize,
    true_relations,
)
from vladva.toyworld.scene import Scene, SceneConfig, SceneObject, render_scene, sample_scene

SUMMARY_FILE = "dataset_summary.json"
CONFIG_FILE = "data_config.yaml"
FORMAT_VERSION = 1
# Everything the generator writes under DIR; only these are removed when regenerating.
OUTPUTS = (
    "train.jsonl",
    "val.jsonl",
    "images",
    "retrieval",
    "sugarcrepe",
    "sugarcrepe_pp",
    "winoground",
    "aro",
    "zeroshot",
    SUMMARY_FILE,
    CONFIG_FILE,
)
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
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {self.n_train}")
        for name in ("captions_per_image", "max_short_captions", "n_instructions"):
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


# ----------------------------------------------------------------------------- short captions


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


def _short_claim(scene: Scene, rng: random.Random, threshold: float, partial: bool) -> Claim:
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
        claim = _short_claim(scene, rng, threshold, partial)
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


# ----------------------------------------------------------------------------- long captions


def position_phrase(o: SceneObject, image_size: int = 32) -> str:
    """Where an object's centre is on a 3x3 grid: "in the top left", "at the bottom", "in the centre"."""
    col = ("left", "centre", "right")[min(2, int(3 * o.x / image_size))]
    row = ("top", "middle", "bottom")[min(2, int(3 * o.y / image_size))]
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return f"at the {row}" if col == "centre" else f"in the {row} {col}"


def long_caption(scene: Scene, rng: random.Random, threshold: float = 4.0) -> str:
    """30-500 tokens: every object with size, colour, shape and position, every certain pairwise
    relation (left/right, above/below, bigger/smaller/same size), and the object count."""
    objs = list(scene.objects)
    n = NUMBER_WORDS[len(objs)]
    thr = threshold * scene.image_size / 32.0
    s = [
        rng.choice(
            (
                f"The image shows {n} objects on a black background.",
                f"There are {n} shapes on a black background in this picture.",
            )
        )
    ]
    for o in objs:
        s.append(
            rng.choice(
                (
                    f"There is a {o.size} {o.colour} {o.shape} {position_phrase(o, scene.image_size)}.",
                    f"A {o.size} {o.colour} {o.shape} is {position_phrase(o, scene.image_size)}.",
                )
            )
        )
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            spatial = [r for r in SPATIAL if relation_truth(a, r, b, thr) is True]
            if spatial:
                s.append(f"The {a.colour} {a.shape} is " + " and ".join(spatial) + f" the {b.colour} {b.shape}.")
            if a.size == b.size:
                s.append(f"The {a.colour} {a.shape} is the same size as the {b.colour} {b.shape}.")
            else:
                rel = "bigger than" if a.radius > b.radius else "smaller than"
                s.append(f"The {a.colour} {a.shape} is {rel} the {b.colour} {b.shape}.")
    s.append(f"In total there are {n} objects.")
    text = " ".join(s)
    k = count_tokens(text)
    if not LONG_MIN_TOKENS <= k <= LONG_MAX_TOKENS:
        raise ValueError(f"long caption has {k} tokens, outside {LONG_MIN_TOKENS}-{LONG_MAX_TOKENS}: {text!r}")
    return text


# ----------------------------------------------------------------------------- instructions

_ANSWER = "Answer in one word:"


def make_instructions(scene: Scene, rng: random.Random, n: int = 8, threshold: float = 4.0) -> list[tuple[str, str]]:
    """Up to `n` short-answer instructions with one-word answers, as an instruction-tuned LVLM
    sees: attributes ("What colour is the triangle?"), counting, yes/no relations and bindings,
    which-object relations with a unique answer, and one-word descriptions of the image."""
    objs = list(scene.objects)
    thr = threshold * scene.image_size / 32.0
    qa: list[tuple[str, str]] = [(f"How many objects are there? {_ANSWER}", NUMBER_WORDS[len(objs)])]
    for o in objs:
        qa.append((f"What colour is the {o.shape}? {_ANSWER}", o.colour))
        qa.append((f"What shape is the {o.colour} object? {_ANSWER}", o.shape))
        qa.append((f"What size is the {o.colour} {o.shape}? {_ANSWER}", o.size))
    # Binding questions: a colour that is present on another shape makes a "no" that needs binding.
    a = rng.choice(objs)
    qa.append((f"Is there a {a.colour} {a.shape}? {_ANSWER}", "yes"))
    b = rng.choice([o for o in objs if o is not a])
    qa.append((f"Is there a {a.colour} {b.shape}? {_ANSWER}", "no"))
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i == j:
                continue
            rel = rng.choice(SPATIAL)
            truth = relation_truth(a, rel, b, thr)
            if truth is not None:
                qa.append(
                    (f"Is the {a.colour} {a.shape} {rel} the {b.colour} {b.shape}? {_ANSWER}", "yes" if truth else "no")
                )
        for rel in SPATIAL:
            truths = [relation_truth(o, rel, a, thr) for o in objs if o is not a]
            if truths.count(True) == 1 and truths.count(None) == 0:
                answer = next(o for o in objs if o is not a and relation_truth(o, rel, a, thr))
                qa.append((f"Which shape is {rel} the {a.colour} {a.shape}? {_ANSWER}", answer.shape))
    large = [o for o in objs if o.size == "large"]
    if len(large) == 1:
        qa.append((f"Which shape is the largest? {_ANSWER}", large[0].shape))
        qa.append((f"What colour is the largest shape? {_ANSWER}", large[0].colour))
        qa.append(("Describe the image in one word:", large[0].shape))
    rng.shuffle(qa)
    return qa[:n]


# ----------------------------------------------------------------------------- writing


def _save_png(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs stay clean).
    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True, leave=False)


class TokenStats:
    """Running min / mean / max of caption lengths in tokens, and the vocabulary."""

    def __init__(self):
        self.n, self.total, self.min, self.max = 0, 0, None, None
        self.vocab: set[str] = set()

    def add(self, text: str) -> None:
        k = count_tokens(text)
        self.n, self.total = self.n + 1, self.total + k
        self.min = k if self.min is None else min(self.min, k)
        self.max = k if self.max is None else max(self.max, k)
        self.vocab.update(tokenize(text))

    def to_dict(self) -> dict:
        return {
            "count": self.n,
            "min_tokens": self.min,
            "mean_tokens": round(self.total / max(1, self.n), 2),
            "max_tokens": self.max,
        }


def make_record(scene: Scene, rng: random.Random, cfg: ShapesDataConfig, world: World, rid: str, image: Path) -> Record:
    thr = cfg.relation_threshold_px
    n_short = rng.randint(1, cfg.max_short_captions)
    captions = short_captions(scene, rng, n_short, partial=world.partial_captions, threshold=thr)
    qa = make_instructions(scene, rng, cfg.n_instructions, thr)
    return Record(
        rid, image, captions, long_caption(scene, rng, thr), {"scene": scene.to_dict(), "qa": [[q, a] for q, a in qa]}
    )


NEGATIVE_CATEGORIES = ("swap_att", "swap_obj", "replace_rel")


def negative_captions(
    scene: Scene, captions: list[str], rng: random.Random, n: int, threshold: float, world: World | None = None
) -> list[str]:
    """Up to `n` distinct captions false for `scene` (NegCLIP-style hard negatives): one of the
    SugarCrepe edits (swap attributes, swap objects, replace the relation) of the claim of one of
    `captions` that names two objects and a relation, or of a fresh true pair claim. Each text is
    parsed back and verified false, is short, and is none of `captions`; in a world with held-out
    colour-shape combinations no negative names one."""
    from vladva.toyworld.captions import CaptionParseError, parse_caption
    from vladva.toyworld.splits import hard_negative

    def truth(text: str) -> bool | None:
        try:
            return claim_holds(parse_caption(text), scene, threshold)
        except CaptionParseError:
            return None

    out: list[str] = []
    if n <= 0:
        return out
    bases = []
    for text in captions:
        try:
            claim = parse_caption(text)
        except CaptionParseError:
            continue
        if len(claim.objects) >= 2 and claim.relations and claim_holds(claim, scene, threshold) is True:
            bases.append(claim)
    heldout = set(world.heldout) if world is not None else set()
    for _ in range(10 * n):
        claim = rng.choice(bases) if bases and rng.random() < 0.5 else pair_claim(scene, rng, threshold, full=True)
        made = hard_negative(rng.choice(NEGATIVE_CATEGORIES), claim, scene, rng, threshold)
        if made is None:
            continue
        neg = made[1]
        if any((r.colour, r.shape) in heldout for r in neg.objects):
            continue
        text = render_claim(neg, random_style(rng))
        if text in out or text in captions or count_tokens(text) > SHORT_MAX_TOKENS or truth(text) is not False:
            continue
        out.append(text)
        if len(out) == n:
            break
    return out


ALL_STYLES = tuple(Style(f, v, c) for f in FRAMES for v in range(3) for c in ("objects", "shapes"))


def caption_negatives(
    scene: Scene, captions: list[str], rng: random.Random, n: int, threshold: float, world: World | None = None
) -> list[list[str]]:
    """Up to `n` minimal edits of each caption that make it false for `scene` (NegCLIP-style):
    the objects' attributes or shapes swapped, or the relation replaced, worded exactly as the
    caption is, so the negative has the caption's words and differs only in what binds to what.
    One list per caption, aligned with `captions` (empty for a caption with fewer than two
    objects). Each negative is parsed back and verified false; in a world with held-out
    colour-shape combinations no negative names one."""
    from vladva.toyworld.captions import CaptionParseError, parse_caption
    from vladva.toyworld.splits import hard_negative

    heldout = set(world.heldout) if world is not None else set()
    out: list[list[str]] = []
    for text in captions:
        negs: list[str] = []
        try:
            claim = parse_caption(text)
        except CaptionParseError:
            claim = None
        style = None if claim is None else next((st for st in ALL_STYLES if render_claim(claim, st) == text), None)
        if n > 0 and style is not None and len(claim.objects) >= 2:
            cats = [c for c in NEGATIVE_CATEGORIES if c != "replace_rel" or claim.relations]
            for cat in rng.sample(cats, len(cats)) * 2:  # each category, then again for other edits
                made = hard_negative(cat, claim, scene, rng, threshold)
                if made is None or any((r.colour, r.shape) in heldout for r in made[1].objects):
                    continue
                neg = render_claim(made[1], style)
                if neg in negs or neg in captions or count_tokens(neg) > SHORT_MAX_TOKENS:
                    continue
                if claim_holds(parse_caption(neg), scene, threshold) is not False:
                    continue
                negs.append(neg)
                if len(negs) == n:
                    break
        out.append(negs)
    return out


def write_train_split(
    out_dir: Path, split: str, n: int, cfg: ShapesDataConfig, world: World, progress: bool = True
) -> dict:
    """Render `n` scenes to `images/<split>/` and write `<split>.jsonl`. Returns statistics."""
    records = []
    short, long_, qa_count, objects = TokenStats(), TokenStats(), 0, 0
    n_negatives = n_caption_negatives = 0
    combos: set[tuple[str, str]] = set()
    with _progress(n, split, progress) as bar:
        for i in range(n):
            rng = item_rng(cfg.seed, split, i)
            scene = sample_world_scene(rng, world, split, cfg.image_size)
            rid = f"{i:06d}"
            path = out_dir / "images" / split / f"{rid}.png"
            _save_png(render_scene(scene), path)
            rec = make_record(scene, rng, cfg, world, rid, path)
            if cfg.n_train_negatives > 0:  # own seed namespace: the record's other fields do not change
                neg_rng = item_rng(cfg.seed, f"{split}-negatives", i)
                rec.negative_captions = negative_captions(
                    scene, rec.captions, neg_rng, cfg.n_train_negatives, cfg.relation_threshold_px, world
                )
                n_negatives += len(rec.negative_captions)
            if cfg.n_caption_negatives > 0:
                cneg_rng = item_rng(cfg.seed, f"{split}-caption-negatives", i)
                rec.caption_negatives = caption_negatives(
                    scene, rec.captions, cneg_rng, cfg.n_caption_negatives, cfg.relation_threshold_px, world
                )
                n_caption_negatives += sum(map(len, rec.caption_negatives))
            for c in rec.captions:
                short.add(c)
            long_.add(rec.long_caption)
            qa_count += len(rec.meta["qa"])
            objects += len(scene.objects)
            combos.update((o.colour, o.shape) for o in scene.objects)
            records.append(rec)
            bar.update()
    write_manifest(out_dir / f"{split}.jsonl", records)
    return {
        "images": n,
        "manifest": f"{split}.jsonl",
        "short_captions": short.to_dict(),
        "long_captions": long_.to_dict(),
        "instructions": qa_count,
        "negative_captions": n_negatives,
        "caption_negatives": n_caption_negatives,
        "mean_objects": round(objects / max(1, n), 3),
        "colour_shape_combinations": len(combos),
        "vocabulary": sorted(short.vocab | long_.vocab),
    }


def _same_config(out_dir: Path, cfg: ShapesDataConfig) -> bool:
    import yaml

    from vladva.config import config_to_dict

    summary, saved = out_dir / SUMMARY_FILE, out_dir / CONFIG_FILE
    if not (summary.is_file() and saved.is_file()):
        return False
    try:
        return yaml.safe_load(saved.read_text(encoding="utf-8")) == config_to_dict(cfg)
    except yaml.YAMLError:
        return False


def _clear_outputs(out_dir: Path) -> None:
    """Remove what an earlier run wrote (only the generator's own names), summary first, so an
    interrupted run is never mistaken for a complete one."""
    for name in (SUMMARY_FILE,) + OUTPUTS:
        p = out_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def generate_shapes_dataset(
    out_dir: Path | str, cfg: ShapesDataConfig | None = None, force: bool = False, progress: bool = True
) -> dict:
    """Write the whole data set under `out_dir` (layouts: docs/data-layouts.md) and return the
    summary also written to `out_dir/dataset_summary.json`. If `out_dir` already holds a complete
    data set from the same resolved config, nothing is written and the summary comes back with
    `"skipped": true`; `force` regenerates. The resolved config is saved as `data_config.yaml`."""
    from vladva.config import config_to_dict, save_config
    from vladva.toyworld import splits

    cfg = cfg or ShapesDataConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    if not force and _same_config(out_dir, cfg):
        summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        summary["skipped"] = True
        return summary
    ours = (out_dir / CONFIG_FILE).is_file() or (out_dir / SUMMARY_FILE).is_file()
    foreign = [name for name in OUTPUTS if (out_dir / name).exists()]
    if foreign and not ours:
        # Never delete what this generator did not write (e.g. a user's own images/ folder).
        raise ValueError(
            f"{out_dir} already holds {', '.join(foreign)} but no {CONFIG_FILE}: it was not written by "
            "`vladva data shapes`; choose an empty or new folder"
        )
    replaced = ours
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out_dir)
    world = WORLDS[cfg.world]
    start = time.perf_counter()
    summary: dict = {
        "format_version": FORMAT_VERSION,
        "world": cfg.world,
        "seed": cfg.seed,
        "config": config_to_dict(cfg),
        "seed_namespaces": "item seed = 'vladva-shapes/<seed>/<split>/<index>'; one namespace per split",
    }
    if world.heldout:
        summary["heldout_combinations"] = [list(c) for c in world.heldout]
    # Config first: an interrupted run still marks the folder as this generator's to replace.
    save_config(cfg, out_dir / CONFIG_FILE)
    summary["train"] = write_train_split(out_dir, "train", cfg.n_train, cfg, world, progress)
    summary["val"] = write_train_split(out_dir, "val", cfg.n_val, cfg, world, progress)
    vocab = set(summary["train"].pop("vocabulary")) | set(summary["val"].pop("vocabulary"))
    summary["vocabulary_size"] = len(vocab)
    summary.update(splits.write_eval_splits(out_dir, cfg, world, progress))
    # The summary is written last: its presence marks a complete data set. No timings in it, so
    # the same config gives the same bytes.
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary["skipped"] = False
    summary["replaced"] = replaced
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


__all__ = [
    "HARD_HELDOUT",
    "WORLDS",
    "ShapesDataConfig",
    "World",
    "caption_negatives",
    "generate_shapes_dataset",
    "has_heldout",
    "identifying_claim",
    "item_rng",
    "long_caption",
    "make_instructions",
    "negative_captions",
    "pair_claim",
    "position_phrase",
    "sample_world_scene",
    "short_captions",
]
