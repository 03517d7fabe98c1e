"""The embedded shapes data set: verified captions, layouts, determinism, worlds and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vladva.data.manifest import read_manifest, write_manifest
from vladva.toyworld.captions import (
    CaptionParseError,
    Claim,
    ObjectRef,
    Relation,
    Style,
    caption_is_true,
    claim_holds,
    count_tokens,
    parse_caption,
    render_claim,
    tokenize,
)
from vladva.toyworld.scene import Scene, SceneObject
from vladva.toyworld.shapes import generate_shapes_dataset, long_caption, make_instructions
from vladva.toyworld.splits import SUGARCREPE_CATEGORIES, SUGARCREPE_PP_CATEGORIES
from vladva.toyworld.world import HARD_HELDOUT, ShapesDataConfig, identifying_claim, short_captions

TINY = dict(n_train=60, n_val=10, n_retrieval=40, n_sugarcrepe=30, n_winoground=16, n_aro=30, n_zeroshot=24)


def _scenes(path: Path) -> dict[str, Scene]:
    return {k: Scene.from_dict(v) for k, v in json.loads(path.read_text()).items()}


@pytest.fixture(scope="module")
def default_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "default"
    generate_shapes_dataset(out, ShapesDataConfig(seed=3, **TINY), progress=False)
    return out


@pytest.fixture(scope="module")
def hard_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "hard"
    generate_shapes_dataset(out, ShapesDataConfig(seed=3, world="hard", **TINY), progress=False)
    return out


# ----------------------------------------------------------------------------- verifier, by hand

RED_CIRCLE = SceneObject("circle", "red", "small", 5.0, 16.0)
BLUE_SQUARE = SceneObject("square", "blue", "large", 25.0, 16.0)
HAND = Scene((RED_CIRCLE, BLUE_SQUARE))


@pytest.mark.parametrize(
    "caption, truth",
    [
        ("a red circle left of a blue square", True),
        ("a blue circle left of a red square", False),
        ("a red circle right of a blue square", False),
        ("a blue square to the right of a red circle", True),
        ("the red circle is above the blue square", False),  # same height: not above
        ("the blue square is bigger than the red circle", True),
        ("a large red circle", False),
        ("a small red circle", True),
        ("two objects: a red circle and a blue square", True),
        ("three shapes", False),
        ("a green triangle", False),
        ("a red shape left of a square", True),
    ],
)
def test_hand_written_captions_on_a_hand_built_scene(caption, truth):
    assert caption_is_true(caption, HAND) is truth


def test_relation_inside_the_threshold_is_ambiguous_never_true():
    # Centres 2.5 px apart in x (threshold 4 px): neither "left of" nor its negation is certain.
    near = Scene((SceneObject("circle", "red", "small", 14.0, 8.0), SceneObject("square", "blue", "small", 16.5, 24.0)))
    claim = parse_caption("a red circle left of a blue square")
    assert claim_holds(claim, near) is None
    assert not caption_is_true(claim, near)
    assert caption_is_true("a red circle above a blue square", near)  # 16 px apart in y
    assert claim_holds(claim, near, threshold=2.0) is True


def test_parse_reads_structure_and_rejects_unknown_words():
    c = parse_caption(
        "three shapes: a small red circle left of a large blue square, and a green cross below the red circle"
    )
    assert c.count == 3
    assert [o.key() for o in c.objects] == [
        ("circle", "red", "small"),
        ("square", "blue", "large"),
        ("cross", "green", None),
    ]
    assert c.relations == (Relation(0, "left of", 1), Relation(2, "below", 0))
    with pytest.raises(CaptionParseError, match="'dog'"):
        parse_caption("a red dog left of a blue square")


def test_render_then_parse_keeps_the_meaning():
    rng = random.Random(0)
    claims = [
        Claim((ObjectRef("circle", "red", "small"), ObjectRef("square", "blue")), (Relation(0, "left of", 1),)),
        Claim((ObjectRef("triangle", None, "large"),)),
        Claim(count=2),
        Claim(
            (ObjectRef("cross", "pink"), ObjectRef("circle", "white"), ObjectRef("square", "green", "large")),
            (Relation(0, "above", 1), Relation(2, "smaller than", 0)),
            count=3,
        ),
        Claim((ObjectRef(None, "orange"), ObjectRef("cross")), (Relation(0, "bigger than", 1),)),
    ]
    for claim in claims:
        for frame in ("plain", "is", "there"):
            for variant in range(3):
                text = render_claim(claim, Style(frame, variant, rng.choice(("objects", "shapes"))))
                assert parse_caption(text).meaning() == claim.meaning(), text


def test_instructions_answer_in_one_word_and_are_right():
    qa = dict(make_instructions(HAND, random.Random(0), n=100))
    assert qa["How many objects are there? Answer in one word:"] == "two"
    assert qa["What colour is the circle? Answer in one word:"] == "red"
    assert qa["What shape is the blue object? Answer in one word:"] == "square"
    assert qa["What size is the blue square? Answer in one word:"] == "large"
    assert qa["Which shape is the largest? Answer in one word:"] == "square"
    assert qa["Which shape is left of the blue square? Answer in one word:"] == "circle"
    binding = {q: a for q, a in qa.items() if q.startswith("Is there")}
    assert binding == {
        "Is there a blue circle? Answer in one word:": "no",
        "Is there a blue square? Answer in one word:": "yes",
    }
    assert all(len(a.split()) == 1 for a in qa.values())


def test_caption_lengths_in_tokens():
    assert count_tokens("a red circle, left of it.") == 8  # words and punctuation marks
    rng = random.Random(1)
    for _ in range(200):
        from vladva.toyworld.world import WORLDS, sample_world_scene

        world = WORLDS[rng.choice(("default", "hard"))]
        scene = sample_world_scene(rng, world, "train")
        for text in short_captions(scene, rng, 3, partial=world.partial_captions):
            assert count_tokens(text) < 30 and caption_is_true(text, scene), text
        assert 30 <= count_tokens(long_caption(scene, rng)) <= 500
        assert count_tokens(render_claim(identifying_claim(scene, rng, 4.0))) < 30


# ----------------------------------------------------------------------------- training manifests


def test_manifest_round_trip_and_every_training_caption_true(default_ds, tmp_path):
    records, report = read_manifest(default_ds / "train.jsonl")
    assert len(records) == 60 and not report.skipped
    for r in records:
        scene = Scene.from_dict(r.meta["scene"])
        assert r.image.is_file() and 1 <= len(r.captions) <= 3
        assert all(count_tokens(c) < 30 and caption_is_true(c, scene) for c in r.captions), r.captions
        assert 30 <= count_tokens(r.long_caption) <= 500
        for o in scene.objects:  # the long caption describes every object and the count
            assert f"{o.size} {o.colour} {o.shape}" in r.long_caption
        assert (
            f"there are {len(scene.objects)}" in r.long_caption.lower()
            or "two" in r.long_caption
            or "three" in r.long_caption
        )
        assert all(len(a.split()) == 1 for _, a in r.meta["qa"])
    write_manifest(tmp_path / "copy.jsonl", records)
    again, _ = read_manifest(tmp_path / "copy.jsonl", allow_outside_root=True)
    assert [(r.id, r.image, r.captions, r.long_caption, r.meta) for r in again] == [
        (r.id, r.image, r.captions, r.long_caption, r.meta) for r in records
    ]


def test_same_seed_same_bytes_other_seed_other_data(default_ds, tmp_path):
    again = tmp_path / "again"
    generate_shapes_dataset(again, ShapesDataConfig(seed=3, **TINY), progress=False)
    files = sorted(p.relative_to(default_ds) for p in default_ds.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((default_ds / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    generate_shapes_dataset(other, ShapesDataConfig(seed=4, **TINY), progress=False)
    assert (other / "train.jsonl").read_bytes() != (default_ds / "train.jsonl").read_bytes()
    assert (other / "retrieval/images/000000.png").read_bytes() != (
        default_ds / "retrieval/images/000000.png"
    ).read_bytes()


def test_evaluation_scenes_never_appear_in_training(default_ds):
    train = {json.dumps(r.meta["scene"], sort_keys=True) for r in read_manifest(default_ds / "train.jsonl")[0]}
    for path in default_ds.rglob("scenes.json"):
        for scene in json.loads(path.read_text()).values():
            assert json.dumps(scene, sort_keys=True) not in train, path


# ----------------------------------------------------------------------------- evaluation splits


def test_sugarcrepe_positives_true_negatives_false(default_ds, hard_ds):
    for ds in (default_ds, hard_ds):
        scenes = _scenes(ds / "sugarcrepe/scenes.json")
        for cat in SUGARCREPE_CATEGORIES:
            items = json.loads((ds / f"sugarcrepe/{cat}.json").read_text())
            assert len(items) >= 25, cat  # at most one per scene, rarely skipped
            for e in items.values():
                scene = scenes[e["filename"]]
                assert caption_is_true(e["caption"], scene), e
                assert claim_holds(parse_caption(e["negative_caption"]), scene) is False, e
        for cat in SUGARCREPE_PP_CATEGORIES:
            for e in json.loads((ds / f"sugarcrepe_pp/{cat}.json").read_text()).values():
                scene = scenes[e["filename"]]
                assert caption_is_true(e["caption"], scene) and caption_is_true(e["caption2"], scene), e
                assert e["caption2"] != e["caption"]
                assert claim_holds(parse_caption(e["negative_caption"]), scene) is False, e


def test_swap_negatives_use_the_same_words(default_ds):
    def words(text):  # "a" / "an" follows the next word, so it may change with a swap
        return sorted(t for t in tokenize(text) if t not in ("a", "an"))

    for cat in ("swap_obj", "swap_att"):
        for e in json.loads((default_ds / f"sugarcrepe/{cat}.json").read_text()).values():
            assert words(e["caption"]) == words(e["negative_caption"])


def test_winoground_same_words_each_caption_true_for_exactly_one_image(default_ds, hard_ds):
    for ds in (default_ds, hard_ds):
        scenes = _scenes(ds / "winoground/scenes.json")
        lines = [json.loads(x) for x in (ds / "winoground/examples.jsonl").read_text().splitlines()]
        assert len(lines) == 16 and {x["secondary_tag"] for x in lines} == {"colour", "shape", "size", "position"}
        for x in lines:
            assert (
                sorted(tokenize(x["caption_0"])) == sorted(tokenize(x["caption_1"]))
                and x["caption_0"] != x["caption_1"]
            )
            s0, s1 = scenes[x["image_0"]], scenes[x["image_1"]]
            assert (ds / "winoground/images" / f"{x['image_0']}.png").is_file()
            assert [caption_is_true(x["caption_0"], s) for s in (s0, s1)] == [True, False], x
            assert [caption_is_true(x["caption_1"], s) for s in (s0, s1)] == [False, True], x


def test_retrieval_captions_identify_their_image(default_ds):
    data = json.loads((default_ds / "retrieval/dataset_shapes.json").read_text())
    scenes = _scenes(default_ds / "retrieval/scenes.json")
    gallery = [scenes[im["filename"]] for im in data["images"]]
    truth = json.loads((default_ds / "retrieval/caption_truth.json").read_text())
    assert len(data["images"]) == 40
    for im in data["images"]:
        assert len(im["sentences"]) == 5 and im["split"] == "test"
        for s in im["sentences"]:
            assert count_tokens(s["raw"]) < 30
            hits = [i for i, g in enumerate(gallery) if caption_is_true(s["raw"], g)]
            assert hits == [im["imgid"]], s["raw"]
            assert truth["captions"][str(s["sentid"])] == {"count": 1, "images": hits}
    assert truth["summary"]["fraction_true_for_exactly_one_image"] == 1.0


def test_aro_true_captions_true_and_false_captions_false(default_ds):
    scenes = _scenes(default_ds / "aro/scenes.json")
    for name in ("visual_genome_relation.json", "visual_genome_attribution.json"):
        items = json.loads((default_ds / "aro" / name).read_text())
        assert len(items) == 30
        for e in items:
            scene = scenes[e["image_path"]]
            assert (
                caption_is_true(e["true_caption"], scene)
                and claim_holds(parse_caption(e["false_caption"]), scene) is False
            )
            assert sorted(tokenize(e["true_caption"])) == sorted(tokenize(e["false_caption"]))


def test_zeroshot_folders_hold_their_class(default_ds):
    for task in ("largest_shape", "largest_colour", "count"):
        folder = default_ds / "zeroshot" / task
        classes = (folder / "classnames.txt").read_text().split()
        assert all("{c}" in t for t in (folder / "templates.txt").read_text().splitlines())
        for rel, scene in _scenes(folder / "scenes.json").items():
            label = rel.split("/")[1]
            assert label in classes and (folder / rel).is_file()
            large = [o for o in scene.objects if o.size == "large"]
            if task == "count":
                assert label == ["two", "three"][len(scene.objects) - 2]
            else:
                assert len(large) == 1 and label == (large[0].shape if task == "largest_shape" else large[0].colour)


def test_the_evaluation_loaders_read_every_split(default_ds):
    """Every registered benchmark finds its split under the data set and reads it."""
    from vladva.eval.runner import EvalConfig, load_benchmarks, resolve_benchmarks

    cfg = EvalConfig(data=str(default_ds))
    loaded = load_benchmarks(cfg, resolve_benchmarks(cfg))
    in_vocabulary = ["retrieval", "sugarcrepe", "sugarcrepe_pp", "winoground", "aro", "zeroshot"]
    paraphrase = ["paraphrase_retrieval", "paraphrase_sugarcrepe", "paraphrase_winoground"]
    assert list(loaded) == [*in_vocabulary, *paraphrase, "binding"]
    rs = loaded["retrieval"]
    assert len(rs.images) == 40 and len(rs.captions) == 200 and rs.caption_true_count == [1] * 200
    assert len(loaded["sugarcrepe"]) == 7 and len(loaded["sugarcrepe_pp"]) == 5
    assert len(loaded["winoground"].captions_0) == 16
    assert [len(s.positives) for s in loaded["aro"]] == [30, 30]
    zs = next(t for t in loaded["zeroshot"] if t.name == "largest_shape")
    assert len(zs.images) == 24 and sorted(set(zs.labels)) == [0, 1, 2, 3]
    para = loaded["paraphrase_retrieval"]
    assert len(para.images) == 40 and len(para.captions) == 200
    assert para.caption_true_for == [[i // 5] for i in range(200)]  # each caption true for its own image only
    assert len(loaded["paraphrase_sugarcrepe"]) == 5 and len(loaded["paraphrase_winoground"].captions_0) == 16


# ----------------------------------------------------------------------------- hard world


def test_hard_world_holds_out_combinations_and_names_few_objects(hard_ds):
    records, _ = read_manifest(hard_ds / "train.jsonl")
    held = set(HARD_HELDOUT)
    for r in records + read_manifest(hard_ds / "val.jsonl")[0]:
        scene = Scene.from_dict(r.meta["scene"])
        assert 3 <= len(scene.objects) <= 4
        assert not {(o.colour, o.shape) for o in scene.objects} & held
        for c in r.captions:
            claim = parse_caption(c)
            assert len(claim.objects) <= 2 and claim.count is None, c
    retrieval = _scenes(hard_ds / "retrieval/scenes.json").values()
    with_held = sum(any((o.colour, o.shape) in held for o in s.objects) for s in retrieval)
    assert 10 <= with_held <= 40  # about half of the 40 test scenes by design, at least one each


# ----------------------------------------------------------------------------- CLI and reuse


def test_cli_help_run_skip_and_errors(tmp_path):
    from typer.testing import CliRunner

    from vladva.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["data", "shapes", "--help"]).exit_code == 0
    out = tmp_path / "cli"
    args = ["data", "shapes", "--out", str(out), "--n-train", "20", "--n-val", "5", "--n-test", "8", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "dataset_summary.json").read_text())
    assert (
        summary["train"]["images"] == 20
        and summary["retrieval"]["images"] == 8
        and summary["winoground"]["examples"] == 8
    )
    assert "n_train: 20" in (out / "data_config.yaml").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing written" in again.output
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    forced = runner.invoke(app, args + ["--force"])
    assert forced.exit_code == 0 and "wrote" in forced.output and (out / "train.jsonl").stat().st_mtime_ns >= stamp
    bad = runner.invoke(app, ["data", "shapes", "--out", str(out), "--set", "n_trian=3"])
    assert bad.exit_code == 2 and "n_train" in bad.output


def test_never_deletes_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "user" / "images"
    mine.mkdir(parents=True)
    (mine / "holiday.png").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="not written by"):
        generate_shapes_dataset(
            tmp_path / "user",
            ShapesDataConfig(n_train=2, n_val=1, n_retrieval=2, n_sugarcrepe=1, n_winoground=1, n_aro=1, n_zeroshot=1),
            progress=False,
        )
    assert (mine / "holiday.png").read_bytes() == b"not ours"


def test_changed_config_replaces_stale_files(tmp_path):
    small = dict(n_val=1, n_retrieval=2, n_sugarcrepe=1, n_winoground=1, n_aro=1, n_zeroshot=1)
    generate_shapes_dataset(tmp_path, ShapesDataConfig(n_train=5, **small), progress=False)
    summary = generate_shapes_dataset(tmp_path, ShapesDataConfig(n_train=3, **small), progress=False)
    assert summary["replaced"] and not summary["skipped"]
    assert sorted(p.name for p in (tmp_path / "images/train").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_generated_claims_read_back_to_the_same_meaning():
    from vladva.toyworld.captions import random_style
    from vladva.toyworld.world import WORLDS, sample_world_scene, short_claim

    rng = random.Random(7)
    for k in range(300):
        world = WORLDS[("default", "hard")[k % 2]]
        scene = sample_world_scene(rng, world, "train")
        for claim in (short_claim(scene, rng, 4.0, world.partial_captions), identifying_claim(scene, rng, 4.0)):
            text = render_claim(claim, random_style(rng))
            assert parse_caption(text).meaning() == claim.meaning(), text


def test_check_passes_on_generated_data_and_names_a_tampered_entry(default_ds, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.toyworld.shapes import check_dataset

    result = check_dataset(default_ds)
    assert result["problems"] == [] and result["checked"] > 500
    copy = tmp_path / "copy"
    shutil.copytree(default_ds, copy)
    path = copy / "sugarcrepe/swap_att.json"
    items = json.loads(path.read_text())
    items["2"]["negative_caption"] = items["2"]["caption"]  # a "negative" that is true
    path.write_text(json.dumps(items))
    problems = check_dataset(copy)["problems"]
    assert len(problems) == 1 and "swap_att.json: entry 2 negative_caption" in problems[0]
    cli = CliRunner().invoke(app, ["data", "check", str(copy)])
    assert cli.exit_code == 1 and "1 problem(s)" in cli.output
