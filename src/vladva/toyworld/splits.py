"""Evaluation splits of the shapes data set, in the public benchmarks' layouts.

Beside each split's files, `scenes.json` maps every image (its path relative to the split's image
folder) to its scene, so any caption can be re-checked later with `vladva.toyworld.captions`.
Each split draws scenes from its own seed namespace (disjoint from train/val) and checks every
caption it writes: positives are parsed back from their text and must be true for their image,
negatives must be false. A scene that cannot give a checked example is skipped, not forced.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from vladva.toyworld.binding import ITEMS_FILE as BINDING_ITEMS
from vladva.toyworld.binding import write_binding
from vladva.toyworld.captions import (
    FRAMES,
    INVERSE,
    NUMBER_WORDS,
    SHORT_MAX_TOKENS,
    SPATIAL,
    Claim,
    ObjectRef,
    Relation,
    Style,
    claim_holds,
    count_tokens,
    parse_caption,
    random_style,
    render_claim,
    tokenize,
)
from vladva.toyworld.negatives import NEGATIVE_KINDS, hard_negative, kind_is_supported
from vladva.toyworld.scene import COLOURS, SHAPES, Scene, SceneConfig, render_scene
from vladva.toyworld.world import (
    ShapesDataConfig,
    World,
    has_heldout,
    identifying_claim,
    item_rng,
    pair_claim,
    relation_pairs,
    sample_world_scene,
    save_png,
    split_progress,
)

SUGARCREPE_CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
SUGARCREPE_PP_CATEGORIES = SUGARCREPE_CATEGORIES[:5]


def karpathy_sentence(sentid: int, imgid: int, text: str) -> dict:
    """One sentence of a Karpathy-split JSON: the raw text and its alphanumeric tokens."""
    return {"sentid": sentid, "imgid": imgid, "raw": text, "tokens": [t for t in tokenize(text) if t.isalnum()]}


def karpathy_image(imgid: int, name: str, sentences: list[dict]) -> dict:
    """One test image of a Karpathy-split JSON (images under `images/`) with its sentences."""
    return {
        "imgid": imgid,
        "filepath": "images",
        "filename": name,
        "split": "test",
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
    }


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def text_truth(text: str, scene: Scene, threshold: float) -> bool | None:
    """Truth of a caption as written (parsed back from its words)."""
    return claim_holds(parse_caption(text), scene, threshold)


def _checked(pos: str, neg: str, scene: Scene, thr: float) -> bool:
    return (
        pos != neg
        and text_truth(pos, scene, thr) is True
        and text_truth(neg, scene, thr) is False
        and count_tokens(pos) <= SHORT_MAX_TOKENS
        and count_tokens(neg) <= SHORT_MAX_TOKENS
    )


# ----------------------------------------------------------------------------- retrieval


def scene_signature(scene: Scene) -> tuple:
    """The scene's objects without positions: an identifying caption cannot tell apart two
    gallery scenes with the same signature."""
    return tuple(sorted((o.shape, o.colour, o.size) for o in scene.objects))


def true_images(claim: Claim, scenes: list[Scene], index: dict[tuple, set[int]], thr: float) -> list[int]:
    """Gallery images the claim is certainly true for. `index` maps an object's (shape, colour,
    size) to the images holding it; an image lacking a match for some described object is skipped
    without running the verifier (the verifier would say false)."""
    candidates: set[int] | None = None
    for ref in claim.objects:
        hits = set()
        for key, ids in index.items():
            if all(v is None or v == k for v, k in zip(ref.key(), key)):
                hits |= ids
        candidates = hits if candidates is None else candidates & hits
    pool = range(len(scenes)) if candidates is None else sorted(candidates)
    return [i for i in pool if claim_holds(claim, scenes[i], thr) is True]


def write_retrieval(out: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """Karpathy JSON whose captions identify their image: each names the object count and every
    object's size, colour and shape plus a relation. Gallery scenes with the same set of objects as
    an earlier one are redrawn, so such a caption is true for its own image only; caption_truth.json
    records, per caption, the images it is true for as checked by the verifier on its text."""
    thr = cfg.relation_threshold_px
    scenes: list[Scene] = []
    seen: set[tuple] = set()
    images, all_caps = [], []
    with split_progress(cfg.n_retrieval, "retrieval", progress) as bar:
        for i in range(cfg.n_retrieval):
            rng = item_rng(cfg.seed, "retrieval", i)
            scene = sample_world_scene(
                rng, world, "retrieval", cfg.image_size, accept=lambda s: scene_signature(s) not in seen
            )
            seen.add(scene_signature(scene))
            scenes.append(scene)
            name = f"{i:06d}.png"
            save_png(render_scene(scene), out / "images" / name)
            caps: list[str] = []
            for _ in range(50 * cfg.captions_per_image):
                text = render_claim(identifying_claim(scene, rng, thr), random_style(rng))
                if text not in caps and count_tokens(text) <= SHORT_MAX_TOKENS:
                    caps.append(text)
                if len(caps) == cfg.captions_per_image:
                    break
            while len(caps) < cfg.captions_per_image:  # a scene with few wordings repeats one
                caps.append(caps[len(caps) % max(1, len(caps))])
            sents = []
            for text in caps:
                sid = len(all_caps)
                all_caps.append(text)
                sents.append(karpathy_sentence(sid, i, text))
            images.append(karpathy_image(i, name, sents))
            bar.update()
    write_json(out / "dataset_shapes.json", {"dataset": "shapes", "images": images})
    write_json(out / "scenes.json", {im["filename"]: s.to_dict() for im, s in zip(images, scenes)})
    index: dict[tuple, set[int]] = defaultdict(set)
    for i, s in enumerate(scenes):
        for o in s.objects:
            index[(o.shape, o.colour, o.size)].add(i)
    truth = {}
    exactly_one, total_true = 0, 0
    for sid, text in enumerate(all_caps):
        ids = true_images(parse_caption(text), scenes, index, thr)
        truth[str(sid)] = {"count": len(ids), "images": ids}
        exactly_one += len(ids) == 1
        total_true += len(ids)
    n = max(1, len(all_caps))
    summary = {
        "images": len(scenes),
        "captions": len(all_caps),
        "fraction_true_for_exactly_one_image": round(exactly_one / n, 4),
        "mean_images_caption_true_for": round(total_true / n, 4),
    }
    if world.heldout:
        summary["images_with_heldout_combination"] = sum(has_heldout(s, world) for s in scenes)
    write_json(out / "caption_truth.json", {"summary": summary, "captions": truth})
    return summary


# ----------------------------------------------------------------------------- SugarCrepe


def paraphrase(claim: Claim, style: Style, rng: random.Random) -> tuple[Claim, Style]:
    """Same meaning, other words: the relation seen from its other side ("a blue square right of
    a red circle") and/or another sentence frame and relation wording."""
    r = claim.relations[0]
    flipped = Claim(
        (claim.objects[r.object], claim.objects[r.subject]) + claim.objects[2:],
        (Relation(0, INVERSE[r.name], 1),) + claim.relations[1:],
        claim.count,
    )
    frames = [f for f in FRAMES if f != style.frame]
    new_style = Style(rng.choice(frames), style.rel_variant + 1, style.count_noun)
    return (flipped if rng.random() < 0.7 else claim), new_style


def write_sugarcrepe(root: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """sugarcrepe/ (7 categories) and sugarcrepe_pp/ (5, with a verified paraphrase) over one pool of
    `n_sugarcrepe` scenes: each scene gives at most one example per category."""
    thr = cfg.relation_threshold_px
    sc = {c: {} for c in SUGARCREPE_CATEGORIES}
    scenes = {}
    pp = {c: {} for c in SUGARCREPE_PP_CATEGORIES}
    with split_progress(cfg.n_sugarcrepe, "sugarcrepe", progress) as bar:
        for i in range(cfg.n_sugarcrepe):
            rng = item_rng(cfg.seed, "sugarcrepe", i)
            scene = sample_world_scene(rng, world, "sugarcrepe", cfg.image_size)
            name = f"{i:06d}.png"
            image = render_scene(scene)
            scenes[name] = scene.to_dict()
            save_png(image, root / "sugarcrepe" / "images" / name)
            save_png(image, root / "sugarcrepe_pp" / "images" / name)
            for category in SUGARCREPE_CATEGORIES:
                claim = pair_claim(scene, rng, thr, full=True)
                style = Style(rng.choice(FRAMES), rng.randrange(3))
                made = hard_negative(category, claim, scene, rng, thr)
                if made is None:
                    continue
                pos, neg = render_claim(made[0], style), render_claim(made[1], style)
                if not _checked(pos, neg, scene, thr):
                    continue
                sc[category][str(len(sc[category]))] = {"filename": name, "caption": pos, "negative_caption": neg}
                if category in pp:
                    for _ in range(10):
                        c2 = render_claim(*paraphrase(made[0], style, rng))
                        if c2 not in (pos, neg) and text_truth(c2, scene, thr) is True:
                            pp[category][str(len(pp[category]))] = {
                                "filename": name,
                                "caption": pos,
                                "caption2": c2,
                                "negative_caption": neg,
                            }
                            break
            bar.update()
    for c, items in sc.items():
        write_json(root / "sugarcrepe" / f"{c}.json", items)
    for c, items in pp.items():
        write_json(root / "sugarcrepe_pp" / f"{c}.json", items)
    for folder in ("sugarcrepe", "sugarcrepe_pp"):
        write_json(root / folder / "scenes.json", scenes)
    return {"sugarcrepe": {c: len(v) for c, v in sc.items()}, "sugarcrepe_pp": {c: len(v) for c, v in pp.items()}}


# ----------------------------------------------------------------------------- Winoground

# What is swapped between the two images -> (Winoground-style tag, collapsed tag). As in
# Winoground, swapped adjectives count as "Relation" and swapped noun phrases as "Object".
WINOGROUND_SWAPS = {
    "colour": ("Adjective-Color", "Relation"),
    "size": ("Adjective-Size", "Relation"),
    "shape": ("Noun", "Object"),
    "position": ("Noun Phrase", "Object"),
}


def _fits(scene: Scene) -> bool:
    """No two objects closer than the sampler allows (so a swapped scene is still well drawn)."""
    cfg = SceneConfig(image_size=scene.image_size)
    objs = scene.objects
    for i in range(len(objs)):
        a = objs[i]
        if not (
            a.radius + 1 <= a.x <= scene.image_size - a.radius - 1
            and a.radius + 1 <= a.y <= scene.image_size - a.radius - 1
        ):
            return False
        for b in objs[i + 1 :]:
            if ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 < a.radius + b.radius + cfg.min_gap:
                return False
    return True


def winoground_claims(scene: Scene, swap: str, rng: random.Random, thr: float) -> tuple[Claim, Claim, Scene] | None:
    """(claim_0, claim_1, scene_1), or None: scene_1 is `scene` with the swap applied to two
    objects, and claim_1 is claim_0 with the same swap, so worded alike they share their words.
    Draws one choice from `rng`."""
    objs = list(scene.objects)
    pairs = [
        (i, r, j)
        for i, r, j in relation_pairs(scene, thr)
        if (swap != "position" or r in SPATIAL) and (swap != "size" or objs[i].size != objs[j].size)
    ]
    if swap == "size":  # the size words carry the difference; the relation must survive the swap
        pairs = [p for p in pairs if p[1] in SPATIAL]
    if not pairs:
        return None
    i, rel, j = rng.choice(pairs)
    a, b = objs[i], objs[j]
    if swap == "colour":
        c0 = Claim((ObjectRef(a.shape, a.colour), ObjectRef(b.shape, b.colour)), (Relation(0, rel, 1),))
        c1 = Claim((ObjectRef(a.shape, b.colour), ObjectRef(b.shape, a.colour)), (Relation(0, rel, 1),))
        objs[i], objs[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
    elif swap == "shape":
        c0 = Claim((ObjectRef(a.shape, a.colour), ObjectRef(b.shape, b.colour)), (Relation(0, rel, 1),))
        c1 = Claim((ObjectRef(b.shape, a.colour), ObjectRef(a.shape, b.colour)), (Relation(0, rel, 1),))
        objs[i], objs[j] = replace(a, shape=b.shape), replace(b, shape=a.shape)
    elif swap == "size":
        c0 = Claim((ObjectRef(a.shape, None, a.size), ObjectRef(b.shape, None, b.size)), (Relation(0, rel, 1),))
        c1 = Claim((ObjectRef(a.shape, None, b.size), ObjectRef(b.shape, None, a.size)), (Relation(0, rel, 1),))
        objs[i], objs[j] = replace(a, size=b.size), replace(b, size=a.size)
    elif swap == "position":
        c0 = Claim((ObjectRef(a.shape, definite=True), ObjectRef(b.shape, definite=True)), (Relation(0, rel, 1),))
        c1 = Claim((ObjectRef(b.shape, definite=True), ObjectRef(a.shape, definite=True)), (Relation(0, rel, 1),))
        objs[i], objs[j] = replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)
    else:
        raise ValueError(f"unknown Winoground swap {swap!r}")
    scene_1 = Scene(tuple(objs), scene.image_size)
    return (c0, c1, scene_1) if _fits(scene_1) else None


def winoground_pair(scene: Scene, swap: str, rng: random.Random, thr: float):
    """(caption_0, caption_1, scene_1) with the same words in another order, or None: scene_1 is
    `scene` with the swap applied to two objects, so caption_1 describes it and caption_0 does not."""
    made = winoground_claims(scene, swap, rng, thr)
    if made is None:
        return None
    c0, c1, scene_1 = made
    # Definite articles throughout: "a"/"an" would change with the colour after it.
    style = Style("is", rng.randrange(3))
    t0, t1 = render_claim(c0, style), render_claim(c1, style)
    ok = (
        sorted(tokenize(t0)) == sorted(tokenize(t1))
        and t0 != t1
        and text_truth(t0, scene, thr) is True
        and text_truth(t0, scene_1, thr) is False
        and text_truth(t1, scene_1, thr) is True
        and text_truth(t1, scene, thr) is False
    )
    return (t0, t1, scene_1) if ok else None


def write_winoground(root: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    thr = cfg.relation_threshold_px
    out = root / "winoground"
    swaps = list(WINOGROUND_SWAPS)
    lines, by_tag, scenes = [], defaultdict(int), {}
    with split_progress(cfg.n_winoground, "winoground", progress) as bar:
        for i in range(cfg.n_winoground):
            rng = item_rng(cfg.seed, "winoground", i)
            swap = swaps[i % len(swaps)]
            made = None
            for _ in range(200):
                scene = sample_world_scene(rng, world, "winoground", cfg.image_size)
                made = winoground_pair(scene, swap, rng, thr)
                if made is not None:
                    break
            if made is None:
                raise RuntimeError(f"winoground example {i}: no scene gave a valid {swap} swap")
            t0, t1, scene_1 = made
            for k, s in ((0, scene), (1, scene_1)):
                save_png(render_scene(s), out / "images" / f"ex{i}_img_{k}.png")
                scenes[f"ex{i}_img_{k}"] = s.to_dict()
            tag, collapsed = WINOGROUND_SWAPS[swap]
            lines.append(
                {
                    "id": i,
                    "image_0": f"ex{i}_img_0",
                    "image_1": f"ex{i}_img_1",
                    "caption_0": t0,
                    "caption_1": t1,
                    "tag": tag,
                    "secondary_tag": swap,
                    "num_main_preds": 1,
                    "collapsed_tag": collapsed,
                }
            )
            by_tag[swap] += 1
            bar.update()
    out.mkdir(parents=True, exist_ok=True)
    (out / "examples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    write_json(out / "scenes.json", scenes)
    return {"examples": len(lines), "by_swap": dict(by_tag)}


# ----------------------------------------------------------------------------- ARO


def _aro_item(stem: str, scene: Scene, pos: str, neg: str, **what) -> dict:
    """One entry of either ARO file: the image with a box covering all of it, what the entry is
    about (`relation_name` or `attributes`), then the true and false captions."""
    box = {"bbox_x": 0, "bbox_y": 0, "bbox_w": scene.image_size, "bbox_h": scene.image_size}
    return {"image_id": stem, "image_path": f"{stem}.png", **box, **what, "true_caption": pos, "false_caption": neg}


def write_aro(root: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """VG-Relation (true caption vs the relation's arguments swapped) and VG-Attribution (colours
    swapped between two objects), one shared image per index, boxes covering the whole image."""
    thr = cfg.relation_threshold_px
    out = root / "aro"
    rel_items, att_items, scenes = [], [], {}
    with split_progress(cfg.n_aro, "aro", progress) as bar:
        for i in range(cfg.n_aro):
            rng = item_rng(cfg.seed, "aro", i)
            scene = sample_world_scene(rng, world, "aro", cfg.image_size)
            stem = f"{i:06d}"
            save_png(render_scene(scene), out / "images" / f"{stem}.png")
            scenes[f"{stem}.png"] = scene.to_dict()

            si, rel, sj = rng.choice(relation_pairs(scene, thr))
            a, b = scene.objects[si], scene.objects[sj]
            pos = f"the {a.colour} {a.shape} is {rel} the {b.colour} {b.shape}"
            neg = f"the {b.colour} {b.shape} is {rel} the {a.colour} {a.shape}"
            if _checked(pos, neg, scene, thr):
                rel_items.append(_aro_item(stem, scene, pos, neg, relation_name=rel))
            a, b = rng.sample(scene.objects, 2)
            pos = f"the {a.colour} {a.shape} and the {b.colour} {b.shape}"
            neg = f"the {b.colour} {a.shape} and the {a.colour} {b.shape}"
            if _checked(pos, neg, scene, thr):
                att_items.append(_aro_item(stem, scene, pos, neg, attributes=[a.colour, b.colour]))
            bar.update()
    write_json(out / "visual_genome_relation.json", rel_items)
    write_json(out / "visual_genome_attribution.json", att_items)
    write_json(out / "scenes.json", scenes)
    return {"relation": len(rel_items), "attribution": len(att_items)}


# ----------------------------------------------------------------------------- zero-shot


def _largest(scene: Scene):
    large = [o for o in scene.objects if o.size == "large"]
    return large[0] if len(large) == 1 else None


ZEROSHOT_TEMPLATES = {
    "largest_shape": (
        "a large {c} and smaller shapes.",
        "the largest shape is a {c}.",
        "a picture whose biggest object is a {c}.",
        "a big {c} on a black background.",
    ),
    "largest_colour": (
        "the largest shape is {c}.",
        "a large {c} shape and smaller shapes.",
        "a picture whose biggest object is {c}.",
        "a big {c} shape on a black background.",
    ),
    "count": (
        "{c} objects.",
        "there are {c} shapes.",
        "a picture of {c} shapes on a black background.",
        "{c} objects on a black background.",
    ),
}


def zeroshot_tasks(world: World) -> dict[str, tuple[list[str], callable]]:
    """task -> (class names, function scene -> class name or None when the scene is unusable)."""
    counts = [NUMBER_WORDS[k] for k in range(world.min_objects, world.max_objects + 1)]
    return {
        "largest_shape": (list(SHAPES), lambda s: _largest(s).shape if _largest(s) else None),
        "largest_colour": (list(COLOURS), lambda s: _largest(s).colour if _largest(s) else None),
        "count": (counts, lambda s: NUMBER_WORDS[len(s.objects)]),
    }


def write_zeroshot(root: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """Class-balanced image folders: image k of a task has class k mod (number of classes)."""
    summary = {}
    for task, (classes, label) in zeroshot_tasks(world).items():
        out = root / "zeroshot" / task
        out.mkdir(parents=True, exist_ok=True)
        (out / "classnames.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
        (out / "templates.txt").write_text("".join(t + "\n" for t in ZEROSHOT_TEMPLATES[task]), encoding="utf-8")
        per_class, scenes = defaultdict(int), {}
        with split_progress(cfg.n_zeroshot, f"zeroshot/{task}", progress) as bar:
            for i in range(cfg.n_zeroshot):
                rng = item_rng(cfg.seed, f"zeroshot/{task}", i)
                target = classes[i % len(classes)]
                scene = sample_world_scene(
                    rng,
                    world,
                    "zeroshot",
                    cfg.image_size,
                    accept=lambda s, label=label, target=target: label(s) == target,
                )
                save_png(render_scene(scene), out / "test" / target / f"{i:06d}.png")
                scenes[f"test/{target}/{i:06d}.png"] = scene.to_dict()
                per_class[target] += 1
                bar.update()
        write_json(out / "scenes.json", scenes)
        summary[task] = {"classes": len(classes), "images": cfg.n_zeroshot, "per_class": dict(per_class)}
    return summary


def write_eval_splits(root: Path, cfg: ShapesDataConfig, world: World, progress: bool = True) -> dict:
    """Every evaluation split under `root`; returns their part of the data set summary."""
    out = {"retrieval": write_retrieval(root / "retrieval", cfg, world, progress)}
    out.update(write_sugarcrepe(root, cfg, world, progress))
    out["winoground"] = write_winoground(root, cfg, world, progress)
    out["aro"] = write_aro(root, cfg, world, progress)
    out["zeroshot"] = write_zeroshot(root, cfg, world, progress)
    if cfg.n_binding > 0:  # last, from its own seed namespace: the splits above do not change
        out["binding"] = write_binding(root / "binding", cfg, world, progress)
    return out


# ----------------------------------------------------------------------------- checking a data set


def check_splits(root: Path) -> dict:
    """Re-check every caption of a shapes data set from its files alone (manifests and
    `scenes.json`): positives true, negatives (training hard negatives too) false and of the kind
    they are typed as (`vladva.toyworld.negatives.negative_kind`), Winoground
    captions true for exactly their own image with the same words, retrieval captions true for
    their image, binding captions true for their scene and false for its colour swap (the
    paraphrase split is checked by `shapes.check_dataset`). Returns
    `{"checked": n, "problems": [...]}`, each problem naming the file and entry."""
    from vladva.data.manifest import read_manifest

    root = Path(root)
    problems: list[str] = []
    checked = 0

    def scenes_of(folder: Path) -> dict[str, Scene]:
        path = folder / "scenes.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {root} a `vladva data shapes` folder?)")
        return {k: Scene.from_dict(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}

    def expect(ok: bool, where: str, text: str) -> None:
        nonlocal checked
        checked += 1
        if not ok:
            problems.append(f"{where}: {text!r}")

    def truth(text: str, scene: Scene, where: str) -> bool | None:
        try:
            return claim_holds(parse_caption(text), scene)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            return None

    for split in ("train", "val"):
        path = root / f"{split}.jsonl"
        records, _ = read_manifest(path)
        for n, r in enumerate(records, start=1):
            scene = Scene.from_dict(r.meta["scene"])
            for c in r.captions:
                expect(truth(c, scene, f"{path}:{n}") is True and count_tokens(c) <= SHORT_MAX_TOKENS, f"{path}:{n}", c)
            for neg in r.negative_captions + [x for negs in r.caption_negatives for x in negs]:
                expect(truth(neg.text, scene, f"{path}:{n}") is False, f"{path}:{n} negative", neg.text)
            # a typed negative is the edit its kind says: of its own caption, or of some true claim
            for neg, source in [(x, None) for x in r.negative_captions] + [
                (x, cap) for cap, negs in zip(r.captions, r.caption_negatives) for x in negs
            ]:
                if neg.kind is not None:
                    expect(
                        neg.kind in NEGATIVE_KINDS and kind_is_supported(neg.text, neg.kind, scene, source),
                        f"{path}:{n} negative of kind {neg.kind!r}" + (f" of {source!r}" if source else ""),
                        neg.text,
                    )
    folder = root / "retrieval"
    scenes = scenes_of(folder)
    for im in json.loads((folder / "dataset_shapes.json").read_text(encoding="utf-8"))["images"]:
        for s in im["sentences"]:
            expect(
                truth(s["raw"], scenes[im["filename"]], f"{folder}: sentid {s['sentid']}") is True,
                f"{folder}/dataset_shapes.json: sentid {s['sentid']}",
                s["raw"],
            )
    for name, cats in (("sugarcrepe", SUGARCREPE_CATEGORIES), ("sugarcrepe_pp", SUGARCREPE_PP_CATEGORIES)):
        scenes = scenes_of(root / name)
        for cat in cats:
            path = root / name / f"{cat}.json"
            for key, e in json.loads(path.read_text(encoding="utf-8")).items():
                scene, where = scenes[e["filename"]], f"{path}: entry {key}"
                for field in ("caption", "caption2"):
                    if field in e:
                        expect(truth(e[field], scene, where) is True, f"{where} {field}", e[field])
                expect(
                    truth(e["negative_caption"], scene, where) is False,
                    f"{where} negative_caption",
                    e["negative_caption"],
                )
    folder = root / "winoground"
    scenes = scenes_of(folder)
    for n, line in enumerate((folder / "examples.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        x, where = json.loads(line), f"{folder / 'examples.jsonl'}:{n}"
        pair = (scenes[x["image_0"]], scenes[x["image_1"]])
        expect(sorted(tokenize(x["caption_0"])) == sorted(tokenize(x["caption_1"])), f"{where} words", x["caption_1"])
        for k in (0, 1):
            got = [truth(x[f"caption_{k}"], s, where) is True for s in pair]
            expect(got == [k == 0, k == 1], f"{where} caption_{k}", x[f"caption_{k}"])
    folder = root / "aro"
    scenes = scenes_of(folder)
    for name in ("visual_genome_relation.json", "visual_genome_attribution.json"):
        for n, e in enumerate(json.loads((folder / name).read_text(encoding="utf-8"))):
            scene, where = scenes[e["image_path"]], f"{folder / name}: entry {n}"
            expect(truth(e["true_caption"], scene, where) is True, f"{where} true_caption", e["true_caption"])
            expect(truth(e["false_caption"], scene, where) is False, f"{where} false_caption", e["false_caption"])
    folder = root / "binding"
    if (folder / BINDING_ITEMS).is_file():  # absent in data sets written with n_binding 0 or before it existed
        scenes = scenes_of(folder)
        for n, line in enumerate((folder / BINDING_ITEMS).read_text(encoding="utf-8").splitlines(), start=1):
            x, where = json.loads(line), f"{folder / BINDING_ITEMS}:{n}"
            pair = (scenes[Path(x["image"]).name], scenes[Path(x["swap_image"]).name])
            for c in x["captions"]:
                for key, truths in (("caption", [True, False]), ("swap_caption", [False, True])):
                    expect([truth(c[key], s, where) is True for s in pair] == truths, f"{where} {key}", c[key])
    return {"checked": checked, "problems": problems}
