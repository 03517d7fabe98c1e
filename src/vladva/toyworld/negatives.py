"""Captions that are false for a scene: SugarCrepe-style edits of a true claim.

`hard_negative` makes one (positive, negative) pair of claims for a SugarCrepe category; the
evaluation splits use it for their examples and the training manifests for their hard negatives
(`negative_captions`: edits of any true two-object claim; `caption_negatives`: minimal edits of
each caption, worded as the caption is). Every negative is verified false for its scene and
typed by the edit it is (`negative_kind`, read from the claims, not from the category asked for):
a swap of two objects that carry nothing else to bind (`"a circle left of a square"` ->
`"a square left of a circle"`) is a `swap_order`, not a binding swap.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from vladva.data.manifest import Negative
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
# The kinds a negative is typed as (manifest `{"text", "kind"}`), each decided by `negative_kind`.
NEGATIVE_KINDS = {
    "swap_att": "colours or sizes exchanged between two objects, shapes in place: binding",
    "swap_obj": "shapes exchanged between two objects, colours and sizes in place: binding",
    "swap_order": "two objects exchanged whole, every object description unchanged: a relation change",
    "replace_rel": "the relation or comparison word replaced (a second relation may be dropped), objects unchanged",
    "replace_att": "one object's colour or size replaced by another",
    "replace_obj": "one object's shape replaced by another",
}
# Kinds whose negative changes which colour / size goes with which shape (which object is described).
BINDING_KINDS = ("swap_att", "swap_obj")
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


def negative_kind(positive: Claim, negative: Claim) -> str | None:
    """The kind of edit (a key of `NEGATIVE_KINDS`) that turns `positive` into `negative`, or None
    when it is none of them. Objects are compared by position (as parsed from text) and by what
    describes them (size, colour, shape); a binding swap must change the multiset of object
    descriptions, i.e. which colour / size goes with which shape."""
    p, n = positive.objects, negative.objects
    if len(p) != len(n) or positive.count != negative.count:
        return None
    # `hard_negative("replace_rel")` keeps only the first relation of a claim that has two
    dropped = 0 < len(negative.relations) < len(positive.relations)
    rels_p = positive.relations[: len(negative.relations)]
    if [(r.subject, r.object) for r in rels_p] != [(r.subject, r.object) for r in negative.relations]:
        return None
    same_relations = [r.name for r in rels_p] == [r.name for r in negative.relations]
    keys_p, keys_n = [o.key() for o in p], [o.key() for o in n]
    if keys_p == keys_n:  # the same objects in the same places: only a relation differs
        return None if same_relations else "replace_rel"
    if dropped or not same_relations:
        return None
    if Counter(keys_p) == Counter(keys_n):  # the same objects described, exchanged whole
        return "swap_order"

    def same_multiset(attr: str) -> bool:
        return Counter(getattr(o, attr) for o in p) == Counter(getattr(o, attr) for o in n)

    def in_place(*attrs: str) -> bool:
        return all(getattr(a, x) == getattr(b, x) for a, b in zip(p, n) for x in attrs)

    if in_place("colour", "size") and same_multiset("shape"):
        return "swap_obj"
    if in_place("shape") and same_multiset("colour") and same_multiset("size"):
        return "swap_att"
    changed = [k for k in range(len(p)) if keys_p[k] != keys_n[k]]
    if len(changed) == 1:
        a, b = p[changed[0]], n[changed[0]]
        if a.shape != b.shape and (a.colour, a.size) == (b.colour, b.size) and None not in (a.shape, b.shape):
            return "replace_obj"
        if a.shape == b.shape:
            return "replace_att"
    return None


def negative_sources(negative: Claim) -> list[Claim]:
    """Every claim one edit away from `negative` (attribute or shape swapped between the first two
    objects, the two exchanged whole, the first relation replaced, one attribute replaced): the
    candidates a typed negative was made from, for checking its kind without the source caption."""
    out: list[Claim] = []
    objs = negative.objects
    if len(objs) >= 2:
        a, b = objs[0], objs[1]
        for attr in ("colour", "size", "shape"):
            out.append(_set_ref(_set_ref(negative, 0, **{attr: getattr(b, attr)}), 1, **{attr: getattr(a, attr)}))
        out.append(replace(negative, objects=(b, a) + objs[2:]))
    if negative.relations:
        r = negative.relations[0]
        out += [
            replace(negative, relations=(Relation(r.subject, name, r.object),) + negative.relations[1:])
            for name in RELATIONS
            if name != r.name
        ]
    for k, o in enumerate(objs):
        out += [_set_ref(negative, k, shape=s) for s in SHAPES if o.shape not in (None, s)]
        out += [_set_ref(negative, k, colour=c) for c in COLOURS if o.colour not in (None, c)]
        out += [_set_ref(negative, k, size=z) for z in SIZES if o.size not in (None, z)]
    return out


def kind_is_supported(
    text: str, kind: str, scene: Scene, source: str | None = None, threshold: float | None = None
) -> bool:
    """Whether the negative `text` is an edit of kind `kind`: of `source` (its caption) when given,
    else of some claim true for `scene` one edit away (`negative_sources`)."""
    try:
        neg = parse_caption(text)
        if source is not None:
            return negative_kind(parse_caption(source), neg) == kind
    except CaptionParseError:
        return False
    return any(
        negative_kind(c, neg) == kind and claim_holds(c, scene, threshold) is True for c in negative_sources(neg)
    )


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
) -> list[Negative]:
    """Up to `n` distinct captions false for `scene` (NegCLIP-style hard negatives): one of the
    SugarCrepe edits (swap attributes, swap objects, replace the relation) of the claim of one of
    `captions` that names two objects and a relation, or of a fresh true pair claim. Each text is
    parsed back and verified false, is short, and is none of `captions`; in a world with held-out
    colour-shape combinations no negative names one. Each is typed by `negative_kind` (of the
    claim it was made from, as worded)."""

    def truth(text: str) -> bool | None:
        try:
            return claim_holds(parse_caption(text), scene, threshold)
        except CaptionParseError:
            return None

    out: list[Negative] = []
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
        style = random_style(rng)
        text = render_claim(neg, style)
        if (
            any(x.text == text for x in out)
            or text in captions
            or count_tokens(text) > SHORT_MAX_TOKENS
            or truth(text) is not False
        ):
            continue
        out.append(Negative(text, _kind_as_worded(made[0], text, style)))
        if len(out) == n:
            break
    return out


def _kind_as_worded(source: Claim, text: str, style: Style) -> str | None:
    """The kind of the negative `text` against its source claim worded the same way (both parsed
    back, so objects are compared in the order the words name them)."""
    return negative_kind(parse_caption(render_claim(source, style)), parse_caption(text))


def caption_negatives(
    scene: Scene, captions: list[str], rng: random.Random, n: int, threshold: float, world: World | None = None
) -> list[list[Negative]]:
    """Up to `n` minimal edits of each caption that make it false for `scene` (NegCLIP-style):
    the objects' attributes or shapes swapped, or the relation replaced, worded exactly as the
    caption is, so the negative has the caption's words. One list per caption, aligned with
    `captions` (empty for a caption with fewer than two objects). Each negative is parsed back and
    verified false, and typed by `negative_kind` against its caption: a relation replaced or two
    bare objects exchanged (`replace_rel`, `swap_order`) keeps every colour-shape pair, only
    `swap_att` / `swap_obj` change what binds to what. In a world with held-out colour-shape
    combinations no negative names one."""
    heldout = set(world.heldout) if world is not None else set()
    out: list[list[Negative]] = []
    for text in captions:
        negs: list[Negative] = []
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
                if any(x.text == neg for x in negs) or neg in captions or count_tokens(neg) > SHORT_MAX_TOKENS:
                    continue
                parsed = parse_caption(neg)
                if claim_holds(parsed, scene, threshold) is not False:
                    continue
                negs.append(Negative(neg, negative_kind(claim, parsed)))
                if len(negs) == n:
                    break
        out.append(negs)
    return out
