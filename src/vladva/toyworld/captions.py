"""Claims about a scene, the verifier that decides them, and the words that say them.

Every caption of the shapes data set starts as a `Claim` (objects described by optional size,
colour and shape; relations between them; an optional object count), is checked against the
`Scene` with `claim_holds`, and only then is rendered to text with `render_claim`. `parse_caption`
reads such text back into a claim, so a hand-written caption can be checked the same way
(`caption_is_true("a red circle left of a blue square", scene)`).

Truth is three-valued. A spatial relation is true when the centres differ by at least the
threshold (`RELATION_THRESHOLD_PX` = 4 px at 32 px) in the right direction, false when they do
not differ in that direction at all (margin <= 0), and ambiguous in between: positives must be
true and negatives false, so nothing ambiguous is ever stated or used as a negative.

Tokens: lengths are counted as words plus punctuation marks (`count_tokens`), which is what the
embedded base LVLM's word-level tokenizer produces (it splits on whitespace and punctuation).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import permutations

from vladva.toyworld.scene import Scene, SceneObject

RELATION_THRESHOLD_PX = 4.0  # at image_size 32; scaled with the image size
SPATIAL = ("left of", "right of", "above", "below")
SIZE_RELATIONS = ("bigger than", "smaller than")
RELATIONS = SPATIAL + SIZE_RELATIONS
INVERSE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "bigger than": "smaller than",
    "smaller than": "bigger than",
}
# Wordings of each relation; the first is the canonical one. All parse back to the same name.
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "higher than"),
    "below": ("below", "under", "lower than"),
    "bigger than": ("bigger than", "larger than"),
    "smaller than": ("smaller than",),
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
SHORT_MAX_TOKENS = 29  # short captions: < 30 tokens
LONG_MIN_TOKENS, LONG_MAX_TOKENS = 30, 500

_TOKEN_RE = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks, lower-cased: "A red circle." -> ["a", "red", "circle", "."]."""
    return [t.lower() for t in _TOKEN_RE.findall(text)]


def count_tokens(text: str) -> int:
    """Length in the base LVLM's word-level tokens (words and punctuation marks, no specials)."""
    return len(_TOKEN_RE.findall(text))


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class ObjectRef:
    """A described object; unset attributes match anything. At least one of shape/colour/size."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    definite: bool = False  # "the red circle" vs "a red circle": wording only, not meaning

    def matches(self, o: SceneObject) -> bool:
        return (
            (self.shape is None or self.shape == o.shape)
            and (self.colour is None or self.colour == o.colour)
            and (self.size is None or self.size == o.size)
        )

    def key(self) -> tuple:
        return (self.shape, self.colour, self.size)


@dataclass(frozen=True)
class Relation:
    """`objects[subject]` <name> `objects[object]`, e.g. (0, "left of", 1)."""

    subject: int
    name: str
    object: int


@dataclass(frozen=True)
class Claim:
    """What a caption says: distinct objects that exist, relations among them, and optionally
    the exact number of objects in the scene."""

    objects: tuple[ObjectRef, ...] = ()
    relations: tuple[Relation, ...] = ()
    count: int | None = None

    def meaning(self) -> tuple:
        """What the claim says, independent of wording: object order and articles do not matter."""
        keys = [repr(o.key()) for o in self.objects]
        rels = sorted((keys[r.subject], r.name, keys[r.object]) for r in self.relations)
        return (tuple(sorted(keys)), tuple(rels), self.count)


def from_object(
    o: SceneObject, size: bool = True, colour: bool = True, shape: bool = True, definite: bool = False
) -> ObjectRef:
    return ObjectRef(o.shape if shape else None, o.colour if colour else None, o.size if size else None, definite)


def relation_truth(a: SceneObject, name: str, b: SceneObject, threshold: float) -> bool | None:
    """True / False / None (ambiguous: the centres differ by less than `threshold` pixels)."""
    if name in SIZE_RELATIONS:
        ra, rb = a.radius, b.radius
        return ra > rb if name == "bigger than" else ra < rb
    margin = {"left of": b.x - a.x, "right of": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[name]
    if margin >= threshold:
        return True
    if margin <= 0:
        return False
    return None


def _threshold(scene: Scene, threshold: float | None) -> float:
    return (RELATION_THRESHOLD_PX if threshold is None else threshold) * scene.image_size / 32.0


def claim_holds(claim: Claim, scene: Scene, threshold: float | None = None) -> bool | None:
    """Decide `claim` on `scene`: True if some assignment of distinct scene objects to the claim's
    objects satisfies every attribute and relation; False if every assignment breaks something
    for certain; None (ambiguous) otherwise. `threshold` in pixels at 32 px (default 4)."""
    thr = _threshold(scene, threshold)
    if claim.count is not None and claim.count != len(scene.objects):
        return False
    refs = claim.objects
    if len(refs) > len(scene.objects):
        return False
    candidates = [[i for i, o in enumerate(scene.objects) if r.matches(o)] for r in refs]
    if any(not c for c in candidates):
        return False
    ambiguous = False
    for assign in permutations(range(len(scene.objects)), len(refs)):
        if any(a not in c for a, c in zip(assign, candidates)):
            continue
        values = [
            relation_truth(scene.objects[assign[r.subject]], r.name, scene.objects[assign[r.object]], thr)
            for r in claim.relations
        ]
        if all(v is True for v in values):
            return True
        if not any(v is False for v in values):
            ambiguous = True
    return None if ambiguous else False


def caption_is_true(caption: Claim | str, scene: Scene, threshold: float | None = None) -> bool:
    """True only when the caption (a `Claim` or text in the shapes grammar) is certainly true."""
    claim = parse_caption(caption) if isinstance(caption, str) else caption
    return claim_holds(claim, scene, threshold) is True


def true_relations(a: SceneObject, b: SceneObject, threshold: float, image_size: int = 32) -> list[str]:
    """Relations that certainly hold from `a` to `b` (threshold in px at 32 px)."""
    thr = threshold * image_size / 32.0
    return [r for r in RELATIONS if relation_truth(a, r, b, thr) is True]


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Style:
    """How a claim is worded: `frame` is "plain" ("a red circle left of a blue square"), "is"
    ("the red circle is left of the blue square") or "there" ("there is a red circle left of a
    blue square"); `rel_variant` picks the relation wording; `count_noun` "objects" or "shapes"."""

    frame: str = "plain"
    rel_variant: int = 0
    count_noun: str = "objects"


FRAMES = ("plain", "is", "there")


def random_style(rng: random.Random) -> Style:
    return Style(rng.choice(FRAMES), rng.randrange(3), rng.choice(("objects", "shapes")))


def noun_phrase(ref: ObjectRef, definite: bool | None = None) -> str:
    """ "a small red circle", "the blue square", "a red shape", "an orange cross"."""
    words = [w for w in (ref.size, ref.colour) if w] + [ref.shape or "shape"]
    the = ref.definite if definite is None else definite
    article = "the" if the else ("an" if words[0][0] in "aeiou" else "a")
    return " ".join([article] + words)


def relation_phrase(name: str, variant: int = 0) -> str:
    words = RELATION_WORDS[name]
    return words[variant % len(words)]


def render_claim(claim: Claim, style: Style = Style()) -> str:
    """Text for a claim. Supports: a count alone ("three objects"), objects without relations
    ("a red circle and a blue square"), one relation between the first two objects with extra
    objects listed after it, and a second relation whose subject is a later object ("..., and a
    green cross below the red circle"). A count is a prefix ("three shapes: ...")."""
    refs = list(claim.objects)
    definite = style.frame == "is"
    nps = [noun_phrase(r, r.definite or definite) for r in refs]
    rels = list(claim.relations)
    parts: list[str] = []
    used = set()
    if rels and {rels[0].subject, rels[0].object} <= set(range(len(refs))):
        r0 = rels[0]
        verb = " is " if style.frame == "is" else " "
        parts.append(f"{nps[r0.subject]}{verb}{relation_phrase(r0.name, style.rel_variant)} {nps[r0.object]}")
        used |= {r0.subject, r0.object}
        rels = rels[1:]
    rest = []
    for i in range(len(refs)):
        if i in used:
            continue
        later = [r for r in rels if r.subject == i and r.object in used]
        if later:
            r = later[0]
            rels.remove(r)
            target = noun_phrase(refs[r.object], definite=True)
            rest.append(f"{nps[i]} {relation_phrase(r.name, style.rel_variant)} {target}")
        else:
            rest.append(nps[i])
        used.add(i)
    if rels:
        raise ValueError(f"render_claim cannot word relations {rels} of {claim}")
    if parts and rest:
        text = parts[0] + "".join((", and " if k == len(rest) - 1 else ", ") + x for k, x in enumerate(rest))
    elif parts:
        text = parts[0]
    elif rest:
        text = rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + " and " + rest[-1]
    else:
        text = ""
    if claim.count is not None:
        head = f"{NUMBER_WORDS[claim.count]} {style.count_noun}"
        return f"{head}: {text}" if text else head
    if style.frame == "there" and text:
        return f"there is {text}"
    return text


# ----------------------------------------------------------------------------- parsing


class CaptionParseError(ValueError):
    """Text outside the shapes caption grammar; the message names the word at fault."""


_ARTICLES = {"a", "an", "the"}
_FILLER = {"is", "there", "and", ",", ":", "."}
_FILLER_PHRASES = (("on", "a", "black", "background"),)
_COUNT_NOUNS = {"objects", "shapes"}
_NOUNS = {"object", "shape"}
_NUMBERS = {w: n for n, w in NUMBER_WORDS.items()}
_REL_TOKENS = sorted(
    ((tuple(w.split()), name) for name, ws in RELATION_WORDS.items() for w in ws), key=lambda t: -len(t[0])
)


def parse_caption(text: str, shapes=None, colours=None, sizes=None) -> Claim:
    """Read a caption in the shapes grammar back into a `Claim`.

    Indefinite noun phrases introduce new objects; a definite one ("the circle") refers back to
    the earlier object it fits, if any. A relation links the noun phrase before it to the one
    after it. Raises `CaptionParseError` naming the first word it cannot read."""
    from vladva.toyworld.scene import COLOURS, SHAPES, SIZES

    shapes = set(shapes or SHAPES)
    colours = set(colours or COLOURS)
    sizes = set(sizes or SIZES)
    toks = tokenize(text)
    refs: list[ObjectRef] = []
    rels: list[Relation] = []
    count = None
    pending_rel: str | None = None
    last: int | None = None
    i = 0
    while i < len(toks):
        t = toks[i]
        phrase = next((p for p in _FILLER_PHRASES if tuple(toks[i : i + len(p)]) == p), None)
        if phrase:
            i += len(phrase)
            continue
        rel = next(((w, name) for w, name in _REL_TOKENS if tuple(toks[i : i + len(w)]) == w), None)
        if rel:
            if last is None or pending_rel is not None:
                raise CaptionParseError(f"{text!r}: relation {' '.join(rel[0])!r} has no subject")
            pending_rel = rel[1]
            i += len(rel[0])
            continue
        if t in _NUMBERS and i + 1 < len(toks) and toks[i + 1] in _COUNT_NOUNS:
            if count is not None:
                raise CaptionParseError(f"{text!r}: two object counts")
            count = _NUMBERS[t]
            i += 2
            continue
        if t in _ARTICLES or t in sizes or t in colours or t in shapes or t in _NOUNS:
            definite = t == "the"
            j = i + 1 if t in _ARTICLES else i
            size = colour = shape = None
            if j < len(toks) and toks[j] in sizes:
                size, j = toks[j], j + 1
            if j < len(toks) and toks[j] in colours:
                colour, j = toks[j], j + 1
            if j < len(toks) and toks[j] in shapes:
                shape, j = toks[j], j + 1
            elif j < len(toks) and toks[j] in _NOUNS:
                j += 1
            else:
                where = toks[j] if j < len(toks) else "end of text"
                raise CaptionParseError(f"{text!r}: expected a shape or 'shape'/'object' at {where!r}")
            if size is None and colour is None and shape is None:
                raise CaptionParseError(f"{text!r}: noun phrase at word {i + 1} says nothing about the object")
            ref = ObjectRef(shape, colour, size, definite)
            idx = None
            if definite:
                # "the circle" refers back to an earlier object it fits, but never to the subject
                # of the relation it completes ("the circle is left of the circle" is two objects).
                idx = next(
                    (
                        k
                        for k, r in enumerate(refs)
                        if not (pending_rel is not None and k == last)
                        and all(
                            v is None or v == getattr(r, a)
                            for a, v in (("shape", shape), ("colour", colour), ("size", size))
                        )
                    ),
                    None,
                )
            if idx is None:
                refs.append(ref)
                idx = len(refs) - 1
            if pending_rel is not None:
                rels.append(Relation(last, pending_rel, idx))
                pending_rel = None
            last = idx
            i = j
            continue
        if t in _FILLER:
            i += 1
            continue
        raise CaptionParseError(f"{text!r}: unknown word {t!r} at word {i + 1}")
    if pending_rel is not None:
        raise CaptionParseError(f"{text!r}: relation {pending_rel!r} has no object")
    return Claim(tuple(refs), tuple(rels), count)
