"""The binding split: two-object scenes, each beside its colour swap, captioned as in training.

Each item is a scene with two objects of distinct colours and shapes, the same scene with the two
colours exchanged (rendered: same shapes, sizes and positions), and `n_binding_captions` captions
of the scene drawn by the training captions' own generator (`short_claim`: every kind and
wording style that names both objects by colour and shape), each with its swapped twin: the same
words with the two colour words exchanged, true of the swapped scene and false of the original,
so a bag of words cannot tell a caption from its twin.
`vladva eval --suite binding` (`vladva.eval.benchmarks.binding`) reads it to measure how far a
swap moves a model's embeddings and where linear probes stop reading "the colour of the <shape>".

Items draw from their own seed namespace (`binding`), so every other split is byte-identical with
or without this one.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from vladva.toyworld.captions import (
    SHORT_MAX_TOKENS,
    Claim,
    claim_holds,
    count_tokens,
    parse_caption,
    random_style,
    render_claim,
    tokenize,
)
from vladva.toyworld.scene import Scene, SceneConfig, render_scene, sample_scene
from vladva.toyworld.world import ShapesDataConfig, World, item_rng, save_png, short_claim, split_progress

ITEMS_FILE = "items.jsonl"


def claim_form(claim: Claim) -> str:
    """The kind of short caption a claim is: "pair" (two objects and a relation), "list" (every
    object and the count), "full" (every object, the count and relations), "single", "count"."""
    if claim.count is not None:
        if not claim.objects:
            return "count"
        return "full" if claim.relations else "list"
    return "pair" if claim.relations else "single"


def swap_colours(scene: Scene) -> Scene:
    """A two-object scene with its objects' colours exchanged (shapes, sizes, positions kept)."""
    a, b = scene.objects
    return Scene((replace(a, colour=b.colour), replace(b, colour=a.colour)), scene.image_size)


def swap_claim(claim: Claim) -> Claim:
    """A two-object claim with its objects' colours exchanged (relations, count and wording kept)."""
    a, b = claim.objects
    return Claim((replace(a, colour=b.colour), replace(b, colour=a.colour)), claim.relations, claim.count)


def _truth(text: str, scene: Scene, threshold: float) -> bool | None:
    return claim_holds(parse_caption(text), scene, threshold)


def binding_captions(
    scene: Scene, swapped: Scene, rng: random.Random, n: int, threshold: float, partial: bool
) -> list[dict]:
    """Up to `n` `{"form", "caption", "swap_caption"}` of distinct meaning for a two-object scene:
    training short captions that name both objects by colour and shape, and their colour-swapped
    twins, made of exactly the same words (other kinds, and captions whose article would change
    with the colour, "a red" / "an orange", are redrawn). Each caption is parsed back and checked:
    true of its own scene, false of the other."""
    out: list[dict] = []
    meanings = set()
    for _ in range(50 * n):
        claim = short_claim(scene, rng, threshold, partial)
        if len(claim.objects) != 2 or any(r.colour is None or r.shape is None for r in claim.objects):
            continue
        style = random_style(rng)
        text, swap_text = render_claim(claim, style), render_claim(swap_claim(claim), style)
        if claim.meaning() in meanings or max(count_tokens(text), count_tokens(swap_text)) > SHORT_MAX_TOKENS:
            continue
        if sorted(tokenize(text)) != sorted(tokenize(swap_text)):  # "a red" -> "an orange": not the same words
            continue
        checks = (_truth(text, scene, threshold), _truth(text, swapped, threshold))
        checks += (_truth(swap_text, swapped, threshold), _truth(swap_text, scene, threshold))
        if checks != (True, False, True, False):
            continue
        meanings.add(claim.meaning())
        out.append({"form": claim_form(claim), "caption": text, "swap_caption": swap_text})
        if len(out) == n:
            break
    return out


def write_binding(out: Path, cfg: ShapesDataConfig, world: World, progress: bool = True) -> dict:
    """`out/items.jsonl` (one item per line), `out/images/<id>.png` and `<id>_swap.png`, and
    `out/scenes.json`. An item: `image`, `swap_image`, `colours` / `swap_colours` (shape -> colour,
    the probes' targets), `captions` (see `binding_captions`) and `other`, the index of a random
    other item (the swap-sensitivity normaliser). Returns the split's summary."""
    thr = cfg.relation_threshold_px
    n, k = cfg.n_binding, cfg.n_binding_captions
    scene_cfg = SceneConfig(image_size=cfg.image_size, min_objects=2, max_objects=2)
    lines, scenes, forms = [], {}, {}
    with split_progress(n, "binding", progress) as bar:
        for i in range(n):
            rng = item_rng(cfg.seed, "binding", i)
            for _ in range(100):
                scene = sample_scene(rng, scene_cfg)
                swapped = swap_colours(scene)
                captions = binding_captions(scene, swapped, rng, k, thr, world.partial_captions)
                if len(captions) == k:
                    break
            else:
                raise RuntimeError(f"binding item {i}: no scene gave {k} distinct two-object captions")
            stem = f"{i:06d}"
            for name, s in ((f"{stem}.png", scene), (f"{stem}_swap.png", swapped)):
                save_png(render_scene(s), out / "images" / name)
                scenes[name] = s.to_dict()
            for c in captions:
                forms[c["form"]] = forms.get(c["form"], 0) + 1
            lines.append(
                {
                    "id": i,
                    "image": f"images/{stem}.png",
                    "swap_image": f"images/{stem}_swap.png",
                    "colours": {o.shape: o.colour for o in scene.objects},
                    "swap_colours": {o.shape: o.colour for o in swapped.objects},
                    "captions": captions,
                    "other": (i + 1 + rng.randrange(n - 1)) % n,
                }
            )
            bar.update()
    out.mkdir(parents=True, exist_ok=True)
    (out / ITEMS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    (out / "scenes.json").write_text(json.dumps(scenes) + "\n", encoding="utf-8")
    return {"items": n, "captions": n * k, "by_form": dict(sorted(forms.items()))}
