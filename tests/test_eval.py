"""Evaluation harness: metrics on hand-made scores, loaders on fixtures in the real benchmark
layouts, the embedding cache, reports and the `vladva eval` / `vladva report` commands.

The end-to-end checks use `ColourWordsEmbedder`: images -> histogram of palette colours,
texts -> counts of colour words, both in one 8-dim space. It is a perfect bag of words, so its
scores are known in advance: right on "replace attribute" (a colour that is not there), tied
and therefore wrong on every swap, and perfect on retrieval when captions name different colours.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vladva import model_kinds
from vladva.cli import app
from vladva.eval import benchmarks as B
from vladva.eval import metrics as M
from vladva.eval.benchmarks.aro import load_aro
from vladva.eval.benchmarks.retrieval import load_karpathy
from vladva.eval.benchmarks.sugarcrepe import load_sugarcrepe
from vladva.eval.benchmarks.sugarcrepe_pp import load_sugarcrepe_pp
from vladva.eval.benchmarks.winoground import load_winoground
from vladva.eval.benchmarks.zeroshot import load_zeroshot, zeroshot_task_dirs
from vladva.eval.cache import CachedEncoder
from vladva.eval.loaders import BenchmarkFormatError, ImageRef, PairSet, read_json, required_text
from vladva.eval.models import LoadedModel, load_model, parse_model_arg
from vladva.eval.plot import chart_bars
from vladva.eval.report import as_report, write_report
from vladva.eval.runner import EvalConfig, run_evaluation
from vladva.eval.scoring import score_pair_sets
from vladva.model_kinds import ModelSpecError, register_model_kind
from vladva.toyworld.scene import COLOURS, Scene, SceneObject, render_scene

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
PALETTE = list(COLOURS)


class ColourWordsEmbedder:
    """Deterministic toy Embedder over the shapes world; counts how many items it encoded."""

    name = "colour-words"

    def __init__(self):
        self.calls = {"images": 0, "texts": 0}

    def encode_images(self, images, batch_size=32, show_progress=False):
        self.calls["images"] += len(images)
        pal = np.array([COLOURS[c] for c in PALETTE], dtype=np.float32)
        rows = []
        for im in images:
            px = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3)
            dist = ((px[:, None, :] - pal[None]) ** 2).sum(-1)
            solid = dist.min(1) < 30**2  # anti-aliased edges and the black background do not count
            rows.append(np.bincount(dist.argmin(1)[solid], minlength=len(PALETTE)))
        return torch.nn.functional.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=-1)

    def encode_texts(self, texts, batch_size=64, show_progress=False):
        self.calls["texts"] += len(texts)
        rows = [[t.lower().replace(".", " ").split().count(c) for c in PALETTE] for t in texts]
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The fixture benchmarks copied to a temp folder, with their PNGs rendered from scenes.json."""
    root = tmp_path_factory.mktemp("bench")
    shutil.copytree(FIXTURES, root, dirs_exist_ok=True)
    scenes = json.loads((root / "scenes.json").read_text())
    for rel, objects in scenes.items():
        if rel.startswith("_"):
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        render_scene(Scene(tuple(SceneObject(*o) for o in objects), 32)).save(path)
    return root


def _toy_model(name="toy", embedder=None) -> LoadedModel:
    return LoadedModel(name, "toy:", embedder or ColourWordsEmbedder(), identity=f"toy|{name}", params=8)


@pytest.fixture
def own_model_kinds(monkeypatch):
    """A copy of the model-kind registry, so kinds a test registers vanish after it."""
    monkeypatch.setattr(model_kinds, "_KINDS", dict(model_kinds._KINDS))


@pytest.fixture
def own_benchmarks(monkeypatch):
    """A copy of the (discovered) benchmark registry, so benchmarks a test registers vanish after it."""
    B.benchmarks()
    monkeypatch.setattr(B, "_REGISTRY", dict(B._REGISTRY))


# ----------------------------------------------------------------------------- metrics


def test_retrieval_recalls_by_hand_with_multi_caption_images():
    # 3 images x 2 captions (caption j belongs to image j // 2).
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.2, 0.0, 0.0],  # image 0: best caption is its own -> i2t rank 0
            [0.5, 0.6, 0.1, 0.2, 0.3, 0.0],  # image 1: best own caption (0.2) is beaten by 0.5, 0.6, 0.3 -> rank 3
            [0.1, 0.1, 0.1, 0.1, 0.7, 0.4],  # image 2: own caption 0.7 is the best -> rank 0
        ]
    )
    caption_image = torch.tensor([0, 0, 1, 1, 2, 2])
    ranks = M.best_positive_rank(sim, torch.nn.functional.one_hot(caption_image, 3).T.bool())
    assert ranks.tolist() == [0, 3, 0]
    r = M.retrieval_recalls(sim, caption_image, ks=(1, 2, 5))
    assert r["i2t_R@1"] == pytest.approx(200 / 3) and r["i2t_R@5"] == 100
    # text->image, column by column: c0 own 0.9 is best -> 0; c1 own 0.1 < 0.6 and ties 0.1 -> 2;
    # c2 own 0.1 < 0.8 and ties 0.1 -> 2; c3 own 0.2 ties image 0's 0.2 -> 1 (against the model); c4, c5 -> 0.
    t2i_ranks = M.best_positive_rank(sim.T, torch.nn.functional.one_hot(caption_image, 3).bool())
    assert t2i_ranks.tolist() == [0, 2, 2, 1, 0, 0]
    assert r["t2i_R@1"] == 50 and r["t2i_R@2"] == pytest.approx(400 / 6) and r["t2i_R@5"] == 100


def test_ties_count_against_the_model():
    sim = torch.zeros(4, 4)  # a constant embedder
    r = M.retrieval_recalls(sim, torch.arange(4), ks=(1, 3, 4))
    assert r["i2t_R@1"] == 0 and r["i2t_R@3"] == 0 and r["i2t_R@4"] == 100  # 3 negatives tie with the positive
    assert M.pair_accuracy(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.1])) == 50


def test_valid_text_to_image_counts_any_image_the_caption_is_true_for():
    sim = torch.tensor([[0.1, 0.9], [0.8, 0.2]])  # caption 0 prefers image 1, caption 1 prefers image 0
    true_for = torch.tensor([[True, True], [False, True]])  # caption 0 is also true for image 1
    r = M.retrieval_recalls(sim, torch.tensor([0, 1]), ks=(1,), caption_true_for=true_for)
    assert r["t2i_R@1"] == 0 and r["t2i_valid_R@1"] == 50


def test_winoground_scores_on_hand_made_cases():
    # sim[e, caption, image]
    sim = torch.tensor(
        [
            [[0.9, 0.1], [0.2, 0.8]],  # both right: text, image, group
            [[0.5, 0.4], [0.6, 0.7]],  # image 0 prefers caption 1 -> text fails; each caption prefers its image
            [[0.5, 0.5], [0.1, 0.9]],  # caption 0 ties across images -> image fails; text ok
            [[0.1, 0.9], [0.9, 0.1]],  # all wrong
        ]
    )
    s = M.winoground_scores(sim)
    assert s == {"text": 50.0, "image": 50.0, "group": 25.0}


def test_sugarcrepe_pp_and_aro_macro_micro_by_hand():
    s = M.sugarcrepe_pp_scores(
        img_p1=torch.tensor([0.9, 0.9, 0.3]),
        img_p2=torch.tensor([0.8, 0.2, 0.3]),
        img_neg=torch.tensor([0.5, 0.5, 0.1]),
        p1_p2=torch.tensor([0.9, 0.9, 0.4]),
        p1_neg=torch.tensor([0.5, 0.95, 0.2]),
        p2_neg=torch.tensor([0.5, 0.1, 0.4]),
    )
    assert s["ITT"] == pytest.approx(200 / 3) and s["TOT"] == pytest.approx(100 / 3)
    pos, neg = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    r = M.macro_micro_accuracy(pos, neg, ["on", "on", "on", "under"])
    assert r["micro"] == 75 and r["macro"] == pytest.approx((200 / 3 + 100) / 2)


def test_zeroshot_topk_and_prototypes_by_hand():
    logits = torch.tensor(
        [[0.9, 0.1, 0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]]
    )
    labels = torch.tensor([0, 1, 1])
    # sample 1: class 1 is 5th best -> top5 hit; sample 2: class 1 ties with class 0 -> rank 1.
    assert M.topk_accuracy(logits, labels, (1, 2, 5)) == {
        "top1": pytest.approx(100 / 3),
        "top2": pytest.approx(200 / 3),
        "top5": 100.0,
    }
    assert (
        M.zeroshot_ks(1000) == (1, 5)
        and M.zeroshot_ks(5) == (1, 4)
        and M.zeroshot_ks(3) == (1, 2)
        and M.zeroshot_ks(2) == (1,)
    )
    proto = M.class_prototypes(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert torch.allclose(proto, torch.tensor([[2**-0.5, 2**-0.5]]))


# ----------------------------------------------------------------------------- loaders


def test_karpathy_loader_keeps_split_and_reads_caption_truth(bench):
    rs = load_karpathy(bench / "retrieval" / "dataset_tiny.json")
    assert [r.path.name for r in rs.images] == ["000000.png", "000001.png", "000002.png"]  # the val image is dropped
    assert len(rs.captions) == 6 and rs.caption_image == [0, 0, 1, 1, 2, 2]
    assert rs.caption_true_for == [[0], [0], [1], [1], [2], [2]] and rs.name == "tiny"
    assert rs.image_ids == ["0", "1", "2"]  # Karpathy imgids, kept for an index's record ids
    assert load_karpathy(bench / "retrieval" / "dataset_tiny.json", split="val").image_ids == ["3"]
    # A user's COCO copy: images elsewhere, found through --images.
    moved = load_karpathy(bench / "retrieval" / "dataset_tiny.json", image_root=bench / "retrieval")
    assert moved.images[0].path == bench / "retrieval" / "images" / "000000.png"


def test_compositional_loaders(bench):
    sc = {s.name: s for s in load_sugarcrepe(bench / "sugarcrepe")}
    assert set(sc) == {"replace_att", "swap_att"}
    assert sc["replace_att"].negatives == ["a green circle", "a purple cross"]
    pp = load_sugarcrepe_pp(bench / "sugarcrepe_pp")
    assert [p.name for p in pp] == ["replace_att", "swap_att"] and pp[0].captions2[0].startswith("a blue square")
    wg = load_winoground(bench / "winoground")
    assert wg.images_1[0].path.name == "ex0_img_1.png" and wg.tags == ["Object"]
    aro = {s.name: s for s in load_aro(bench / "aro")}
    assert aro["relation"].groups == ["left of", "left of", "on"]
    assert aro["attribution"].groups == ["red_blue", "red_blue"]
    crop = aro["attribution"].images[0].load()
    assert crop.size == (16, 32)
    zs = load_zeroshot(zeroshot_task_dirs(bench / "zeroshot")[0])
    assert zs.classnames == ["red", "green", "blue"] and zs.labels == [2, 2, 1, 0]


def test_loader_errors_name_file_entry_and_key(bench, tmp_path):
    shutil.copytree(bench / "sugarcrepe", tmp_path / "sc")
    (tmp_path / "sc" / "swap_att.json").write_text(json.dumps({"7": {"filename": "000000.png", "caption": "x"}}))
    with pytest.raises(BenchmarkFormatError, match=r"swap_att.json: entry 7: missing key 'negative_caption'"):
        load_sugarcrepe(tmp_path / "sc")
    (tmp_path / "sc" / "swap_att.json").write_text(
        json.dumps({"0": {"filename": "nope.png", "caption": "x", "negative_caption": "y"}})
    )
    with pytest.raises(BenchmarkFormatError, match=r"entry 0: image not found: .*nope.png"):
        load_sugarcrepe(tmp_path / "sc")
    bad = tmp_path / "wg"
    shutil.copytree(bench / "winoground", bad)
    (bad / "examples.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(BenchmarkFormatError, match=r"examples.jsonl:1: missing key 'image_0'"):
        load_winoground(bad)


# ----------------------------------------------------------------------------- cache


def test_cache_is_content_addressed(bench, tmp_path):
    """Keys are the model identity + the bytes of each image (and its crop box) / each text: the
    same picture under another path, in another category or in a rerun is not encoded again; an
    edited file or another model is."""
    shutil.copytree(bench / "sugarcrepe", tmp_path / "sc")
    sets = load_sugarcrepe(tmp_path / "sc")  # replace_att: 000000, 000001; swap_att: 000000
    toy, cache = ColourWordsEmbedder(), tmp_path / "cache"
    enc = CachedEncoder(toy, "toy", cache, batch_size=2)
    first = enc.images(sets[0].images)
    assert toy.calls["images"] == 2
    enc.images(sets[1].images)  # another category, the same file: known already
    assert toy.calls["images"] == 2 and enc.stats.cache_hits == 1
    shutil.copy(tmp_path / "sc" / "images" / "000000.png", tmp_path / "copy.png")
    enc.images([ImageRef(tmp_path / "copy.png")])  # the same bytes under another path
    assert toy.calls["images"] == 2
    again = CachedEncoder(toy, "toy", cache).images(sets[0].images)  # a new run: from disk
    assert toy.calls["images"] == 2 and torch.equal(first, again)
    CachedEncoder(toy, "other-model", cache).images(sets[0].images)
    assert toy.calls["images"] == 4  # another model identity is another key
    render_scene(Scene((SceneObject("circle", "green", "large", 16, 16),), 32)).save(
        tmp_path / "sc" / "images" / "000000.png"
    )
    changed = CachedEncoder(toy, "toy", cache).images(sets[0].images)
    assert toy.calls["images"] == 5 and not torch.equal(changed[0], first[0]) and torch.equal(changed[1], first[1])
    box = ImageRef(tmp_path / "copy.png", (0, 0, 16, 32))
    CachedEncoder(toy, "toy", cache).images([box, box, ImageRef(tmp_path / "copy.png")])
    assert toy.calls["images"] == 6  # a crop is its own item; the whole image is known
    CachedEncoder(toy, "toy", cache).texts(["a red x", "a red x", "b"])
    CachedEncoder(toy, "toy", cache).texts(["b", "a red x"])
    assert toy.calls["texts"] == 2


class RecordingEmbedder(ColourWordsEmbedder):
    """Also records the pixels of every image and every text it encodes."""

    def __init__(self):
        super().__init__()
        self.seen = {"images": [], "texts": []}

    def encode_images(self, images, batch_size=32, show_progress=False):
        self.seen["images"] += [(im.size, im.tobytes()) for im in images]
        return super().encode_images(images, batch_size, show_progress)

    def encode_texts(self, texts, batch_size=64, show_progress=False):
        self.seen["texts"] += list(texts)
        return super().encode_texts(texts, batch_size, show_progress)


def test_every_image_and_text_is_encoded_once_across_categories_and_suites(bench, tmp_path):
    """All six suites on the fixtures, whose images repeat across suites (the red-circle-and-blue-square
    scene is in retrieval, SugarCrepe, SugarCrepe++, Winoground and ARO): 7 distinct pictures + 2 ARO
    crops (the third ARO box is the whole picture) = 9 images encoded, no picture or text twice; a
    rerun encodes nothing."""
    toy = RecordingEmbedder()
    model = LoadedModel("toy", "toy", toy, "toy-identity")
    cfg = EvalConfig(data=str(bench), cache_dir=str(tmp_path / "cache"), show_progress=False)
    first = run_evaluation([model], cfg, log=lambda _: None)["models"][0]
    assert len(first["metrics"]) == 6
    assert first["encoded"]["images"] == len(toy.seen["images"]) == 9
    assert len(set(toy.seen["images"])) == len(toy.seen["images"])
    assert len(set(toy.seen["texts"])) == len(toy.seen["texts"]) == first["encoded"]["texts"]
    requested = first["encoded"]["requested"]
    assert requested["images"] > 9 and requested["texts"] > len(toy.seen["texts"])
    again = run_evaluation([model], cfg, log=lambda _: None)["models"][0]
    assert again["encoded"]["images"] == again["encoded"]["texts"] == 0
    assert again["metrics"] == first["metrics"]
    no_disk = EvalConfig(data=str(bench), use_cache=False, show_progress=False)
    memory_only = run_evaluation([LoadedModel("toy", "toy", RecordingEmbedder(), "x")], no_disk, log=lambda _: None)
    assert memory_only["models"][0]["encoded"]["images"] == 9  # deduplicated without a disk cache too
    assert not (tmp_path / "x").exists()


def test_cache_survives_a_corrupt_file_and_a_full_disk(bench, tmp_path, monkeypatch, caplog):
    """A truncated cache file is ignored with a warning (its items are encoded again); a write that
    fails with ENOSPC is reported and skipped, and the embeddings are still returned."""
    import errno
    import logging

    import vladva.eval.cache as cache_mod

    refs = load_sugarcrepe(bench / "sugarcrepe")[0].images
    toy, cache = ColourWordsEmbedder(), tmp_path / "cache"
    expected = CachedEncoder(toy, "toy", cache).images(refs)
    (stored,) = (cache / cache_mod.model_key("toy")).glob("images-*.safetensors")
    stored.write_bytes(stored.read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="vladva.eval.cache"):
        assert torch.equal(CachedEncoder(toy, "toy", cache).images(refs), expected)
    assert f"embedding cache: ignoring {stored}" in caplog.text and toy.calls["images"] == 4

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "save_file", full_disk)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vladva.eval.cache"):
        assert torch.equal(CachedEncoder(toy, "toy", tmp_path / "cache2").images(refs), expected)
    assert "could not write to" in caplog.text and "no space left on device" in caplog.text.lower()
    assert not [p for p in (tmp_path / "cache2").rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- end to end


def test_run_evaluation_scores_the_toy_embedder_as_a_bag_of_words(bench, tmp_path):
    cfg = EvalConfig(data=str(bench), cache_dir=str(tmp_path / "cache"), show_progress=False)
    res = run_evaluation([_toy_model()], cfg, log=lambda _: None)
    m = res["models"][0]["metrics"]
    assert set(m) == {"retrieval", "sugarcrepe", "sugarcrepe_pp", "winoground", "aro", "zeroshot"}
    assert (
        m["retrieval"]["t2i_R@1"] == 100 and m["retrieval"]["i2t_R@1"] == 100 and m["retrieval"]["t2i_valid_R@1"] == 100
    )
    assert m["sugarcrepe"] == {"replace_att": 100.0, "swap_att": 0.0}  # a swap ties -> wrong
    assert m["sugarcrepe_pp"]["replace_att"] == {"ITT": 100.0, "TOT": 100.0}
    assert m["sugarcrepe_pp"]["mean"] == {"ITT": 50.0, "TOT": 50.0}
    assert m["winoground"] == {"text": 0.0, "image": 0.0, "group": 0.0}
    assert m["aro"]["relation"]["micro"] == pytest.approx(200 / 3) and m["aro"]["relation"]["macro"] == 75
    assert m["aro"]["attribution"]["micro"] == 100  # only because the box crops isolate each object
    assert m["zeroshot"]["colours"] == {"top1": 75.0, "top2": 75.0}  # one red circle filed under blue
    assert res["models"][0]["counts"]["retrieval"] == {"images": 3, "captions": 6, "unique_captions": 6}
    assert res["seed"] == 0 and torch.__version__.startswith(res["versions"]["torch"])

    paths = write_report(as_report(res, str(tmp_path)), tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["schema"] == "vladva.eval.report/1" and saved["runs"][0]["data"]["aro"].endswith("aro")
    assert saved["runs"][0]["config"]["batch_size"] == 32 and saved["models"][0]["params"] == 8
    md = paths["md"].read_text()
    print(md)
    assert "| toy | 8 | 100.0 | 100.0 | 100.0 | 100.0 |" in md  # params, then T→I and I→T R@1/5/10
    assert "SC swap_att" in md and "Wino group" in md and "ZS colours top1" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_subsamples_deterministically(bench, tmp_path):
    cfg = EvalConfig(data=str(bench), suites=["retrieval"], limit=2, seed=3, use_cache=False, show_progress=False)
    a = run_evaluation([_toy_model()], cfg, log=lambda _: None)["models"][0]["counts"]["retrieval"]
    b = run_evaluation([_toy_model()], cfg, log=lambda _: None)["models"][0]["counts"]["retrieval"]
    assert a == b == {"images": 2, "captions": 4}


def test_model_specs_and_train_compute(tmp_path, own_model_kinds):
    assert parse_model_arg("mine=vladva:/a:/b") == ("mine", "vladva:/a:/b")
    assert parse_model_arg("vladva:/a=b") == (None, "vladva:/a=b")
    (tmp_path / "base").mkdir()
    (tmp_path / "adapter").mkdir()
    # the base's compute.json: 2 CPU stages (seconds x threads) and a GPU stage that is not CPU time
    (tmp_path / "base" / "compute.json").write_text(
        json.dumps(
            {
                "stages": [
                    {"stage": "vision", "device": "cpu", "seconds": 60, "threads": 2, "device_seconds": 120},
                    {"stage": "lvlm", "device": "cpu", "seconds": 30, "threads": 1},
                    {"stage": "extra", "device": "cuda", "seconds": 600, "device_seconds": 600},
                ]
            }
        )
    )
    (tmp_path / "adapter" / "train_compute.json").write_text(json.dumps({"wall_seconds": 120, "threads": 2}))
    register_model_kind("colourwords", lambda base, weights: ColourWordsEmbedder(), "test kind")
    loaded = load_model(f"c=colourwords:{tmp_path / 'base'}:{tmp_path / 'adapter'}")
    assert loaded.name == "c" and loaded.train_compute["cpu_minutes"] == 2.5 + 4.0
    assert loaded.train_compute["gpu_seconds"] == 600  # the GPU stage is reported beside, not added
    assert len(loaded.train_compute["files"]) == 2
    with pytest.raises(ValueError, match="expected one of"):
        load_model("nonsense")
    with pytest.raises(ModelSpecError, match=r"model spec 'colourwords:x': expected colourwords:BASE:WEIGHTS"):
        load_model("colourwords:x")  # the usage comes from the builder's parameter names


def _stage(stage, steps, pairs, long_captions, tokens, device="cpu", seconds=10.0, threads=1):
    return {
        "stage": stage,
        "steps": steps,
        "examples": pairs or long_captions,
        "pairs": pairs,
        "long_captions": long_captions,
        "tokens": tokens,
        "seconds": seconds,
        "device": device,
        "threads": threads,
        "device_seconds": seconds * (threads if device == "cpu" else 1),
    }


def test_pairs_seen_are_summed_over_every_stage_and_shown_in_the_report(tmp_path):
    """A VladVA model = its base's stages + its fine-tune; the CLIP-style model = tower + CLIP stage.
    The summary shows what each saw (pairs, long captions, tokens) beside CPU / accelerator time."""
    from vladva.eval.models import read_train_compute
    from vladva.eval.report import render_markdown

    def write(folder, stages):
        folder.mkdir(parents=True)
        (folder / "compute.json").write_text(json.dumps({"stages": stages}))
        return folder

    vision = _stage("vision", 4000, 0, 0, 0, device="cuda", seconds=48.3)
    base = write(tmp_path / "base-lvlm", [vision, _stage("lvlm", 1613, 0, 25808, 9832779, "cuda", 85.1)])
    clip = write(tmp_path / "clip-baseline", [vision, _stage("clip", 3389, 216896, 0, 2809506, "cuda", 85.0)])
    ckpt = write(
        tmp_path / "run" / "checkpoints" / "step-000300",
        [_stage("vladva-finetune", 300, 9600, 2400, 1_000_000, "cpu", 150.0, 2)],
    )
    vladva = read_train_compute([base, ckpt])
    assert (vladva["pairs"], vladva["long_captions"], vladva["tokens"]) == (9600, 25808 + 2400, 9832779 + 1_000_000)
    assert [st["stage"] for st in vladva["stages"]] == ["vision", "lvlm", "vladva-finetune"]
    assert [st["pairs"] for st in vladva["stages"]] == [0, 0, 9600]  # no contrastive pair before fine-tuning
    assert vladva["cpu_minutes"] == 5.0 and vladva["gpu_seconds"] == pytest.approx(133.4)
    baseline = read_train_compute([clip])
    assert (baseline["pairs"], baseline["long_captions"], baseline["tokens"]) == (216896, 0, 2809506)
    assert baseline["cpu_minutes"] == 0.0 and baseline["gpu_seconds"] == pytest.approx(133.3)
    # a record written before pairs were counted: the total is a lower bound, said so
    old = write(tmp_path / "old", [{"stage": "vladva-finetune", "steps": 5, "seconds": 3.0, "device": "cpu"}])
    partial = read_train_compute([base, old])
    assert partial["pairs"] == 0 and partial["incomplete"] == ["pairs", "long_captions", "examples", "tokens"]

    report = as_report(
        {
            "models": [
                {"name": "vladva", "spec": "vladva:a:b", "params": 4_000_000, "train_compute": vladva, "metrics": {}},
                {"name": "clip-style", "spec": "clip:c", "params": 1_000_000, "train_compute": baseline, "metrics": {}},
                {"name": "old", "spec": "vladva:a:o", "train_compute": partial, "metrics": {}},
            ]
        }
    )
    md = render_markdown(report, chart_name=None)
    assert "| model | params | pairs seen | long captions | tokens | train CPU-min | train GPU-s |" in md
    assert "| vladva | 4M | 9.6k | 28.2k | 10.8M | 5.0 | 133.4 |" in md
    assert "| clip-style | 1M | 217k | 0 | 2.81M | 0.0 | 133.3 |" in md
    assert "| old | – | ≥0 | ≥25.8k | ≥9.83M | 0.05 | 133.4 |" in md
    # per stage: where each model's pairs come from
    assert "### Training compute by stage" in md
    assert "| vladva | lvlm | 1,613 | 0 | 25,808 | 25,808 | 9,832,779 | cuda | 85.1 |" in md
    assert "| vladva | vladva-finetune | 300 | 9,600 | 2,400 | 9,600 | 1,000,000 | cpu | 150.0 |" in md
    assert "| clip-style | clip | 3,389 | 216,896 | 0 | 216,896 | 2,809,506 | cuda | 85.0 |" in md
    # results.json keeps the numbers per model
    write_report(report, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["train_compute"]["pairs"] for m in saved["models"]] == [9600, 216896, 0]


def test_the_shipped_records_state_what_each_stage_saw():
    """The shipped base, baseline and tower records carry pairs, long captions and tokens, with how
    they were derived from the recipe that made them."""
    from vladva.eval.models import read_train_compute
    from vladva.pretrained import shipped_base_dir, shipped_clip_dir, shipped_vision_dir

    base = read_train_compute([shipped_base_dir()])
    clip = read_train_compute([shipped_clip_dir()])
    tower = read_train_compute([shipped_vision_dir()])
    assert (base["pairs"], base["long_captions"], base["tokens"]) == (0, 1613 * 16, 9832779)
    assert (clip["pairs"], clip["long_captions"]) == (3389 * 64, 0) and clip["tokens"] == 2809506
    assert (tower["pairs"], tower["long_captions"], tower["tokens"]) == (0, 0, 0)
    assert "incomplete" not in base and "incomplete" not in clip
    for record in (base, clip):
        for data in record["files"].values():
            assert all(st["extra"]["derived"] for st in data["stages"])


def test_cli_eval_and_report_end_to_end(bench, tmp_path, own_model_kinds):
    # A model kind registered through the public API is a valid `-m NAME=KIND:...`.
    register_model_kind("colourwords", lambda: ColourWordsEmbedder(), "colour words", usage="colourwords:")
    runner = CliRunner()
    common = ["--data", str(bench), "--cache-dir", str(tmp_path / "cache")]
    r = runner.invoke(
        app,
        [
            "eval",
            "--model",
            "a=colourwords:",
            "--suite",
            "sugarcrepe,winoground",
            "--out",
            str(tmp_path / "run1"),
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "swap_att" in r.output  # the rich table
    r = runner.invoke(app, ["eval", "-m", "b=colourwords:", "-s", "zeroshot", "-o", str(tmp_path / "run2"), *common])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run1" / "eval_config.yaml").is_file()
    r = runner.invoke(
        app, ["report", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(tmp_path / "merged")]
    )
    assert r.exit_code == 0, r.output
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["a", "b"] and len(merged["runs"]) == 2
    assert merged["models"][1]["run"] == 1 and merged["models"][1]["metrics"]["zeroshot"]["colours"]["top1"] == 75
    md = (tmp_path / "merged" / "results.md").read_text()
    assert "| a |" in md and "| b |" in md

    r = runner.invoke(app, ["eval", "-m", "colourwords:", "-s", "nonsense", "-o", str(tmp_path / "x"), *common])
    assert r.exit_code == 2 and "unknown suite 'nonsense'" in r.output
    r = runner.invoke(
        app,
        [
            "eval",
            "-m",
            "colourwords:",
            "-s",
            "winoground",
            "-o",
            str(tmp_path / "x"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert r.exit_code == 2 and "suite 'winoground': no data" in r.output
    r = runner.invoke(app, ["eval", "-m", "nope:x", "--data", str(bench), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "model spec 'nope:x'" in r.output


def test_zeroshot_spec_runs_a_real_tiny_lvlm_through_the_harness(bench, tmp_path):
    """The `zeroshot:` spec loads vladva.model.VladVA on a tiny random LLaVA; every score is a
    percentage over the fixture's items and the second run is served entirely from the cache."""
    from vladva.testing import build_tiny_llava

    base = build_tiny_llava(tmp_path / "tiny_llava")
    model = load_model(f"zs=zeroshot:{base}")
    assert model.params and model.params > 1000
    cfg = EvalConfig(
        data=str(bench), suites=["sugarcrepe", "winoground"], cache_dir=str(tmp_path / "cache"), show_progress=False
    )
    first = run_evaluation([model], cfg, log=lambda _: None)["models"][0]
    assert first["counts"]["sugarcrepe"] == {"replace_att": 2, "swap_att": 1}
    values = list(first["metrics"]["sugarcrepe"].values()) + list(first["metrics"]["winoground"].values())
    assert all(0 <= v <= 100 for v in values)
    again = run_evaluation([model], cfg, log=lambda _: None)["models"][0]
    assert again["encoded"]["images"] == again["encoded"]["texts"] == 0
    assert again["encoded"]["from_cache"] == sum(first["encoded"][k] for k in ("from_cache", "images", "texts"))
    assert again["metrics"] == first["metrics"]


# ----------------------------------------------------------------------------- registries


class ColourMatch(B.Benchmark):
    """A new benchmark written as a module in vladva/eval/benchmarks/ would write it: `items.json`
    lists an image with a true and a false caption; the score is the two-way accuracy."""

    name = "colour_match"
    order = 70
    path = B.PathOption("colour_match", "--colour-match", "Folder with items.json (a test benchmark).")
    legend = "CM = colour match (chance 50)"

    def load(self, path, cfg):
        items = read_json(path / "items.json")
        where = [f"{path / 'items.json'}: entry {n}" for n in range(len(items))]
        return [
            PairSet(
                "all",
                [ImageRef(path / required_text(e, "filename", w)) for e, w in zip(items, where)],
                [required_text(e, "true", w) for e, w in zip(items, where)],
                [required_text(e, "false", w) for e, w in zip(items, where)],
            )
        ]

    def score(self, enc, data, cfg):
        return score_pair_sets(enc, data, cfg.limit, cfg.seed, lambda pos, neg, _groups: M.pair_accuracy(pos, neg))

    def summary_columns(self, models):
        return [("CM all", B.metric(self.name, "all"))]

    def detail_tables(self, models):
        rows = [[name, r["all"]] for name, r in self.results(models)]
        return [B.DetailTable("Colour match (accuracy %)", ["model", "all"], rows)] if rows else []

    def chart_bars(self):
        return [("CM all", (self.name, "all"))]


@pytest.fixture
def colour_match_data(bench, tmp_path) -> Path:
    """A --data folder holding only the new benchmark's folder (red circle / yellow cross images)."""
    folder = tmp_path / "data" / "colour_match"
    shutil.copytree(bench / "sugarcrepe" / "images", folder / "images")
    items = [
        {"filename": "images/000000.png", "true": "a red circle", "false": "a green circle"},
        {"filename": "images/000001.png", "true": "a yellow cross", "false": "a blue cross"},
    ]
    (folder / "items.json").write_text(json.dumps(items))
    return folder.parent


def test_a_registered_benchmark_runs_through_runner_report_plot_and_cli(colour_match_data, tmp_path, own_benchmarks):
    B.register_benchmark(ColourMatch())
    assert B.suite_names()[-1] == "colour_match" and ("CM all", ("colour_match", "all")) in chart_bars()

    cfg = EvalConfig(data=str(colour_match_data), use_cache=False, show_progress=False)
    res = run_evaluation([_toy_model()], cfg, log=lambda _: None)
    assert res["models"][0]["metrics"] == {"colour_match": {"all": 100.0}}
    assert res["models"][0]["counts"] == {"colour_match": {"all": 2}}
    paths = write_report(as_report(res, str(tmp_path / "run")), tmp_path / "run")
    md = paths["md"].read_text()
    assert "| model | params | CM all |" in md and "| toy | 8 | 100.0 |" in md
    assert "### Colour match (accuracy %)" in md and "CM = colour match (chance 50)." in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the chart exists only for its bar

    # The CLI, built from the registry as `vladva eval` is, takes the benchmark's own flag.
    import typer

    from vladva.cli.evaluate import eval_command, with_benchmark_path_options

    cli = typer.Typer()
    cli.command("eval")(with_benchmark_path_options(eval_command))
    cli.command("other")(lambda: None)  # two commands, so "eval" is a subcommand as in `vladva`
    r = CliRunner().invoke(cli, ["eval", "--help"])
    assert "--colour-match" in r.output and "Folder with items.json" in r.output
    with model_kinds_of({"colourwords": lambda: ColourWordsEmbedder()}):
        r = CliRunner().invoke(
            cli,
            ["eval", "-m", "colourwords:", "--colour-match", str(colour_match_data / "colour_match")]
            + ["-o", str(tmp_path / "cli"), "--no-cache"],
        )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert saved["models"][0]["metrics"] == {"colour_match": {"all": 100.0}}
    assert saved["runs"][0]["config"]["paths"] == {"colour_match": str(colour_match_data / "colour_match")}


class model_kinds_of:
    """Context manager: `{prefix: builder}` registered in a copy of the model-kind registry."""

    def __init__(self, builders):
        self.builders = builders

    def __enter__(self):
        self.saved = model_kinds._KINDS
        model_kinds._KINDS = dict(self.saved)
        for prefix, build in self.builders.items():
            register_model_kind(prefix, build, "test kind", usage=f"{prefix}:")

    def __exit__(self, *exc):
        model_kinds._KINDS = self.saved


def test_eval_help_lists_every_benchmark_flag_with_its_help():
    r = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    text = " ".join(r.output.split())  # help is wrapped to the terminal
    for opt in B.path_options():
        assert opt.flag in text and opt.help in text
    assert "--coco-json" in text and "--sugarcrepe-pp-images" in text  # the flags users know


def test_explicit_benchmark_paths_from_flags_config_and_set(bench, tmp_path, own_model_kinds):
    register_model_kind("colourwords", lambda: ColourWordsEmbedder(), "colour words", usage="colourwords:")
    shutil.copytree(bench / "sugarcrepe" / "images", tmp_path / "elsewhere")
    (tmp_path / "eval.yaml").write_text(f"paths:\n  aro: {bench / 'aro'}\n")
    r = CliRunner().invoke(
        app,
        ["eval", "-m", "colourwords:", "--sugarcrepe", str(bench / "sugarcrepe")]
        + ["--sugarcrepe-images", str(tmp_path / "elsewhere"), "--config", str(tmp_path / "eval.yaml")]
        + ["--set", f"paths.winoground={bench / 'winoground'}", "-o", str(tmp_path / "run"), "--no-cache"],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(saved["runs"][0]["data"]) == ["sugarcrepe", "winoground", "aro"]  # suite order
    assert saved["runs"][0]["config"]["paths"]["sugarcrepe_images"] == str(tmp_path / "elsewhere")
    assert saved["models"][0]["metrics"]["sugarcrepe"] == {"replace_att": 100.0, "swap_att": 0.0}
    r = CliRunner().invoke(
        app, ["eval", "-m", "colourwords:", "--set", "paths.nope=x", "-o", str(tmp_path / "x"), "--no-cache"]
    )
    assert r.exit_code == 2 and "paths.nope: not a benchmark path" in r.output


def test_model_kind_registry_checks_arguments_and_prefixes(own_model_kinds):
    kind = register_model_kind("pair", lambda base_dir, weights_dir=None: ColourWordsEmbedder(), "two folders")
    assert kind.usage == "pair:BASE_DIR[:WEIGHTS_DIR]"
    assert isinstance(model_kinds.load_embedder("pair:a"), ColourWordsEmbedder)
    with pytest.raises(ModelSpecError, match=r"model spec 'pair:a:b:c': expected pair:BASE_DIR\[:WEIGHTS_DIR\]"):
        model_kinds.load_embedder("pair:a:b:c")
    with pytest.raises(ValueError, match="already registered"):
        register_model_kind("pair", lambda: None, "another builder")
    register_model_kind("nothing", lambda: object(), "not an embedder")
    with pytest.raises(ModelSpecError, match=r"no encode_images\(\)"):
        model_kinds.load_embedder("nothing:")
    assert {"pair", "nothing", "python"} <= set(model_kinds.model_kind_names())


# ----------------------------------------------------------------------------- issue 15: habits and records


def test_clip_benchmark_names_and_result_files(bench, tmp_path, own_model_kinds):
    """`--dataset` / `--dataset_root` / `--task` / `--recall_k` / `--output` as CLIP_benchmark has them;
    the files read back as CLIP_benchmark writes them, with vladva's percentages as fractions."""
    register_model_kind("colourwords", lambda: ColourWordsEmbedder(), "colour words", usage="colourwords:")
    runner = CliRunner()
    template = str(tmp_path / "cb" / "{dataset}_{model}_{task}.json")
    args = ["eval", "-m", "cw=colourwords:", "--dataset_root", str(bench), "--no-cache"]
    r = runner.invoke(
        app,
        [*args, "--dataset", "mscoco_captions,sugar_crepe/swap_att", "--recall_k", "1,2", "--output", template,
         "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    ours = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]["metrics"]
    coco = json.loads((tmp_path / "cb" / "mscoco_captions_cw_zeroshot_retrieval.json").read_text())
    assert {k: coco[k] for k in ("dataset", "model", "pretrained", "task", "language")} == {
        "dataset": "mscoco_captions",
        "model": "cw",
        "pretrained": "colourwords:",
        "task": "zeroshot_retrieval",
        "language": "en",
    }
    assert set(coco["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 2)}
    assert coco["metrics"]["image_retrieval_recall@1"] == pytest.approx(ours["retrieval"]["t2i_R@1"] / 100)
    assert coco["metrics"]["text_retrieval_recall@2"] == pytest.approx(ours["retrieval"]["i2t_R@2"] / 100)
    swap = json.loads((tmp_path / "cb" / "sugar_crepe_swap_att_cw_image_caption_selection.json").read_text())
    assert swap["dataset"] == "sugar_crepe/swap_att" and swap["metrics"] == {
        "acc": pytest.approx(ours["sugarcrepe"]["swap_att"] / 100)
    }
    assert len(list((tmp_path / "cb").iterdir())) == 2  # only the asked SugarCrepe category

    # --task alone: that task's benchmarks among those found; --output alone is enough; a fixed file
    # name gets the dataset inserted rather than one result overwriting another
    r = runner.invoke(app, [*args, "--task", "zeroshot_classification", "--output", str(tmp_path / "zs.json")])
    assert r.exit_code == 0, r.output
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert zs["task"] == "zeroshot_classification" and zs["dataset"] == "colours" and 0 <= zs["metrics"]["acc1"] <= 1
    r = runner.invoke(app, [*args, "--dataset", "sugar_crepe", "--output", str(tmp_path / "all.json")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("all_*.json")) == [
        "all_sugar_crepe_replace_att.json",
        "all_sugar_crepe_swap_att.json",
    ]

    for bad, message in (
        (["--pretrained", "laion400m_e32", "--out", str(tmp_path / "x")], "one spec here"),
        (["--dataset", "cifar10", "--out", str(tmp_path / "x")], "--dataset 'cifar10': not a benchmark"),
        (["--task", "linear_probe", "--out", str(tmp_path / "x")], "--task 'linear_probe'"),
        (["--recall_k", "five", "--out", str(tmp_path / "x")], "expected whole numbers"),
        (["--dataset", "winoground"], "give --out RUN_DIR"),
    ):
        r = runner.invoke(app, [*args, *bad])
        assert r.exit_code == 2 and message in r.stderr, (bad, r.output)


def test_default_is_one_spec_everywhere_through_one_parser():
    from vladva.model.kinds import _folders
    from vladva.model_kinds import parse_model_spec
    from vladva.pretrained import shipped_base_dir

    assert parse_model_spec("default") == ("zeroshot", ["default"])
    assert parse_model_spec("vladva:default:runs/x") == ("vladva", ["default", "runs/x"])
    # the shipped base's folder counts for the cache identity and its compute record
    assert _folders(["default"]) == [shipped_base_dir()]
    with pytest.raises(ModelSpecError, match=r"expected one of .*default"):
        parse_model_spec("defualt")


def test_default_in_eval(bench, tmp_path):
    """`vladva eval -m default` evaluates the shipped base zero-shot, and its report counts the
    base's own (GPU) pretraining compute."""
    r = CliRunner().invoke(
        app, ["eval", "-m", "default", "-s", "retrieval", "--data", str(bench), "--no-cache", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    (model,) = json.loads((tmp_path / "results.json").read_text())["models"]
    assert model["spec"] == "default" and model["name"] == "vladva:base-lvlm"
    assert model["train_compute"]["gpu_seconds"] > 0 and "retrieval" in model["metrics"]


def test_index_specs_store_folders_portably(tmp_path, monkeypatch):
    from vladva.model_kinds import portable_spec, resolve_spec

    (tmp_path / "ix" / "model").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = "vladva:ix/model:run"
    stored = portable_spec(spec, "ix")
    assert stored == f"vladva:model:{tmp_path / 'run'}"  # inside the index: relative to it; else absolute
    assert portable_spec("vladva:default:run", "ix") == f"vladva:default:{tmp_path / 'run'}"
    assert portable_spec("python:ix:model", "ix") == "python:ix:model"  # module names are not paths
    monkeypatch.chdir(tmp_path / "run")
    assert resolve_spec(stored, tmp_path / "ix") == f"vladva:{tmp_path / 'ix' / 'model'}:{tmp_path / 'run'}"


def test_training_compute_is_found_from_the_run_folder(tmp_path):
    """`vladva:BASE:RUN` names the run folder; its latest checkpoint holds the compute the trainer
    wrote, so the report does not say 0 CPU-minutes after a fine-tune."""
    from vladva.eval.models import read_train_compute
    from vladva.train.compute import StageCompute, write_compute

    ckpt = tmp_path / "run" / "checkpoints" / "step-000030"
    ckpt.mkdir(parents=True)
    (ckpt / "vladva_config.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-000030\n")
    write_compute(ckpt / "compute.json", [StageCompute("vladva-finetune", steps=30, seconds=210.0, threads=2)])
    found = read_train_compute([tmp_path / "run"])
    assert found["cpu_minutes"] == pytest.approx(7.0) and str(ckpt / "compute.json") in found["files"]


def test_a_chart_for_whatever_was_evaluated(tmp_path):
    from vladva.eval.plot import chart_panels
    from vladva.eval.report import as_report, write_report

    model = {"name": "m", "spec": "toy:", "metrics": {"retrieval": {"t2i_R@1": 40.0, "i2t_R@1": 50.0}}}
    paths = write_report(as_report({"models": [model]}), tmp_path)
    assert paths["png"].is_file() and "results.png" in paths["md"].read_text()
    assert [(title, [label for label, _ in bars]) for title, _, bars in chart_panels([model])] == [
        ("Retrieval recall", ["T→I R@1", "I→T R@1"])
    ]
    both = dict(model, metrics=model["metrics"] | {"zeroshot": {"count": {"top1": 80.0}}, "aro": {}})
    assert [title for title, _, _ in chart_panels([both])] == ["Retrieval recall", "Zero-shot classification top-1"]


def test_encoding_progress_shows_on_a_terminal_only(bench, tmp_path, monkeypatch):
    import io
    import sys

    from vladva.eval.cache import CachedEncoder

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        enc = CachedEncoder(ColourWordsEmbedder(), f"toy|{shown}", None, batch_size=2, show_progress=True)
        enc.texts([f"a red circle {i}" for i in range(6)], "captions")
        assert ("encode captions" in stream.getvalue()) is shown
