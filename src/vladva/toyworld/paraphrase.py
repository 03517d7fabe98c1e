"""Saying a claim in words no training caption uses: the paraphrase lexicon and its renderer.

The paraphrase split (`vladva.toyworld.paraphrase_splits`) asks whether a model understands a
caption or only matches the words it was trained on. Its captions start, like every caption of
the shapes world, as a `Claim` checked against the scene with `claim_holds`; only the wording
differs. `render_paraphrase(claim, form)` says it with synonyms of every colour, shape, size and
relation and with sentence forms the training captions never use ("beneath the azure box rests
a crimson disc"). The in-vocabulary parser (`parse_caption`) never reads this text: truth comes
from the claim, which is stored beside each caption (`claim_to_dict`).

The lexicon was fixed before any model was evaluated on it. Its words are absent from every
training caption (short and long captions, hard negatives and instructions of train/val); only
the few function words in `SHARED_WORDS` also occur there (tested).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from vladva.toyworld.captions import SIZE_RELATIONS, Claim, ObjectRef, Relation, tokenize

# Two synonyms each, chosen so a person reads them as the rendered colour (scene.COLOURS).
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald", "lime"),
    "blue": ("azure", "cobalt"),
    "yellow": ("lemon", "golden"),
    "purple": ("violet", "amethyst"),
    "orange": ("tangerine", "pumpkin"),
    "white": ("ivory", "snowy"),
    "pink": ("rosy", "fuchsia"),
}
# The shapes are filled: a circle is a disc (not a ring); the cross is upright (a plus sign, not an x).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "dot"),
    "square": ("box", "block"),
    "triangle": ("pyramid", "wedge"),
    "cross": ("plus sign", "plus"),
}
THING_WORDS = ("item", "thing")  # an object described without its shape
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("tiny", "little"), "large": ("huge", "big")}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("leftward of", "on the lefthand side of"),
    "right of": ("rightward of", "on the righthand side of"),
    "above": ("over", "further up than"),
    "below": ("beneath", "underneath"),
    "bigger than": ("wider than", "broader than"),
    "smaller than": ("narrower than", "tinier than"),
}
# A spatial relation is said with a position verb ("rests beneath"), a size relation with a look verb.
POSITION_VERBS = ("sits", "lies", "rests")
LOOK_VERBS = ("looks", "appears")
JOINERS = ("along with", "together with")  # before objects after the first relation
COUNT_NOUNS = ("items", "things")
GROUP_WORDS = {2: "pair", 3: "trio", 4: "quartet"}
# Sentence forms: "verb" = "a crimson disc rests beneath an azure box"; "fronted" (spatial
# relations only) = "beneath an azure box rests a crimson disc"; "see" = "we see a crimson disc
# beneath an azure box". Counts: "digits" = "3 items: ...", "group" = "a trio of things: ...".
FRAMES = ("verb", "fronted", "see")
COUNT_FORMS = ("digits", "group")
# Function words the paraphrases share with the training captions; every other word is new.
SHARED_WORDS = frozenset({"a", "an", "the", "of", "on", "than", ",", ":"})


def lexicon_words() -> frozenset[str]:
    """Every token (`captions.tokenize`) a paraphrase can contain except `SHARED_WORDS`."""
    phrases = [
        w for table in (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, RELATION_PHRASES) for ws in table.values() for w in ws
    ]
    phrases += [*THING_WORDS, *POSITION_VERBS, *LOOK_VERBS, *JOINERS, *COUNT_NOUNS, *GROUP_WORDS.values(), "we see"]
    phrases += [str(n) for n in GROUP_WORDS]
    return frozenset(t for p in phrases for t in tokenize(p)) - SHARED_WORDS


@dataclass(frozen=True)
class ParaphraseForm:
    """How a claim is worded. `words` seeds the choice among synonyms per concept (the same seed
    words "red" the same way everywhere in a caption, and in the two captions of a Winoground
    pair); `definite`: "the" instead of "a"/"an"."""

    frame: str = "verb"
    count_form: str = "digits"
    words: int = 0
    definite: bool = False

    def pick(self, concept: str, options: tuple[str, ...]) -> str:
        digest = hashlib.sha256(f"{self.words}/{concept}".encode()).digest()
        return options[int.from_bytes(digest[:4], "big") % len(options)]

    def to_dict(self) -> dict:
        return {"frame": self.frame, "count_form": self.count_form, "words": self.words, "definite": self.definite}

    @classmethod
    def from_dict(cls, d: dict) -> ParaphraseForm:
        return cls(str(d["frame"]), str(d["count_form"]), int(d["words"]), bool(d["definite"]))


def random_form(rng: random.Random, frames: tuple[str, ...] = FRAMES, definite: bool | None = None) -> ParaphraseForm:
    """A form drawn from `rng` (three draws, or two when `definite` is given)."""
    frame, count_form, words = rng.choice(frames), rng.choice(COUNT_FORMS), rng.randrange(1 << 30)
    return ParaphraseForm(frame, count_form, words, rng.random() < 0.5 if definite is None else definite)


def fits(claim: Claim, form: ParaphraseForm) -> bool:
    """Whether `render_paraphrase` can say `claim` in `form` ("fronted" needs a spatial first relation)."""
    return not (form.frame == "fronted" and claim.relations and claim.relations[0].name in SIZE_RELATIONS)


def _noun_phrase(ref: ObjectRef, form: ParaphraseForm, definite: bool) -> str:
    words = []
    if ref.size:
        words.append(form.pick(f"size/{ref.size}", SIZE_WORDS[ref.size]))
    if ref.colour:
        words.append(form.pick(f"colour/{ref.colour}", COLOUR_WORDS[ref.colour]))
    words.append(
        form.pick(f"shape/{ref.shape}", SHAPE_WORDS[ref.shape]) if ref.shape else form.pick("thing", THING_WORDS)
    )
    article = "the" if definite else ("an" if words[0][0] in "aeiou" else "a")
    return " ".join([article, *words])


def _relation(name: str, form: ParaphraseForm) -> str:
    return form.pick(f"relation/{name}", RELATION_PHRASES[name])


def _verb(name: str, form: ParaphraseForm) -> str:
    return form.pick("look", LOOK_VERBS) if name in SIZE_RELATIONS else form.pick("position", POSITION_VERBS)


def render_paraphrase(claim: Claim, form: ParaphraseForm) -> str:
    """Text for `claim` in paraphrase words, the same claims `captions.render_claim` supports: one
    relation between the first two objects, further objects listed after it ("..., along with a
    lemon wedge beneath the azure box, a tiny dot"), an optional count ("3 items: ..."). The meaning is the
    claim's; only words and order differ. Raises ValueError where `fits` is False."""
    if not fits(claim, form):
        raise ValueError(f"the 'fronted' form cannot say the size relation of {claim}")
    refs = list(claim.objects)
    nps = [_noun_phrase(r, form, r.definite or form.definite) for r in refs]
    rels = list(claim.relations)
    head, used = "", set()
    if rels and {rels[0].subject, rels[0].object} <= set(range(len(refs))):
        r0 = rels.pop(0)
        a, b, rel, verb = nps[r0.subject], nps[r0.object], _relation(r0.name, form), _verb(r0.name, form)
        if form.frame == "fronted":
            head = f"{rel} {b} {verb} {a}"
        elif form.frame == "see":
            head = f"we see {a} {rel} {b}"
        else:
            head = f"{a} {verb} {rel} {b}"
        used |= {r0.subject, r0.object}
    rest = []
    for i in range(len(refs)):
        if i in used:
            continue
        later = [r for r in rels if r.subject == i and r.object in used]
        if later:
            rels.remove(later[0])
            target = _noun_phrase(refs[later[0].object], form, definite=True)
            rest.append(f"{nps[i]} {_relation(later[0].name, form)} {target}")
        else:
            rest.append(nps[i])
        used.add(i)
    if rels:
        raise ValueError(f"render_paraphrase cannot word relations {rels} of {claim}")
    joiner = form.pick("joiner", JOINERS)
    if not head and rest and form.frame == "see":
        head, rest = f"we see {rest[0]}", rest[1:]
    elif not head and rest:
        head, rest = rest[0], rest[1:]
    text = head + (f", {joiner} " + ", ".join(rest) if rest else "")
    if claim.count is not None:
        noun = form.pick("count", COUNT_NOUNS)
        if form.count_form == "group" and claim.count in GROUP_WORDS:
            lead = f"a {GROUP_WORDS[claim.count]} of {noun}"
        else:
            lead = f"{claim.count} {noun}"
        return f"{lead}: {text}" if text else lead
    return text


# ----------------------------------------------------------------------------- claims as JSON


def claim_to_dict(claim: Claim) -> dict:
    """A claim as JSON: `{"objects": [{"shape", "colour", "size", "definite"}, ...] (unset keys
    left out), "relations": [[subject, name, object], ...], "count": n}` (count only when set)."""
    objects = [
        {k: v for k, v in (("shape", o.shape), ("colour", o.colour), ("size", o.size)) if v is not None}
        | ({"definite": True} if o.definite else {})
        for o in claim.objects
    ]
    out: dict = {"objects": objects, "relations": [[r.subject, r.name, r.object] for r in claim.relations]}
    if claim.count is not None:
        out["count"] = claim.count
    return out


def claim_from_dict(d: dict) -> Claim:
    """Inverse of `claim_to_dict`."""
    objects = tuple(
        ObjectRef(o.get("shape"), o.get("colour"), o.get("size"), bool(o.get("definite", False))) for o in d["objects"]
    )
    relations = tuple(Relation(int(s), str(n), int(o)) for s, n, o in d.get("relations", []))
    return Claim(objects, relations, d.get("count"))
