"""Hard-negative captions (NegCLIP-style): the manifest key and typed negatives, the shapes
generator's verified-false negatives and their kinds, the collator's seeded choice and kind filter,
the TrainingModule's wiring into ContrastiveLoss (with and without GradCache), and hard-negative
accuracy per kind on a training batch and on the held-out set."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from vladva.config import load_config
from vladva.data.manifest import ManifestError, Negative, Record, as_negatives, read_manifest, write_manifest
from vladva.testing import build_tiny_llava, write_tiny_manifest
from vladva.toyworld.captions import caption_is_true, count_tokens
from vladva.toyworld.negatives import BINDING_KINDS, NEGATIVE_KINDS, negative_kind
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
    assert back[0].negative_captions == [Negative("a blue circle")] and back[1].negative_captions == []
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
    assert back[0].caption_negatives == [[Negative("a blue circle")], []] and back[1].caption_negatives == []
    for bad, why in (
        ('[["a blue circle"]]', r"one list of strings per caption \(2 captions\)"),
        ('["a", "b"]', r"caption_negatives\[0\]' must be a list"),
        ('[[""], []]', r"caption_negatives\[0\]\[0\] is empty"),
    ):
        p = tmp_path / "bad.jsonl"
        p.write_text(f'{{"image": "a.png", "captions": ["x", "y"], "caption_negatives": {bad}}}\n')
        with pytest.raises(ManifestError, match=f"bad.jsonl:1: .*{why}"):
            read_manifest(p)


def test_typed_negatives_round_trip_and_validation(tmp_path):
    """A negative is a string (kind unknown) or {"text", "kind"}; both lists take both forms."""
    rec = Record(
        "a",
        tmp_path / "a.png",
        ["a red circle left of a blue square", "one object"],
        negative_captions=[Negative("a red square left of a blue circle", "swap_obj"), "a green cross"],
        caption_negatives=[[Negative("a blue circle left of a red square", "swap_att"), "a red circle"], []],
    )
    write_manifest(tmp_path / "m.jsonl", [rec])
    line = json.loads((tmp_path / "m.jsonl").read_text())
    assert line["negative_captions"] == [
        {"text": "a red square left of a blue circle", "kind": "swap_obj"},
        "a green cross",  # unknown kind: written as before, a plain string
    ]
    assert line["caption_negatives"] == [
        [{"text": "a blue circle left of a red square", "kind": "swap_att"}, "a red circle"],
        [],
    ]
    (back,), _ = read_manifest(tmp_path / "m.jsonl")
    assert back.negative_captions == [
        Negative("a red square left of a blue circle", "swap_obj"),
        Negative("a green cross"),
    ]
    assert back.caption_negatives == rec.caption_negatives
    assert [x.kind_name for x in back.caption_negatives[0]] == ["swap_att", "untyped"]
    for bad, why in (
        ('[{"text": "x", "kind": 3}]', r"caption_negatives\[0\]\[0\]: 'kind' must be a non-empty string"),
        ('[{"kind": "swap_att"}]', r"caption_negatives\[0\]\[0\]: missing key 'text'"),
        ('[{"text": "x", "why": "swap"}]', r"caption_negatives\[0\]\[0\]: unknown key\(s\) \['why'\]"),
        ('[{"text": " ", "kind": "swap_att"}]', r"caption_negatives\[0\]\[0\].text is empty"),
        ("[3]", r"caption_negatives\[0\]\[0\] must be a string or"),
    ):
        p = tmp_path / "bad.jsonl"
        p.write_text(f'{{"image": "a.png", "captions": ["x"], "caption_negatives": [{bad}]}}\n')
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
            texts = [x.text for x in r.negative_captions]
            assert len(texts) <= 2 and len(set(texts)) == len(texts)
            for neg in texts:
                assert not caption_is_true(neg, scene), (neg, r.captions)
                assert neg not in r.captions and count_tokens(neg) < 30
                if world == "hard":  # held-out colour-shape combinations stay out of training text
                    assert not any(f"{c} {s}" in neg for c, s in HARD_HELDOUT), neg
            assert all(x.kind in NEGATIVE_KINDS for x in r.negative_captions)  # every one typed
            n += len(r.negative_captions)
        assert n >= 1.8 * len(records)  # nearly every record gets its 2
        assert summary[split]["negative_captions"] == n


@pytest.mark.parametrize("world", ["default", "hard"])
def test_caption_negatives_are_false_minimal_edits_of_their_caption(tmp_path, world):
    from vladva.toyworld.captions import parse_caption
    from vladva.toyworld.shapes import check_dataset

    out = tmp_path / world
    summary = generate_shapes_dataset(out, ShapesDataConfig(seed=3, world=world, **TINY), progress=False)
    records, _ = read_manifest(out / "train.jsonl")
    n = swaps = 0
    kinds = Counter()
    for r in records:
        scene = Scene.from_dict(r.meta["scene"])
        assert r.caption_negatives == [] or len(r.caption_negatives) == len(r.captions)  # [] when none
        for cap, negs in zip(r.captions, r.caption_negatives):
            assert len(negs) <= 2 and len({x.text for x in negs}) == len(negs)
            for x in negs:
                neg = x.text
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
                # typed by what the edit is: a binding swap changes which objects are described
                # (size, colour, shape); a relation replaced or an order swap describes the same ones
                assert x.kind == negative_kind(pc, pn) and x.kind in (
                    "swap_att",
                    "swap_obj",
                    "swap_order",
                    "replace_rel",
                )
                described = Counter(o.key() for o in pc.objects) != Counter(o.key() for o in pn.objects)
                assert described == (x.kind in BINDING_KINDS), (cap, neg, x.kind)
                kinds[x.kind] += 1
                if world == "hard":
                    assert not any(f"{c} {s}" in neg for c, s in HARD_HELDOUT), neg
            n += len(negs)
    assert n >= len(records) and swaps >= n / 3
    assert summary["train"]["caption_negatives"] == n
    assert summary["train"]["negative_kinds"]["caption_negatives"] == dict(sorted(kinds.items()))
    assert {"swap_att", "swap_obj", "replace_rel"} <= set(kinds)
    assert check_dataset(out)["problems"] == []  # `vladva data check` verifies them too
    # ... and finds a negative typed as what it is not
    lines = (out / "train.jsonl").read_text().splitlines()
    k, rec = next((k, json.loads(ln)) for k, ln in enumerate(lines) if '"kind": "replace_rel"' in ln)
    c = next(c for c, negs in enumerate(rec["caption_negatives"]) if any(x["kind"] == "replace_rel" for x in negs))
    wrong = next(x for x in rec["caption_negatives"][c] if x["kind"] == "replace_rel")
    wrong["kind"] = "swap_att"
    lines[k] = json.dumps(rec)
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    problems = check_dataset(out)["problems"]
    assert len(problems) == 1 and f"train.jsonl:{k + 1} negative of kind 'swap_att'" in problems[0], problems


@pytest.mark.parametrize(
    ("caption", "negative", "kind"),
    [
        ("a red circle left of a blue square", "a blue circle left of a red square", "swap_att"),
        (
            "a small red circle left of a large blue square",
            "a large red circle left of a small blue square",
            "swap_att",
        ),
        ("a red circle left of a blue square", "a red square left of a blue circle", "swap_obj"),
        ("a red circle left of a blue square", "a red circle right of a blue square", "replace_rel"),
        (
            "the red circle is bigger than the blue square",
            "the red circle is smaller than the blue square",
            "replace_rel",
        ),
        # a swap of two objects with nothing else to bind exchanges them whole: a relation change
        ("a circle left of a square", "a square left of a circle", "swap_order"),
        ("a red shape above a blue shape", "a blue shape above a red shape", "swap_order"),
        ("a red circle left of a blue square", "a blue square left of a red circle", "swap_order"),
        # `hard_negative("replace_rel")` keeps only the first of two relations
        (
            "three shapes: a red circle left of a blue square, and a green cross above the blue square",
            "three shapes: a red circle right of a blue square, and a green cross",
            "replace_rel",
        ),
        ("a red circle left of a blue square", "a red circle left of a green square", "replace_att"),
        ("a red circle left of a blue square", "a red cross left of a blue square", "replace_obj"),
        ("a red circle left of a blue square", "a red circle left of a blue square", None),
        ("a red circle left of a blue square", "a green cross right of a blue square", None),
        ("a red circle left of a blue square", "a red circle", None),
    ],
)
def test_negative_kind_reads_the_edit_from_the_claims(caption, negative, kind):
    from vladva.toyworld.captions import parse_caption

    assert negative_kind(parse_caption(caption), parse_caption(negative)) == kind


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
    """Tiny data whose even records carry two negative captions (a swap_att and a replace_rel)
    and odd records none."""
    out = write_tiny_manifest(tmp_path_factory.mktemp("data"), n_train=16, n_val=8)
    records, _ = read_manifest(out / "train.jsonl")
    for i, r in enumerate(records):
        if i % 2 == 0:
            r.negative_captions = [Negative(f"wrong one {i}", "swap_att"), Negative(f"wrong two {i}", "replace_rel")]
    write_manifest(out / "train.jsonl", records)
    return out


@pytest.fixture(scope="module")
def builder(base):
    """The tiny model's input builder: what the collator needs to make a batch's tensors."""
    from vladva.model.vladva import VladVA

    return VladVA.from_pretrained(base).inputs


def collate(builder, records, indices, epoch=0, ntp=2, choice="first", hard_negatives=0, kinds=None):
    collator = StepCollator(builder, ntp, choice, 0, hard_negatives=hard_negatives, negative_kinds=kinds)
    return collate_records(collator, records, indices, epoch)


def texts(negatives) -> list[str]:
    return [x.text for x in negatives]


def test_collator_picks_seeded_negatives_per_image(builder, data):
    records = load_records(data / "train.jsonl", strict=True)
    batch = collate(builder, records, [0, 1, 2, 5], epoch=3, hard_negatives=1)
    # one negative per record that has some, none for the others; rows point at their image
    assert len(batch.negatives) == 2 and batch.negative_rows == [0, 2]
    assert batch.negatives[0] in texts(records[0].negative_captions)
    assert batch.negatives[1] in texts(records[2].negative_captions)
    # each negative's kind travels with it
    assert batch.negative_kinds == [
        next(x.kind for x in records[i].negative_captions if x.text == n) for i, n in zip((0, 2), batch.negatives)
    ]
    # the text tower's tensors hold the captions, then the negatives
    assert [len(t) for t in batch.text_chunks] == [4 + 2]
    again = collate(builder, records, [0, 1, 2, 5], epoch=3, hard_negatives=1)
    assert again.negatives == batch.negatives  # a pure function of (seed, epoch, record): resumable
    both = collate(builder, records, [0, 1, 2], hard_negatives=5)
    assert sorted(both.negatives) == sorted(texts(records[0].negative_captions + records[2].negative_captions))
    assert both.negative_rows == [0, 0, 2, 2]
    off = collate(builder, records, [0, 1, 2])
    assert off.negatives == [] and off.negative_rows == [] and [len(t) for t in off.text_chunks] == [3]
    # a "negative" equal to a caption of the batch is dropped (it would be a positive for that image)
    records[0].negative_captions = [records[2].captions[0]]
    dup = collate(builder, records, [0, 2], hard_negatives=1)
    assert len(dup.negatives) == 1 and dup.negatives[0] in texts(records[2].negative_captions)
    assert dup.negative_rows == [1] and len(dup.negative_kinds) == 1


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


def test_collator_draws_only_the_selected_kinds(builder, data):
    records = load_records(data / "train.jsonl", strict=True)
    r = records[0]
    r.captions = ["cap"]
    r.caption_negatives = [
        [Negative("bind a", "swap_att"), Negative("rel a", "replace_rel"), Negative("bind o", "swap_obj"), "plain"]
    ]
    r.negative_captions = [Negative("record bind", "swap_obj"), Negative("record rel", "replace_rel")]

    def drawn(kinds, k=10):
        batch = collate(builder, records, [0], ntp=0, hard_negatives=k, kinds=kinds)
        return sorted(zip(batch.negatives, batch.negative_kinds))

    binding = [("bind a", "swap_att"), ("bind o", "swap_obj"), ("record bind", "swap_obj")]
    assert drawn(["swap_att", "swap_obj"]) == binding
    assert drawn(["untyped"]) == [("plain", "untyped")]  # a plain string is of unknown kind
    assert drawn(["replace_rel", "untyped"]) == [
        ("plain", "untyped"),
        ("record rel", "replace_rel"),
        ("rel a", "replace_rel"),
    ]
    assert len(drawn(["all"])) == 6 and drawn(["all"]) == drawn(None)
    assert drawn(["swap_order"]) == []
    # the caption's own negatives of the selected kinds come first, then the record's
    assert sorted(
        collate(builder, records, [0], ntp=0, hard_negatives=2, kinds=["swap_att", "swap_obj"]).negatives
    ) == [
        "bind a",
        "bind o",
    ]
    # with every kind selected the draw is the one made before kinds existed (same seeded sample)
    plain = [texts(as_negatives(negs)) for negs in r.caption_negatives], texts(as_negatives(r.negative_captions))
    typed = collate(builder, records, [0], epoch=5, ntp=0, hard_negatives=3)
    r.caption_negatives, r.negative_captions = plain
    assert collate(builder, records, [0], epoch=5, ntp=0, hard_negatives=3).negatives == typed.negatives


def test_a_selected_kind_missing_from_the_data_is_reported(data, caplog):
    from vladva.train.trainer import _check_negative_kinds

    records = load_records(data / "train.jsonl", strict=True)
    with caplog.at_level("WARNING"):
        _check_negative_kinds(records, ["swap_att", "swap_order"], 1, "train.jsonl")
        _check_negative_kinds(records, ["swap_obj"], 1, "train.jsonl")
        _check_negative_kinds(records, ["all"], 1, "train.jsonl")
    assert caplog.messages == [
        "data.negative_kinds: swap_order is not in train.jsonl (its negatives are of kinds replace_rel, swap_att)",
        "data.negative_kinds: swap_obj is not in train.jsonl (its negatives are of kinds replace_rel, swap_att); "
        "training without hard negatives",
    ]


def test_hard_negative_accuracy_per_kind_on_hand_made_scores():
    from vladva.train.step import hard_negative_accuracy

    # four items (an image and its caption) with the caption's score, and their negatives' scores
    positive = torch.tensor([0.9, 0.5, 0.7, 0.9])
    negative = torch.tensor([0.8, 0.95, 0.6, 0.4, 0.7, 0.1, 0.2, 0.1])
    item = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    kinds = ["swap_att", "replace_rel", "swap_att", "swap_obj", "replace_rel", "swap_att", "swap_att", "swap_obj"]
    got = hard_negative_accuracy(positive, negative, item, kinds)
    assert list(got) == ["all", "replace_rel", "swap_att", "swap_obj"]
    # swap_att: item 0 wins (0.9 > 0.8), item 1 loses (0.5 < 0.6), item 2 wins (0.7 > 0.2 and 0.1)
    assert (got["swap_att"].acc, got["swap_att"].items) == (pytest.approx(2 / 3), 3)
    assert got["swap_att"].chance == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)  # item 2 has two of them
    # swap_obj: items 1 and 3 win
    assert (got["swap_obj"].acc, got["swap_obj"].items, got["swap_obj"].chance) == (1.0, 2, 0.5)
    # replace_rel: item 0 loses (0.95), item 2 ties (0.7 = 0.7), and a tie counts against the model
    assert (got["replace_rel"].acc, got["replace_rel"].items) == (0.0, 2)
    # every negative at once: only item 3 beats all of its own
    assert (got["all"].acc, got["all"].items) == (0.25, 4)
    assert got["all"].chance == pytest.approx((1 / 3 + 1 / 3 + 1 / 4 + 1 / 2) / 4)


def test_training_batch_metrics_per_kind():
    from vladva.train.losses import BatchEmbeddings
    from vladva.train.step import _metrics

    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img = torch.stack([e0, e1])
    # image 0: a swap_att negative scoring 0.6 (beaten) and a replace_rel scoring 1.0 (a tie: lost);
    # image 1: a swap_obj negative scoring 0.6 (beaten)
    neg = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    emb = BatchEmbeddings(img, img.clone(), torch.tensor([0, 1]), torch.tensor([5, 6]), neg, [0, 0, 1])
    got = {k: float(v) for k, v in _metrics(emb, ["swap_att", "replace_rel", "swap_obj"]).items()}
    assert got == {
        "batch_acc": 1.0,
        "hard_neg_acc": 0.5,
        "hard_neg_acc/replace_rel": 0.0,
        "hard_neg_acc/swap_att": 1.0,
        "hard_neg_acc/swap_obj": 1.0,
    }


def test_held_out_hard_negative_accuracy_per_kind_matches_a_hand_computation(base, data):
    from vladva.model.vladva import VladVA
    from vladva.train.trainer import retrieval_recall

    records = load_records(data / "val.jsonl", strict=True)[:4]
    words = ["red circle", "blue square", "green triangle", "small cross", "large red square", "blue circle"]
    for i, r in enumerate(records):  # two captions each: the first with two negatives, the second with one or none
        r.caption_negatives = [
            [Negative(f"a {words[i]}", "swap_att"), Negative(f"a {words[i + 1]}", "replace_rel")],
            [Negative(f"a {words[i + 2]}", "swap_att")] if i % 2 == 0 else [],
        ]
    m = VladVA.from_pretrained(base)
    m.eval()
    got = retrieval_recall(m, records, batch_size=3)

    img = m.encode_images([r.image for r in records])
    captions = [c for r in records for c in r.captions]
    cap = dict(zip(captions, m.encode_texts(captions)))
    negs = sorted({x.text for r in records for ns in r.caption_negatives for x in ns})
    neg = dict(zip(negs, m.encode_texts(negs)))
    for kind in ("all", "swap_att", "replace_rel"):
        wins, items = 0, 0
        for i, r in enumerate(records):
            for c, text in enumerate(r.captions):
                own = [x.text for x in r.caption_negatives[c] if kind in ("all", x.kind)]
                if own:
                    items += 1
                    wins += float(img[i] @ cap[text]) > max(float(img[i] @ neg[t]) for t in own)
        assert got["hard_neg_items"][kind] == items and got["hard_neg_acc"][kind] == round(wins / items, 4), kind
    assert got["hard_neg_items"] == {"all": 6, "replace_rel": 4, "swap_att": 6}
    # chance: 1/3 for the 4 captions with two negatives, 1/2 for the 2 with one
    assert got["hard_neg_chance"]["all"] == round((4 / 3 + 2 / 2) / 6, 4) and got["hard_neg_chance"]["swap_att"] == 0.5
    assert got["n_images"] == 4 and "t2i_r1" in got


def test_training_logs_held_out_hard_negative_accuracy_at_each_evaluation(base, data, tmp_path):
    """`vladva train` with a val manifest whose captions have typed negatives: every evaluation
    record in metrics.jsonl carries the per-kind accuracy, and the command prints it."""
    from typer.testing import CliRunner

    from vladva.cli import app

    records = load_records(data / "val.jsonl", strict=True)
    for r in records:
        r.caption_negatives = [[Negative("a red circle", "swap_att"), Negative("a blue square", "replace_rel")], []]
    write_manifest(data / "val_negatives.jsonl", records)  # beside the images: paths stay relative
    run = tmp_path / "run"
    args = [f"base_model={base}", f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val_negatives.jsonl'}"]
    args += [f"output_dir={run}", "data.contrastive_batch_size=4", "data.ntp_batch_size=0", "optim.max_steps=1"]
    args += ["eval.max_images=4", "checkpoint.every=0", "progress=false", "num_threads=1"]
    res = CliRunner().invoke(app, ["train", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    evals = [json.loads(ln)["eval"] for ln in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
    assert len(evals) == 2  # zero-shot and final
    for e in evals:
        assert set(e["hard_neg_acc"]) == {"all", "swap_att", "replace_rel"}
        assert e["hard_neg_items"] == {"all": 4, "swap_att": 4, "replace_rel": 4}  # 4 images, first captions
        assert e["hard_neg_chance"] == {"all": round(1 / 3, 4), "swap_att": 0.5, "replace_rel": 0.5}
    assert "held-out hard-negative accuracy: all " in res.output and "(chance 0.50)" in res.output


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
    result.config = cfg
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return result, [r for r in rows if "loss" in r]


def test_short_training_run_with_hard_negatives(base, data, tmp_path):
    result, rows = _run_with_hard_negatives(base, data, tmp_path / "run")
    assert result.steps == 3 and len(rows) == 3
    assert all(torch.isfinite(torch.tensor(r["contrastive"])) for r in rows)
    # the share of images whose caption outscores its own negatives is logged, overall and per kind
    assert all(0.0 <= r["hard_neg_acc"] <= 1.0 for r in rows)
    per_kind = {k for r in rows for k in r if k.startswith("hard_neg_acc/")}
    assert per_kind == {"hard_neg_acc/swap_att", "hard_neg_acc/replace_rel"}
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in per_kind if k in r)
    # GradCache takes hard negatives too, and trains the same steps (same losses, up to float rounding)
    _, cached = _run_with_hard_negatives(base, data, tmp_path / "gc", "grad_cache.chunk_size=3")
    assert len(cached) == 3
    for a, b in zip(rows, cached):
        assert {k for k in a if k.startswith("hard_neg")} == {k for k in b if k.startswith("hard_neg")}
        for key in (
            "loss",
            "contrastive",
            "ntp",
            "grad_norm",
            "logit_scale",
            *(k for k in a if k.startswith("hard_neg")),
        ):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    # binding-only: only the swap_att negatives are drawn
    _, binding = _run_with_hard_negatives(base, data, tmp_path / "bind", "data.negative_kinds=[swap_att]")
    assert {k for r in binding for k in r if k.startswith("hard_neg_acc/")} == {"hard_neg_acc/swap_att"}
    # a finished run whose saved recipe predates data.negative_kinds is still the same run: reused
    import yaml

    from vladva.train.trainer import train_or_reuse

    recipe = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(recipe.read_text())
    del saved["data"]["negative_kinds"]
    recipe.write_text(yaml.safe_dump(saved))
    said = []
    assert train_or_reuse(result.config, log=said.append) == result.checkpoint
    assert said == [f"reusing the finished run {result.checkpoint}"]


def test_hard_negatives_config_checks():
    with pytest.raises(ValueError, match="data.hard_negatives must be >= 0"):
        load_config(TrainConfig, None, ["data.hard_negatives=-1"])
    assert load_config(TrainConfig, None, []).data.negative_kinds == ["all"]
    assert load_config(TrainConfig, None, ["data.negative_kinds=[swap_att,swap_obj]"]).data.negative_kinds == [
        "swap_att",
        "swap_obj",
    ]
    with pytest.raises(ValueError, match="data.negative_kinds must be a non-empty list"):
        load_config(TrainConfig, None, ["data.negative_kinds=[]"])
    with pytest.raises(ValueError, match="'all' stands alone"):
        load_config(TrainConfig, None, ["data.negative_kinds=[all,swap_att]"])
