"""The paraphrase split: words absent from training, truth by construction, determinism, nothing
else changed, its benchmarks through the harness, and the unknown-token rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vladva.toyworld.captions import Claim, ObjectRef, Relation, claim_holds, tokenize
from vladva.toyworld.paraphrase import (
    SHARED_WORDS,
    ParaphraseForm,
    claim_from_dict,
    claim_to_dict,
    lexicon_words,
    render_paraphrase,
)
from vladva.toyworld.paraphrase_splits import (
    CLAIMS_FILE,
    check_paraphrase_splits,
    paraphrase_texts,
    training_vocabulary,
)
from vladva.toyworld.scene import Scene
from vladva.toyworld.shapes import generate_shapes_dataset
from vladva.toyworld.world import ShapesDataConfig

TINY = dict(n_train=60, n_val=10, n_retrieval=30, n_sugarcrepe=24, n_winoground=12, n_aro=8, n_zeroshot=8)


@pytest.fixture(scope="module")
def para_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("para") / "default"
    generate_shapes_dataset(out, ShapesDataConfig(seed=4, **TINY), progress=False)
    return out


@pytest.fixture(scope="module")
def hard_para_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("para") / "hard"
    generate_shapes_dataset(out, ShapesDataConfig(seed=4, world="hard", **TINY), progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(folder: Path) -> dict[str, Scene]:
    return {k: Scene.from_dict(v) for k, v in json.loads((folder / "scenes.json").read_text()).items()}


# ----------------------------------------------------------------------------- the words


def test_renderer_on_a_hand_built_claim():
    claim = Claim((ObjectRef("circle", "red", "small"), ObjectRef("square", "blue")), (Relation(0, "below", 1),), 2)
    words = next(
        w for w in range(1000) if ParaphraseForm(words=w).pick("colour/red", ("crimson", "scarlet")) == "crimson"
    )
    form = ParaphraseForm("fronted", "group", words)
    text = render_paraphrase(claim, form)
    assert text.startswith("a pair of ") and ": " in text and " crimson " in text
    assert text.split(": ")[1].split()[0] in ("beneath", "underneath")  # the clause is reordered
    assert claim_from_dict(json.loads(json.dumps(claim_to_dict(claim)))) == claim
    # The same form words a concept the same way everywhere, so swapped captions share their words.
    swapped = Claim((ObjectRef("circle", "blue", "small"), ObjectRef("square", "red")), claim.relations, 2)
    assert sorted(tokenize(render_paraphrase(swapped, form))) == sorted(tokenize(text))
    with pytest.raises(ValueError, match="fronted"):
        render_paraphrase(Claim(claim.objects, (Relation(0, "bigger than", 1),)), form)


def test_no_lexicon_word_occurs_in_training_or_in_the_base_vocabulary(para_ds, hard_para_ds):
    from vladva.data.vocab import load_tokenizer

    lexicon = lexicon_words()
    base_vocab = set(load_tokenizer("default").get_vocab())  # every word the shapes grammar has
    assert not lexicon & base_vocab
    for ds in (para_ds, hard_para_ds):
        seen = training_vocabulary(ds)
        assert not lexicon & seen
        used = {t for texts in paraphrase_texts(ds).values() for x in texts for t in tokenize(x)}
        assert used <= lexicon | SHARED_WORDS, used - lexicon - SHARED_WORDS
        assert used & seen <= SHARED_WORDS


def test_summary_reports_the_unseen_and_unknown_token_fractions(para_ds):
    summary = json.loads((para_ds / "dataset_summary.json").read_text())["paraphrase"]
    texts = [x for items in paraphrase_texts(para_ds).values() for x in items]
    toks = [t for x in texts for t in tokenize(x)]
    seen = training_vocabulary(para_ds)
    unseen = summary["unseen_in_training"]
    assert unseen["all"]["tokens"] == len(toks)
    assert unseen["all"]["unseen_fraction"] == round(sum(t not in seen for t in toks) / len(toks), 4)
    assert 0.5 < unseen["all"]["unseen_fraction"] < 1 and set(unseen["seen_tokens_used"]) <= SHARED_WORDS
    tok = summary["tokenizer"]
    assert tok["tokenizer"] == "default" and tok["unknown_token_rate"] >= unseen["all"]["unseen_fraction"] - 0.05
    assert tok["in_vocabulary_retrieval_unknown_token_rate"] == 0.0
    assert {w for w, _ in tok["most_lost_words"]} <= lexicon_words()


# ----------------------------------------------------------------------------- truth


def test_every_positive_true_every_negative_false_from_the_stored_claims(para_ds, hard_para_ds):
    for ds in (para_ds, hard_para_ds):
        root = ds / "paraphrase"
        scenes = _scenes(root / "sugarcrepe")
        claims = json.loads((root / "sugarcrepe" / CLAIMS_FILE).read_text())
        n = 0
        for cat in ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att"):
            items = json.loads((root / "sugarcrepe" / f"{cat}.json").read_text())
            assert len(items) > 0
            for key, e in items.items():
                scene = scenes[e["filename"]]
                for field, want in (("caption", True), ("negative_caption", False)):
                    stored = claims[cat][key][field]
                    claim = claim_from_dict(stored["claim"])
                    assert render_paraphrase(claim, ParaphraseForm.from_dict(stored["form"])) == e[field]
                    assert claim_holds(claim, scene) is want, (cat, key, field)
                    n += 1
                if cat.startswith("swap"):  # the same words; "a" / "an" follows the next word
                    words = [
                        sorted(t for t in tokenize(e[f]) if t not in ("a", "an"))
                        for f in ("caption", "negative_caption")
                    ]
                    assert words[0] == words[1]
        assert n > 100
        scenes = _scenes(root / "winoground")
        claims = json.loads((root / "winoground" / CLAIMS_FILE).read_text())
        for line in (root / "winoground" / "examples.jsonl").read_text().splitlines():
            x = json.loads(line)
            assert (
                sorted(tokenize(x["caption_0"])) == sorted(tokenize(x["caption_1"]))
                and x["caption_0"] != x["caption_1"]
            )
            pair = (scenes[x["image_0"]], scenes[x["image_1"]])
            for k in (0, 1):
                claim = claim_from_dict(claims[str(x["id"])][f"caption_{k}"]["claim"])
                assert [claim_holds(claim, s) for s in pair] == [k == 0, k == 1]
        truth = json.loads((root / "retrieval" / "caption_truth.json").read_text())
        data = json.loads((root / "retrieval" / "dataset_shapes_paraphrase.json").read_text())
        assert truth["summary"]["fraction_true_for_exactly_one_image"] == 1.0
        for im in data["images"]:
            assert all(truth["captions"][str(s["sentid"])]["images"] == [im["imgid"]] for s in im["sentences"])


def test_check_covers_the_split_and_names_a_tampered_entry(para_ds, tmp_path):
    import shutil

    from vladva.toyworld.shapes import check_dataset

    checked, problems = check_paraphrase_splits(para_ds)
    assert problems == [] and checked > 200
    assert check_dataset(para_ds)["problems"] == []
    copy = tmp_path / "copy"
    shutil.copytree(para_ds, copy)
    path = copy / "paraphrase/sugarcrepe/swap_att.json"
    items = json.loads(path.read_text())
    items["1"]["negative_caption"] = items["1"]["caption"]  # a "negative" that is the true caption
    path.write_text(json.dumps(items))
    claims_path = copy / "paraphrase/sugarcrepe" / CLAIMS_FILE
    claims = json.loads(claims_path.read_text())
    claims["swap_att"]["1"]["negative_caption"] = claims["swap_att"]["1"]["caption"]  # and its stored claim too
    claims_path.write_text(json.dumps(claims))
    problems = check_dataset(copy)["problems"]
    assert (
        len(problems) == 1
        and "swap_att.json: entry 1 negative_caption" in problems[0]
        and "should be false" in problems[0]
    )
    items["1"]["negative_caption"] = items["1"]["negative_caption"].replace(" ", "  ", 1)  # text no longer its claim
    path.write_text(json.dumps(items))
    assert "is not its claim in its form" in check_dataset(copy)["problems"][0]


# ----------------------------------------------------------------------------- determinism, nothing else changes


def test_deterministic_and_every_other_file_byte_identical_without_it(para_ds, tmp_path):
    again = tmp_path / "again"
    generate_shapes_dataset(again, ShapesDataConfig(seed=4, **TINY), progress=False)
    assert _files(again / "paraphrase") == _files(para_ds / "paraphrase")
    other = tmp_path / "other"
    generate_shapes_dataset(other, ShapesDataConfig(seed=5, **TINY), progress=False)
    assert (
        _files(other / "paraphrase/sugarcrepe")["swap_att.json"]
        != _files(para_ds / "paraphrase/sugarcrepe")["swap_att.json"]
    )

    without = tmp_path / "without"
    generate_shapes_dataset(without, ShapesDataConfig(seed=4, paraphrase=False, **TINY), progress=False)
    assert not (without / "paraphrase").exists()
    listed = ("dataset_summary.json", "data_config.yaml")
    with_files = {k: v for k, v in _files(para_ds).items() if not k.startswith("paraphrase/") and k not in listed}
    assert with_files == {k: v for k, v in _files(without).items() if k not in listed}
    summary = json.loads((para_ds / "dataset_summary.json").read_text())
    bare = json.loads((without / "dataset_summary.json").read_text())
    summary.pop("paraphrase")
    for s in (summary, bare):
        s.pop("config")
    assert summary == bare


# ----------------------------------------------------------------------------- the benchmarks


def test_paraphrase_benchmarks_run_through_the_harness_with_the_toy_embedder(para_ds, tmp_path):
    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, write_report
    from vladva.eval.runner import EvalConfig, discover_benchmarks, run_evaluation

    found = discover_benchmarks(para_ds)
    assert found["paraphrase_retrieval"].name == "dataset_shapes_paraphrase.json"
    assert found["paraphrase_sugarcrepe"] == para_ds / "paraphrase/sugarcrepe"
    cfg = EvalConfig(
        data=str(para_ds),
        suites=["retrieval", "sugarcrepe", "paraphrase_retrieval", "paraphrase_sugarcrepe", "paraphrase_winoground"],
        use_cache=False,
        show_progress=False,
    )
    res = run_evaluation([load_model("toy=toy:colours")], cfg, log=lambda _: None)
    m = res["models"][0]["metrics"]
    # The toy reads colour words only: it finds colours named in training's words, none in synonyms.
    assert m["sugarcrepe"]["replace_att"] > 90 and m["paraphrase_sugarcrepe"]["replace_att"] == 0
    assert m["retrieval"]["t2i_R@1"] > 3 * m["paraphrase_retrieval"]["t2i_R@1"]
    assert set(m["paraphrase_sugarcrepe"]) == {"replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att"}
    assert m["paraphrase_winoground"] == {"text": 0.0, "image": 0.0, "group": 0.0}
    counts = res["models"][0]["counts"]
    assert counts["paraphrase_retrieval"]["images"] == 30 and counts["paraphrase_winoground"] == {"examples": 12}
    md = write_report(as_report(res, str(tmp_path)), tmp_path)["md"].read_text()
    for column in ("para T→I R@1", "para I→T R@1", "para swap_att", "para replace_rel", "para Wino group"):
        assert f" {column} |" in md
    assert "para = the paraphrase split" in md and "Wino = Winoground" not in md  # legends of what was run
    assert "### Paraphrase retrieval (recall %, ties against the model)" in md


def test_eval_flags_of_the_paraphrase_benchmarks(para_ds, tmp_path):
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.eval.benchmarks import get_benchmark
    from vladva.eval.runner import EvalConfig

    r = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"})
    assert "--paraphrase-retrieval" in r.output and "--paraphrase-winoground" in r.output
    # A user's --images (for their COCO copy) is retrieval's flag: the paraphrase subclass ignores it.
    cfg = EvalConfig(paths={"retrieval_images": "/data/coco"})
    assert get_benchmark("retrieval").option(cfg, "retrieval_images") == Path("/data/coco")
    assert get_benchmark("paraphrase_retrieval").option(cfg, "retrieval_images") is None
    r = CliRunner().invoke(
        app,
        ["eval", "-m", "toy:colours", "--paraphrase-winoground", str(para_ds / "paraphrase/winoground")]
        + ["--suite", "paraphrase_winoground", "-o", str(tmp_path / "run"), "--no-cache"],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["models"][0]["metrics"]) == {"paraphrase_winoground"}


def test_cli_reports_the_split_and_can_leave_it_out(tmp_path):
    from typer.testing import CliRunner

    from vladva.cli import app

    args = ["data", "shapes", "--n-train", "10", "--n-val", "2", "--n-test", "4", "--quiet"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "with")])
    assert r.exit_code == 0, r.output
    assert "paraphrase split (" in r.output and "% are <unk> to the shipped base's tokenizer" in r.output
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "without"), "--set", "paraphrase=false"])
    assert r.exit_code == 0 and "paraphrase split" not in r.output and not (tmp_path / "without/paraphrase").exists()
