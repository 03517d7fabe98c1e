"""The embedded default data set: synthetic compositional scenes with verified captions.

`generate_shapes_dataset(out_dir, cfg)` writes training/validation manifests (this module:
short and long captions, instructions, hard negatives per record), every evaluation split
(`vladva.toyworld.splits`) in the layouts of docs/data-layouts.md, and the paraphrase split
(`vladva.toyworld.paraphrase_splits`). What items are drawn from (the world, the config, the
per-item random generator) is `vladva.toyworld.world`; the false captions are
`vladva.toyworld.negatives`.

Two worlds (see docs/data.md): "default" (2-3 objects, captions that often name everything) and
"hard" (3-4 objects, training captions naming only one or two objects as alt-text does, and
colour-shape combinations held out of training that appear in the evaluation splits).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from vladva.data.manifest import Record, write_manifest
from vladva.toyworld.captions import (
    LONG_MAX_TOKENS,
    LONG_MIN_TOKENS,
    NUMBER_WORDS,
    SPATIAL,
    count_tokens,
    relation_truth,
    tokenize,
)
from vladva.toyworld.negatives import caption_negatives, negative_captions
from vladva.toyworld.paraphrase_splits import check_paraphrase_splits, write_paraphrase_splits
from vladva.toyworld.scene import Scene, SceneObject, render_scene
from vladva.toyworld.splits import check_splits, write_eval_splits
from vladva.toyworld.world import (
    HARD_HELDOUT,
    WORLDS,
    ShapesDataConfig,
    World,
    item_rng,
    sample_world_scene,
    save_png,
    short_captions,
    split_progress,
)

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
    "paraphrase",
    "binding",
    SUMMARY_FILE,
    CONFIG_FILE,
)

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
    """One training record of `scene`: 1..`max_short_captions` short captions, a long caption and
    the instructions (`meta.qa`), all drawn from `rng` in that order; `meta.scene` for re-checking."""
    thr = cfg.relation_threshold_px
    n_short = rng.randint(1, cfg.max_short_captions)
    captions = short_captions(scene, rng, n_short, partial=world.partial_captions, threshold=thr)
    qa = make_instructions(scene, rng, cfg.n_instructions, thr)
    return Record(
        rid, image, captions, long_caption(scene, rng, thr), {"scene": scene.to_dict(), "qa": [[q, a] for q, a in qa]}
    )


def write_train_split(
    out_dir: Path, split: str, n: int, cfg: ShapesDataConfig, world: World, progress: bool = True
) -> dict:
    """Render `n` scenes to `images/<split>/` and write `<split>.jsonl`. Returns statistics."""
    records = []
    short, long_, qa_count, objects = TokenStats(), TokenStats(), 0, 0
    n_negatives = n_caption_negatives = 0
    kinds: dict[str, Counter] = {"negative_captions": Counter(), "caption_negatives": Counter()}
    combos: set[tuple[str, str]] = set()
    with split_progress(n, split, progress) as bar:
        for i in range(n):
            rng = item_rng(cfg.seed, split, i)
            scene = sample_world_scene(rng, world, split, cfg.image_size)
            rid = f"{i:06d}"
            path = out_dir / "images" / split / f"{rid}.png"
            save_png(render_scene(scene), path)
            rec = make_record(scene, rng, cfg, world, rid, path)
            if cfg.n_train_negatives > 0:  # own seed namespace: the record's other fields do not change
                neg_rng = item_rng(cfg.seed, f"{split}-negatives", i)
                rec.negative_captions = negative_captions(
                    scene, rec.captions, neg_rng, cfg.n_train_negatives, cfg.relation_threshold_px, world
                )
                n_negatives += len(rec.negative_captions)
                kinds["negative_captions"].update(x.kind_name for x in rec.negative_captions)
            if cfg.n_caption_negatives > 0:
                cneg_rng = item_rng(cfg.seed, f"{split}-caption-negatives", i)
                rec.caption_negatives = caption_negatives(
                    scene, rec.captions, cneg_rng, cfg.n_caption_negatives, cfg.relation_threshold_px, world
                )
                n_caption_negatives += sum(map(len, rec.caption_negatives))
                kinds["caption_negatives"].update(x.kind_name for negs in rec.caption_negatives for x in negs)
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
        # negatives per kind (vladva.toyworld.negatives.NEGATIVE_KINDS)
        "negative_kinds": {k: dict(sorted(c.items())) for k, c in kinds.items()},
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
    summary.update(write_eval_splits(out_dir, cfg, world, progress))
    if cfg.paraphrase:
        summary["paraphrase"] = write_paraphrase_splits(out_dir, cfg, world, progress)
    # The summary is written last: its presence marks a complete data set. No timings in it, so
    # the same config gives the same bytes.
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary["skipped"] = False
    summary["replaced"] = replaced
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


# The world and config names are re-exported: callers of `generate_shapes_dataset` need them.
__all__ = [
    "HARD_HELDOUT",
    "WORLDS",
    "ShapesDataConfig",
    "World",
    "generate_shapes_dataset",
    "long_caption",
    "make_instructions",
    "make_record",
    "position_phrase",
    "write_train_split",
]


def check_dataset(root: Path) -> dict:
    """Re-check every caption of a shapes data set from its files alone: the training manifests and
    evaluation splits (`splits.check_splits`) and the paraphrase split through the claims stored
    beside its captions (`paraphrase_splits.check_paraphrase_splits`). Returns
    `{"checked": n, "problems": [...]}`, each problem naming the file and entry."""
    out = check_splits(root)
    n, more = check_paraphrase_splits(root)
    return {"checked": out["checked"] + n, "problems": out["problems"] + more}
