"""The paraphrase split: evaluation captions in words and sentence forms no training caption uses.

`DATA/paraphrase/` holds three suites in the public layouts, on their own images (own seed
namespaces `paraphrase/<suite>`, so every other file of the data set is the same with or without
them):

- `retrieval/`: Karpathy JSON of identifying captions (as `DATA/retrieval/`), caption_truth.json;
- `sugarcrepe/`: replace_obj, replace_att, replace_rel, swap_obj, swap_att;
- `winoground/`: examples.jsonl, two images and two captions with the same words.

Every caption is made as a `Claim` from the scene with the code that makes the in-vocabulary
splits, checked with `claim_holds` (positives true, negatives false), and only then worded by
`paraphrase.render_paraphrase`. `claims.json` in each folder stores, beside every caption, its
claim, its form and its in-vocabulary rendering (`canonical`), so `vladva data check` re-checks
the split without parsing paraphrased text. The data set summary reports the share of caption
tokens never seen in training and, for a model tokenizer, its unknown-token rate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from vladva.data.manifest import parse_negatives
from vladva.toyworld.captions import (
    SHORT_MAX_TOKENS,
    Claim,
    Style,
    claim_holds,
    count_tokens,
    parse_caption,
    render_claim,
    tokenize,
)
from vladva.toyworld.negatives import hard_negative
from vladva.toyworld.paraphrase import (
    FRAMES,
    ParaphraseForm,
    claim_from_dict,
    claim_to_dict,
    fits,
    random_form,
    render_paraphrase,
)
from vladva.toyworld.scene import Scene, render_scene
from vladva.toyworld.splits import (
    SUGARCREPE_PP_CATEGORIES,
    WINOGROUND_SWAPS,
    karpathy_image,
    karpathy_sentence,
    scene_signature,
    true_images,
    winoground_claims,
    write_json,
)
from vladva.toyworld.world import (
    ShapesDataConfig,
    World,
    identifying_claim,
    item_rng,
    pair_claim,
    sample_world_scene,
    save_png,
    split_progress,
)

FOLDER = "paraphrase"
CLAIMS_FILE = "claims.json"
# The replace and swap categories (as SugarCrepe++): each changes what is said, not what is absent.
CATEGORIES = SUGARCREPE_PP_CATEGORIES
SUITES = ("retrieval", "sugarcrepe", "winoground")


def _frames(*claims: Claim) -> tuple[str, ...]:
    """The sentence forms that can say every one of `claims`."""
    return tuple(f for f in FRAMES if all(fits(c, ParaphraseForm(frame=f)) for c in claims))


def claim_entry(claim: Claim, form: ParaphraseForm) -> dict:
    """What claims.json stores for one caption: the text, its in-vocabulary rendering, the claim
    and the form. Raises if the in-vocabulary rendering does not read back to the claim."""
    canonical = render_claim(claim, Style())
    if parse_caption(canonical).meaning() != claim.meaning():
        raise AssertionError(f"{canonical!r} does not read back to {claim}")
    return {
        "text": render_paraphrase(claim, form),
        "canonical": canonical,
        "claim": claim_to_dict(claim),
        "form": form.to_dict(),
    }


# ----------------------------------------------------------------------------- writing


def write_paraphrase_retrieval(out: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """`n_retrieval` new images with `captions_per_image` identifying captions each (every object
    with size, colour and shape, the count, one or two relations), as `DATA/retrieval/`."""
    thr = cfg.relation_threshold_px
    scenes: list[Scene] = []
    seen: set[tuple] = set()
    images, claims, entries = [], [], {}
    with split_progress(cfg.n_retrieval, "paraphrase/retrieval", progress) as bar:
        for i in range(cfg.n_retrieval):
            rng = item_rng(cfg.seed, f"{FOLDER}/retrieval", i)
            scene = sample_world_scene(
                rng, world, "paraphrase", cfg.image_size, accept=lambda s: scene_signature(s) not in seen
            )
            seen.add(scene_signature(scene))
            scenes.append(scene)
            name = f"{i:06d}.png"
            save_png(render_scene(scene), out / "images" / name)
            made: list[tuple[Claim, ParaphraseForm, str]] = []
            for _ in range(50 * cfg.captions_per_image):
                claim = identifying_claim(scene, rng, thr)
                form = random_form(rng, _frames(claim))
                text = render_paraphrase(claim, form)
                if claim_holds(claim, scene, thr) is not True or count_tokens(text) > SHORT_MAX_TOKENS:
                    continue
                if all(text != t for _, _, t in made):
                    made.append((claim, form, text))
                if len(made) == cfg.captions_per_image:
                    break
            if not made:
                raise RuntimeError(f"paraphrase retrieval image {i}: no caption under {SHORT_MAX_TOKENS + 1} tokens")
            while len(made) < cfg.captions_per_image:  # a scene with few wordings repeats one
                made.append(made[len(made) % len(made)])
            sents = []
            for claim, form, text in made:
                sid = len(claims)
                claims.append(claim)
                entries[str(sid)] = claim_entry(claim, form)
                sents.append(karpathy_sentence(sid, i, text))
            images.append(karpathy_image(i, name, sents))
            bar.update()
    write_json(out / "dataset_shapes_paraphrase.json", {"dataset": "shapes-paraphrase", "images": images})
    write_json(out / "scenes.json", {im["filename"]: s.to_dict() for im, s in zip(images, scenes)})
    write_json(out / CLAIMS_FILE, entries)
    index: dict[tuple, set[int]] = defaultdict(set)
    for i, s in enumerate(scenes):
        for o in s.objects:
            index[(o.shape, o.colour, o.size)].add(i)
    truth, exactly_one = {}, 0
    for sid, claim in enumerate(claims):
        ids = true_images(claim, scenes, index, thr)
        truth[str(sid)] = {"count": len(ids), "images": ids}
        exactly_one += len(ids) == 1
    summary = {
        "images": len(scenes),
        "captions": len(claims),
        "fraction_true_for_exactly_one_image": round(exactly_one / max(1, len(claims)), 4),
    }
    write_json(out / "caption_truth.json", {"summary": summary, "captions": truth})
    return summary


def write_paraphrase_sugarcrepe(out: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """`n_sugarcrepe` new scenes, at most one example per scene per category: a true two-object
    claim and its SugarCrepe edit (`negatives.hard_negative`, false for the scene), both worded in
    one paraphrase form, so a swap keeps every word."""
    thr = cfg.relation_threshold_px
    items = {c: {} for c in CATEGORIES}
    entries = {c: {} for c in CATEGORIES}
    scenes = {}
    with split_progress(cfg.n_sugarcrepe, "paraphrase/sugarcrepe", progress) as bar:
        for i in range(cfg.n_sugarcrepe):
            rng = item_rng(cfg.seed, f"{FOLDER}/sugarcrepe", i)
            scene = sample_world_scene(rng, world, "paraphrase", cfg.image_size)
            name = f"{i:06d}.png"
            scenes[name] = scene.to_dict()
            save_png(render_scene(scene), out / "images" / name)
            for category in CATEGORIES:
                made = hard_negative(category, pair_claim(scene, rng, thr, full=True), scene, rng, thr)
                if made is None:
                    continue
                pos, neg = made
                form = random_form(rng, _frames(pos, neg))
                pos_text, neg_text = render_paraphrase(pos, form), render_paraphrase(neg, form)
                if (
                    pos_text == neg_text
                    or claim_holds(pos, scene, thr) is not True
                    or claim_holds(neg, scene, thr) is not False
                    or max(count_tokens(pos_text), count_tokens(neg_text)) > SHORT_MAX_TOKENS
                ):
                    continue
                key = str(len(items[category]))
                items[category][key] = {"filename": name, "caption": pos_text, "negative_caption": neg_text}
                entries[category][key] = {"caption": claim_entry(pos, form), "negative_caption": claim_entry(neg, form)}
            bar.update()
    for c in CATEGORIES:
        write_json(out / f"{c}.json", items[c])
    write_json(out / "scenes.json", scenes)
    write_json(out / CLAIMS_FILE, entries)
    return {c: len(v) for c, v in items.items()}


def write_paraphrase_winoground(out: Path, cfg: ShapesDataConfig, world: World, progress: bool) -> dict:
    """`n_winoground` pairs as `DATA/winoground/` (colour, shape, size and position swaps in equal
    shares): the two claims are worded in one form with definite articles, so the two captions
    have exactly the same words; each is true for its own image and false for the other."""
    thr = cfg.relation_threshold_px
    swaps = list(WINOGROUND_SWAPS)
    lines, entries, by_swap, scenes = [], {}, defaultdict(int), {}
    with split_progress(cfg.n_winoground, "paraphrase/winoground", progress) as bar:
        for i in range(cfg.n_winoground):
            rng = item_rng(cfg.seed, f"{FOLDER}/winoground", i)
            swap = swaps[i % len(swaps)]
            for _ in range(200):
                scene = sample_world_scene(rng, world, "paraphrase", cfg.image_size)
                made = winoground_claims(scene, swap, rng, thr)
                if made is None:
                    continue
                c0, c1, scene_1 = made
                form = random_form(rng, _frames(c0, c1), definite=True)
                t0, t1 = render_paraphrase(c0, form), render_paraphrase(c1, form)
                if (
                    t0 != t1
                    and sorted(tokenize(t0)) == sorted(tokenize(t1))
                    and [claim_holds(c0, s, thr) for s in (scene, scene_1)] == [True, False]
                    and [claim_holds(c1, s, thr) for s in (scene, scene_1)] == [False, True]
                ):
                    break
            else:
                raise RuntimeError(f"paraphrase winoground example {i}: no scene gave a valid {swap} swap")
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
            entries[str(i)] = {"caption_0": claim_entry(c0, form), "caption_1": claim_entry(c1, form)}
            by_swap[swap] += 1
            bar.update()
    out.mkdir(parents=True, exist_ok=True)
    (out / "examples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    write_json(out / "scenes.json", scenes)
    write_json(out / CLAIMS_FILE, entries)
    return {"examples": len(lines), "by_swap": dict(by_swap)}


# ----------------------------------------------------------------------------- what is new in the words


def training_texts(root: Path) -> Iterator[str]:
    """Every text of the train/val manifests under `root`: short captions, long captions, hard
    negatives (both kinds), instruction questions and answers. Reads the JSON lines directly:
    only the texts matter here, not the manifest reader's checks of every record and image."""
    for split in ("train", "val"):
        with open(Path(root) / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                yield from r.get("captions", [])
                if r.get("long_caption"):
                    yield r["long_caption"]
                negative_captions, caption_negatives = parse_negatives(r, len(r.get("captions", [])))
                yield from (x.text for x in negative_captions)
                for negs in caption_negatives:
                    yield from (x.text for x in negs)
                for qa in r.get("meta", {}).get("qa", []):
                    yield from qa


def training_vocabulary(root: Path) -> set[str]:
    """The lower-cased words and punctuation marks (`captions.tokenize`) of `training_texts`."""
    # Tokens never span whitespace, so tokenizing the distinct whitespace-separated chunks (a few
    # hundred) gives the same set as tokenizing ~5 million tokens of text, in a fraction of the time.
    chunks: set[str] = set()
    for text in training_texts(root):
        chunks.update(text.lower().split())
    return {t for chunk in chunks for t in tokenize(chunk)}


def paraphrase_texts(root: Path) -> dict[str, list[str]]:
    """`{suite: every caption}` of `root/paraphrase/` (negatives included), from claims.json."""
    folder = Path(root) / FOLDER
    out: dict[str, list[str]] = {}
    for suite in SUITES:
        path = folder / suite / CLAIMS_FILE
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if suite == "retrieval":
            out[suite] = [e["text"] for e in data.values()]
        elif suite == "sugarcrepe":
            out[suite] = [e[k]["text"] for cat in data.values() for e in cat.values() for k in e]
        else:
            out[suite] = [e[k]["text"] for e in data.values() for k in e]
    return out


def unseen_token_stats(texts: dict[str, list[str]], vocabulary: set[str]) -> dict:
    """Per suite and over all: the share of caption tokens (`captions.tokenize`: lower-cased words
    and punctuation) and of word tokens alone that are absent from `vocabulary`, and which of the
    tokens used were seen."""

    def stats(items: list[str]) -> dict:
        toks = [t for x in items for t in tokenize(x)]
        words = [t for t in toks if t.isalnum()]
        return {
            "captions": len(items),
            "tokens": len(toks),
            "unseen_fraction": round(sum(t not in vocabulary for t in toks) / max(1, len(toks)), 4),
            "word_unseen_fraction": round(sum(t not in vocabulary for t in words) / max(1, len(words)), 4),
        }

    everything = [x for items in texts.values() for x in items]
    used = {t for x in everything for t in tokenize(x)}
    return {
        **{suite: stats(items) for suite, items in texts.items()},
        "all": stats(everything),
        "seen_tokens_used": sorted(used & vocabulary),
    }


def tokenizer_stats(tokenizer_name: str, texts: dict[str, list[str]], in_vocabulary: list[str]) -> dict | None:
    """The unknown-token rate of the paraphrase captions (and, for contrast, of the in-vocabulary
    retrieval captions) against a model's tokenizer; None when `tokenizer_name` is empty, or is
    "default" and no base is shipped."""
    from vladva.data.vocab import load_tokenizer, unknown_tokens

    if not tokenizer_name:
        return None
    try:
        tok = load_tokenizer(tokenizer_name)
    except FileNotFoundError:
        if tokenizer_name == "default":
            return None
        raise
    rate, lost = unknown_tokens(tok, [x for items in texts.values() for x in items])
    in_rate, _ = unknown_tokens(tok, in_vocabulary)
    return {
        "tokenizer": tokenizer_name,
        "unknown_token_rate": round(rate, 4),
        "most_lost_words": [[w, n] for w, n in lost.most_common(15)],
        "in_vocabulary_retrieval_unknown_token_rate": round(in_rate, 4),
    }


def write_paraphrase_splits(root: Path, cfg: ShapesDataConfig, world: World, progress: bool = True) -> dict:
    """Every paraphrase suite under `root/paraphrase/`, then the token statistics (the train/val
    manifests must already be written under `root`). Returns the summary's `paraphrase` part."""
    folder = Path(root) / FOLDER
    out = {
        "retrieval": write_paraphrase_retrieval(folder / "retrieval", cfg, world, progress),
        "sugarcrepe": write_paraphrase_sugarcrepe(folder / "sugarcrepe", cfg, world, progress),
        "winoground": write_paraphrase_winoground(folder / "winoground", cfg, world, progress),
    }
    texts = paraphrase_texts(root)
    out["unseen_in_training"] = unseen_token_stats(texts, training_vocabulary(root))
    in_vocabulary = []
    retrieval_json = sorted((Path(root) / "retrieval").glob("dataset_*.json"))
    if retrieval_json:
        images = json.loads(retrieval_json[0].read_text(encoding="utf-8"))["images"]
        in_vocabulary = [s["raw"] for im in images for s in im["sentences"]]
    tok = tokenizer_stats(cfg.paraphrase_tokenizer, texts, in_vocabulary)
    if tok is not None:
        out["tokenizer"] = tok
    return out


# ----------------------------------------------------------------------------- checking


def check_paraphrase_splits(root: Path) -> tuple[int, list[str]]:
    """Re-check `root/paraphrase/` from its files alone: every caption is its stored claim in its
    stored form, the claim's in-vocabulary rendering reads back to it, positives are true for
    their image and negatives false, Winoground captions true for exactly their own image with
    the same words. Returns `(checks, problems)`; nothing when the folder is absent."""
    folder = Path(root) / FOLDER
    checked, problems = 0, []
    if not folder.is_dir():
        return 0, []

    def load(path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {root} a `vladva data shapes` folder?)")
        return json.loads(path.read_text(encoding="utf-8"))

    def verify(entry: dict, text: str, scene: Scene, want: bool, where: str) -> Claim | None:
        """One caption: worded from its claim, canonical reads back, truth as `want`."""
        nonlocal checked
        checked += 1
        try:
            claim = claim_from_dict(entry["claim"])
            said = render_paraphrase(claim, ParaphraseForm.from_dict(entry["form"]))
            canonical = parse_caption(entry["canonical"]).meaning() == claim.meaning()
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{where}: unreadable claim ({e})")
            return None
        if said != text or entry.get("text") != text:
            problems.append(f"{where}: {text!r} is not its claim in its form ({said!r})")
        elif not canonical:
            problems.append(f"{where}: canonical {entry['canonical']!r} says something else than the claim")
        elif claim_holds(claim, scene) is not want:
            problems.append(f"{where}: {text!r} should be {'true' if want else 'false'} ({entry['canonical']!r})")
        return claim

    sub = folder / "retrieval"
    scenes = {k: Scene.from_dict(v) for k, v in load(sub / "scenes.json").items()}
    claims = load(sub / CLAIMS_FILE)
    for im in load(sub / "dataset_shapes_paraphrase.json")["images"]:
        for s in im["sentences"]:
            where = f"{sub}: sentid {s['sentid']}"
            entry = claims.get(str(s["sentid"]))
            if entry is None:
                problems.append(f"{where}: no entry in {CLAIMS_FILE}")
                continue
            verify(entry, s["raw"], scenes[im["filename"]], True, where)
    sub = folder / "sugarcrepe"
    scenes = {k: Scene.from_dict(v) for k, v in load(sub / "scenes.json").items()}
    claims = load(sub / CLAIMS_FILE)
    for cat in CATEGORIES:
        path = sub / f"{cat}.json"
        for key, e in load(path).items():
            where = f"{path}: entry {key}"
            stored = claims.get(cat, {}).get(key)
            if stored is None:
                problems.append(f"{where}: no entry in {CLAIMS_FILE}")
                continue
            for field, want in (("caption", True), ("negative_caption", False)):
                verify(stored[field], e[field], scenes[e["filename"]], want, f"{where} {field}")
    sub = folder / "winoground"
    scenes = {k: Scene.from_dict(v) for k, v in load(sub / "scenes.json").items()}
    claims = load(sub / CLAIMS_FILE)
    for n, line in enumerate((sub / "examples.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        x, where = json.loads(line), f"{sub / 'examples.jsonl'}:{n}"
        stored = claims.get(str(x["id"]))
        if stored is None:
            problems.append(f"{where}: no entry in {CLAIMS_FILE}")
            continue
        checked += 1
        if sorted(tokenize(x["caption_0"])) != sorted(tokenize(x["caption_1"])):
            problems.append(f"{where} words: {x['caption_0']!r} / {x['caption_1']!r}")
        pair = (scenes[x["image_0"]], scenes[x["image_1"]])
        for k in (0, 1):
            claim = verify(stored[f"caption_{k}"], x[f"caption_{k}"], pair[k], True, f"{where} caption_{k}")
            if claim is not None:
                checked += 1
                if claim_holds(claim, pair[1 - k]) is not False:
                    problems.append(f"{where} caption_{k}: {x[f'caption_{k}']!r} should be false for image_{1 - k}")
    return checked, problems
