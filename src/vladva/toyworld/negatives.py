"""Captions that are false for a scene: SugarCrepe-style edits of a true claim.

`hard_negative` makes one (positive, negative) pair of claims for a SugarCrepe category; the
evaluation splits use it for their examples and the training manifests for their hard negatives
(`negative_captions`: edits of any true two-object claim; `caption_negatives`: minimal edits of
each caption, worded as the caption is). Every negative is verified false for its scene.
"""

from __future__ import annotations

import random
from dataclasses import replace

from vladva.toyworld.captions import (
    FRAMES,
    INVERSE,
    RELATIONS,
    SHORT_MAX_TOKENS,
    CaptionParseError,
    Claim,
    ObjectRef,
    Relation,
    Style,
    claim_holds,
    count_tokens,
    parse_caption,
    random_style,
    render_claim,
)
from vladva.toyworld.scene import COLOURS, SHAPES, SIZES, Scene
from vladva.toyworld.world import World, pair_claim

# The SugarCrepe categories training negatives are drawn from: swap attributes, swap objects, replace the relation.
NEGATIVE_CATEGORIES = ("swap_att", "swap_obj", "replace_rel")
# Every wording of a claim, to find the one a caption was written in.
ALL_STYLES = tuple(Style(f, v, c) for f in FRAMES for v in range(3) for c in ("objects", "shapes"))


def _set_ref(claim: Claim, k: int, **changes) -> Claim:
    objs = list(claim.objects)
    objs[k] = replace(objs[k], **changes)
    return replace(claim, objects=tuple(objs))


def _first_false(candidates, scene: Scene, thr: float) -> Claim | None:
    for c in candidates:
        if claim_holds(c, scene, thr) is False:
            return c
    return None


def hard_negative(
    category: str, claim: Claim, scene: Scene, rng: random.Random, thr: float
) -> tuple[Claim, Claim] | None:
    """(positive, negative) claims for a SugarCrepe category from a true two-object claim, or None.
    The negative changes one thing as the category says and is false for the scene; `add_att`
    first drops an attribute from the positive, then adds a wrong one back."""
    ks = list(range(len(claim.objects)))
    rng.shuffle(ks)
    present = {(o.colour, o.shape) for o in scene.objects}
    # Negatives stay plausible in this world: no colour or shape named twice in one caption.
    used_colours = {r.colour for r in claim.objects}
    used_shapes = {r.shape for r in claim.objects}
    if category == "replace_obj":
        cands = [
            _set_ref(claim, k, shape=s)
            for k in ks
            for s in rng.sample(SHAPES, len(SHAPES))
            if claim.objects[k].shape is not None and s not in used_shapes
        ]
        neg = _first_false(cands, scene, thr)
    elif category == "replace_att":
        cands = [
            _set_ref(claim, k, colour=c)
            for k in ks
            for c in rng.sample(list(COLOURS), len(COLOURS))
            if claim.objects[k].colour is not None and c not in used_colours
        ]
        cands += [_set_ref(claim, k, size=z) for k in ks for z in SIZES if claim.objects[k].size not in (None, z)]
        neg = _first_false(cands, scene, thr)
    elif category == "replace_rel":
        r = claim.relations[0]
        names = [INVERSE[r.name]] + rng.sample(
            [n for n in RELATIONS if n not in (r.name, INVERSE[r.name])], len(RELATIONS) - 2
        )
        neg = _first_false([replace(claim, relations=(Relation(r.subject, n, r.object),)) for n in names], scene, thr)
    elif category in ("swap_obj", "swap_att"):
        a, b = claim.objects[0], claim.objects[1]
        attrs = ("shape",) if category == "swap_obj" else ("colour", "size")
        cands = []
        for attr in attrs:
            va, vb = getattr(a, attr), getattr(b, attr)
            if va is not None and vb is not None and va != vb:
                cands.append(_set_ref(_set_ref(claim, 0, **{attr: vb}), 1, **{attr: va}))
        neg = _first_false(cands, scene, thr)
    elif category == "add_obj":
        absent = [
            (c, s)
            for c in rng.sample(list(COLOURS), len(COLOURS))
            for s in rng.sample(SHAPES, len(SHAPES))
            if (c, s) not in present and c not in used_colours and s not in used_shapes
        ]
        neg = _first_false(
            [replace(claim, objects=claim.objects + (ObjectRef(s, c),)) for c, s in absent[:5]], scene, thr
        )
    elif category == "add_att":
        for k in ks:
            ref = claim.objects[k]
            for attr, values in (("colour", list(COLOURS)), ("size", list(SIZES))):
                if getattr(ref, attr) is None or (attr == "colour" and ref.shape is None):
                    continue
                pos = _set_ref(claim, k, **{attr: None})
                wrong = [
                    v for v in rng.sample(values, len(values)) if v != getattr(ref, attr) and v not in used_colours
                ]
                neg = _first_false([_set_ref(pos, k, **{attr: v}) for v in wrong], scene, thr)
                if neg is not None and claim_holds(pos, scene, thr) is True:
                    return pos, neg
        return None
    else:
        raise ValueError(f"unknown SugarCrepe category {category!r}")
    return (claim, neg) if neg is not None else None


def negative_captions(
    scene: Scene, captions: list[str], rng: random.Random, n: int, threshold: float, world: World | None = None
) -> list[str]:
    """Up to `n` distinct captions false for `scene` (NegCLIP-style hard negatives): one of the
    SugarCrepe edits (swap attributes, swap objects, replace the relation) of the claim of one of
    `captions` that names two objects and a relation, or of a fresh true pair claim. Each text is
    parsed back and verified false, is short, and is none of `captions`; in a world with held-out
    colour-shape combinations no negative names one."""

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


def caption_negatives(
    scene: Scene, captions: list[str], rng: random.Random, n: int, threshold: float, world: World | None = None
) -> list[list[str]]:
    """Up to `n` minimal edits of each caption that make it false for `scene` (NegCLIP-style):
    the objects' attributes or shapes swapped, or the relation replaced, worded exactly as the
    caption is, so the negative has the caption's words and differs only in what binds to what.
    One list per caption, aligned with `captions` (empty for a caption with fewer than two
    objects). Each negative is parsed back and verified false; in a world with held-out
    colour-shape combinations no negative names one."""
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
