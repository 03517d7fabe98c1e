"""Hard-negative captions (NegCLIP-style): the manifest key, the shapes generator's verified-false
negatives, the collator's seeded choice and the TrainingModule's wiring into ContrastiveLoss, with
and without GradCache."""

from __future__ import annotations

import json

import pytest
import torch

from vladva.config import load_config
from vladva.data.manifest import ManifestError, Record, read_manifest, write_manifest
from vladva.testing import build_tiny_llava, write_tiny_manifest
from vladva.toyworld.captions import caption_is_true, count_tokens
from vladva.toyworld.scene import Scene
from vladva.toyworld.shapes import HARD_HELDOUT, ShapesDataConfig, generate_shapes_dataset
from vladva.train.batches import StepCollator, collate_records, load_records
from vladva.train.config import TrainConfig

torch.set_num_threads(1)

TINY = dict(n_train=40, n_val=8, n_retrieval=4, n_sugarcrepe=2, n_winoground=2, n_aro=2, n_zeroshot=2)


# ----------------------------------------------------------------------------- manifest


def test_manifest_negative_captions_round_trip_and_validation(tmp_path):
    rec = Record("a", tmp_path / "a.png", ["a red circle"], meta={"k": 1}, negative_captions=["a blue circle"])
    write_manifest(tmp_path / "m.jsonl", [rec, Record("b", tmp_path / "b.png", ["x"])])
    lines = [json.loads(ln) for ln in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines[0]["negative_captions"] == ["a blue circle"] and "negative_captions" not in lines[1]
    back, _ = read_manifest(tmp_path / "m.jsonl")
    assert back[0].negative_captions == ["a blue circle"] and back[1].negative_captions == []
    for bad, why in (
        ('"a blue circle"', "must be a list"),
        ('[" "]', r"negative_captions\[0\] is empty"),
        ("[3]", r"negative_captions\[0\] must be a string"),
    ):
        p = tmp_path / "bad.jsonl"
        p.write_text(
            '{"image": "a.png", "captions": ["x"]}\n{"image": "a.png", "captions": ["x"], '
            f'"negative_captions": {bad}}}\n'
        )
        with pytest.raises(ManifestError, match=f"bad.jsonl:2: .*{why}"):
            read_manifest(p)


def test_manifest_caption_negatives_align_with_captions(tmp_path):
    rec = Record("a", tmp_path / "a.png", ["a red circle", "one object"], caption_negatives=[["a blue circle"], []])
    write_manifest(tmp_path / "m.jsonl", [rec, Record("b", tmp_path / "b.png", ["x"])])
    back, _ = read_manifest(tmp_path / "m.jsonl")
    assert back[0].caption_negatives == [["a blue circle"], []] and back[1].caption_negatives == []
    for bad, why in (
        ('[["a blue circle"]]', r"one list of strings per caption \(2 captions\)"),
        ('["a", "b"]', r"caption_negatives\[0\]' must be a list"),
        ('[[""], []]', r"caption_negatives\[0\]\[0\] is empty"),
    ):
        p = tmp_path / "bad.jsonl"
        p.write_text(f'{{"image": "a.png", "captions": ["x", "y"], "caption_negatives": {bad}}}\n')
        with pytest.raises(ManifestError, match=f"bad.jsonl:1: .*{why}"):
            read_manifest(p)


# ----------------------------------------------------------------------------- shapes generator


@pytest.mark.parametrize("world", ["default", "hard"])
def test_every_training_negative_is_false_for_its_scene(tmp_path, world):
    out = tmp_path / world
    summary = generate_shapes_dataset(out, ShapesDataConfig(seed=5, world=world, **TINY), progress=False)
    for split in ("train", "val"):
        records, _ = read_manifest(out / f"{split}.jsonl")
        n = 0
        for r in records:
            scene = Scene.from_dict(r.meta["scene"])
            assert len(r.negative_captions) <= 2 and len(set(r.negative_captions)) == len(r.negative_captions)
            for neg in r.negative_captions:
                assert not caption_is_true(neg, scene), (neg, r.captions)
                assert neg not in r.captions and count_tokens(neg) < 30
                if world == "hard":  # held-out colour-shape combinations stay out of training text
                    assert not any(f"{c} {s}" in neg for c, s in HARD_HELDOUT), neg
            n += len(r.negative_captions)
        assert n >= 1.8 * len(records)  # nearly every record gets its 2
        assert summary[split]["negative_captions"] == n


@pytest.mark.parametrize("world", ["default", "hard"])
def test_caption_negatives_are_false_minimal_edits_of_their_caption(tmp_path, world):
    from vladva.toyworld.captions import parse_caption
    from vladva.toyworld.splits import check_dataset

    out = tmp_path / world
    summary = generate_shapes_dataset(out, ShapesDataConfig(seed=3, world=world, **TINY), progress=False)
    records, _ = read_manifest(out / "train.jsonl")
    n = swaps = 0
    for r in records:
        scene = Scene.from_dict(r.meta["scene"])
        assert r.caption_negatives == [] or len(r.caption_negatives) == len(r.captions)  # [] when none
        for cap, negs in zip(r.captions, r.caption_negatives):
            assert len(negs) <= 2 and len(set(negs)) == len(negs)
            for neg in negs:
                assert caption_is_true(cap, scene) and not caption_is_true(neg, scene), (cap, neg)
                # a minimal edit: the same colours, shapes and sizes, bound differently (a swap) or
                # with another relation
                pc, pn = parse_caption(cap), parse_caption(neg)
                for attr in ("colour", "shape", "size"):
                    assert sorted(str(getattr(o, attr)) for o in pc.objects) == sorted(
                        str(getattr(o, attr)) for o in pn.objects
                    ), (cap, neg)
                assert pc.count == pn.count, (cap, neg)
                swaps += pc.objects != pn.objects
                if world == "hard":
                    assert not any(f"{c} {s}" in neg for c, s in HARD_HELDOUT), neg
            n += len(negs)
    assert n >= len(records) and swaps >= n / 3
    assert summary["train"]["caption_negatives"] == n
    assert check_dataset(out)["problems"] == []  # `vladva data check` verifies them too


def test_negatives_off_leaves_the_rest_of_each_record_unchanged(tmp_path):
    generate_shapes_dataset(tmp_path / "on", ShapesDataConfig(seed=5, **TINY), progress=False)
    generate_shapes_dataset(tmp_path / "off", ShapesDataConfig(seed=5, n_train_negatives=0, **TINY), progress=False)
    on, _ = read_manifest(tmp_path / "on" / "train.jsonl")
    off, _ = read_manifest(tmp_path / "off" / "train.jsonl")
    assert all(not r.negative_captions for r in off)
    assert [(r.captions, r.long_caption, r.meta) for r in on] == [(r.captions, r.long_caption, r.meta) for r in off]
    with pytest.raises(ValueError, match="n_train_negatives"):
        ShapesDataConfig(n_train_negatives=-1).validate()


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny data whose even records carry two negative captions and odd records none."""
    out = write_tiny_manifest(tmp_path_factory.mktemp("data"), n_train=16, n_val=8)
    records, _ = read_manifest(out / "train.jsonl")
    for i, r in enumerate(records):
        if i % 2 == 0:
            r.negative_captions = [f"wrong one {i}", f"wrong two {i}"]
    write_manifest(out / "train.jsonl", records)
    return out


@pytest.fixture(scope="module")
def builder(base):
    """The tiny model's input builder: what the collator needs to make a batch's tensors."""
    from vladva.model.vladva import VladVA

    return VladVA.from_pretrained(base).inputs


def collate(builder, records, indices, epoch=0, ntp=2, choice="first", hard_negatives=0):
    return collate_records(
        StepCollator(builder, ntp, choice, 0, hard_negatives=hard_negatives), records, indices, epoch
    )


def test_collator_picks_seeded_negatives_per_image(builder, data):
    records = load_records(data / "train.jsonl", strict=True)
    batch = collate(builder, records, [0, 1, 2, 5], epoch=3, hard_negatives=1)
    # one negative per record that has some, none for the others; rows point at their image
    assert len(batch.negatives) == 2 and batch.negative_rows == [0, 2]
    assert batch.negatives[0] in records[0].negative_captions and batch.negatives[1] in records[2].negative_captions
    # the text tower's tensors hold the captions, then the negatives
    assert [len(t) for t in batch.text_chunks] == [4 + 2]
    again = collate(builder, records, [0, 1, 2, 5], epoch=3, hard_negatives=1)
    assert again.negatives == batch.negatives  # a pure function of (seed, epoch, record): resumable
    both = collate(builder, records, [0, 1, 2], hard_negatives=5)
    assert sorted(both.negatives) == sorted(records[0].negative_captions + records[2].negative_captions)
    assert both.negative_rows == [0, 0, 2, 2]
    off = collate(builder, records, [0, 1, 2])
    assert off.negatives == [] and off.negative_rows == [] and [len(t) for t in off.text_chunks] == [3]
    # a "negative" equal to a caption of the batch is dropped (it would be a positive for that image)
    records[0].negative_captions = [records[2].captions[0]]
    dup = collate(builder, records, [0, 2], hard_negatives=1)
    assert len(dup.negatives) == 1 and dup.negatives[0] in records[2].negative_captions and dup.negative_rows == [1]


def test_collator_draws_the_drawn_captions_own_negatives_first(builder, data):
    records = load_records(data / "train.jsonl", strict=True)
    r = records[0]
    r.captions = ["cap a", "cap b", "cap c"]
    r.caption_negatives = [["not a"], ["not b 1", "not b 2"], []]
    r.negative_captions = ["record-level"]
    seen = set()
    for epoch in range(12):
        batch = collate(builder, records, [0], epoch=epoch, ntp=0, choice="random", hard_negatives=2)
        drawn = r.captions.index(batch.captions[0])
        own = r.caption_negatives[drawn]
        assert sorted(batch.negatives) == sorted(own + (["record-level"] if len(own) < 2 else []))
        seen.add(drawn)
    assert seen == {0, 1, 2}


def test_training_module_passes_encoded_negatives_to_the_loss(base, builder, data):
    from vladva.data.images import load_image
    from vladva.model.vladva import VladVA
    from vladva.train.config import LossConfig
    from vladva.train.step import StepObjective, TrainingModule

    records = load_records(data / "train.jsonl", strict=True)
    batch = collate(builder, records, [0, 1, 2, 3], ntp=0, hard_negatives=2)
    assert len(batch.negatives) == 4
    m = VladVA.from_pretrained(base)
    m.eval()
    objective = StepObjective(LossConfig(ntp_weight=0.0))
    loss = objective.contrastive
    with torch.no_grad():
        with_neg = TrainingModule(m, objective, hard_negatives=True)(batch)["contrastive"]
        without = TrainingModule(m, objective, hard_negatives=False)(batch)["contrastive"]
        img = m.embed_image_inputs(m.image_inputs([load_image(records[i].image) for i in range(4)]))
        txt = m.embed_text_inputs(m.text_inputs(batch.captions))
        neg = m.embed_text_inputs(m.text_inputs(batch.negatives))
        expect = loss(img, txt, image_ids=batch.image_ids, caption_ids=batch.caption_ids, hard_negatives=neg)
        plain = loss(img, txt, image_ids=batch.image_ids, caption_ids=batch.caption_ids)
    assert with_neg.item() == pytest.approx(expect.item(), abs=1e-4)
    assert without.item() == pytest.approx(plain.item(), abs=1e-4)
    assert with_neg.item() > without.item()  # extra candidates only add softmax mass off the positives


def _run_with_hard_negatives(base, data, out, *extra):
    from vladva.train.trainer import train

    cfg = load_config(
        TrainConfig,
        None,
        [
            f"base_model={base}",
            f"data.train={data / 'train.jsonl'}",
            f"output_dir={out}",
            "data.contrastive_batch_size=8",
            "data.ntp_batch_size=2",
            "data.hard_negatives=1",
            "optim.max_steps=3",
            "optim.warmup_steps=0",
            "eval.every=0",
            "eval.at_start=false",
            "checkpoint.every=0",
            "log_every=1",
            "progress=false",
            "num_threads=1",
            *extra,
        ],
    )
    result = train(cfg)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return result, [r for r in rows if "loss" in r]


def test_short_training_run_with_hard_negatives(base, data, tmp_path):
    result, rows = _run_with_hard_negatives(base, data, tmp_path / "run")
    assert result.steps == 3 and len(rows) == 3
    assert all(torch.isfinite(torch.tensor(r["contrastive"])) for r in rows)
    # the share of images whose caption outscores its own negatives is logged
    assert all(0.0 <= r["hard_neg_acc"] <= 1.0 for r in rows)
    # GradCache takes hard negatives too, and trains the same steps (same losses, up to float rounding)
    _, cached = _run_with_hard_negatives(base, data, tmp_path / "gc", "grad_cache.chunk_size=3")
    assert len(cached) == 3
    for a, b in zip(rows, cached):
        for key in ("loss", "contrastive", "ntp", "hard_neg_acc", "grad_norm", "logit_scale"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)


def test_hard_negatives_config_checks():
    with pytest.raises(ValueError, match="data.hard_negatives must be >= 0"):
        load_config(TrainConfig, None, ["data.hard_negatives=-1"])
