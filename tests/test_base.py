"""The embedded default base models: tokenizer, vision labels, probes, the recipe end to end
through the CLI, save/load round trips, and that a short run learns."""

import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

from vladva.cli import app


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """A tiny shapes data set from the real generator: 48 train, 12 val images."""
    from vladva.toyworld.shapes import ShapesDataConfig, generate_shapes_dataset

    out = tmp_path_factory.mktemp("shapes")
    cfg = ShapesDataConfig(n_train=48, n_val=12, n_retrieval=4, n_sugarcrepe=2, n_winoground=2, n_aro=2, n_zeroshot=2)
    generate_shapes_dataset(out, cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def pretrained(shapes_data, tmp_path_factory):
    """`vladva base pretrain --quick` output folder (seconds)."""
    out = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    res = CliRunner().invoke(app, ["base", "pretrain", "--data", str(shapes_data), "--out", str(out), "--quick"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    from transformers import AutoTokenizer

    from vladva.toyworld.base.tokenizer import IMAGE_SUMMARY_PROMPT, train_word_tokenizer

    tok = train_word_tokenizer(["a red circle, left of a blue square.", "What colour is it? Answer in one word:"])
    assert [tok.convert_tokens_to_ids(t) for t in ("<pad>", "<unk>", "<s>", "</s>", "<image>")] == [0, 1, 2, 3, 4]
    ids = tok("A red circle, left of a blue square.")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a red circle, left of a blue square."
    # "<image>" is one token even glued to text; the summary prompt is always in the vocabulary.
    assert tok("<image>red", add_special_tokens=False)["input_ids"] == [4, tok.convert_tokens_to_ids("red")]
    assert tok.unk_token_id not in tok(IMAGE_SUMMARY_PROMPT)["input_ids"]
    assert tok("a purple hexagon", add_special_tokens=False)["input_ids"][1:] == [tok.unk_token_id] * 2
    batch = tok(["red", "a red circle"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0]  # left padding by default
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        back("a red circle left of a blue square.")["input_ids"]
        == tok("a red circle left of a blue square.")["input_ids"]
    )
    assert back.padding_side == "left"


# --- vision labels and probes ----------------------------------------------------------------


def test_vision_labels_of_a_hand_made_scene():
    from vladva.toyworld.base.data import SceneVocab
    from vladva.toyworld.base.vision import vision_labels
    from vladva.toyworld.scene import Scene, SceneObject

    scene = Scene((SceneObject("square", "red", "large", 8.0, 8.0), SceneObject("circle", "blue", "small", 24.0, 24.0)))
    vocab = SceneVocab(shapes=["circle", "square"], colours=["blue", "red"], sizes=["large", "small"])
    lab = vision_labels([scene], vocab, patch_size=4)
    shape = lab["patch_shape"][0].view(8, 8)
    colour = lab["patch_colour"][0].view(8, 8)
    assert shape[1, 1] == 1 and colour[1, 1] == 1  # patch covering the square's centre: square, red
    assert shape[5, 5] == 0 and colour[5, 5] == 0  # the circle's centre patch: circle, blue
    assert shape[0, 7] == 2 and colour[0, 7] == 2  # empty corner: background class (= len(vocab))
    assert lab["shape_colour"][0].tolist() == [0, 1]  # circle is blue, square is red
    assert lab["shape_size"][0].tolist() == [1, 0]
    assert lab["largest_shape"].item() == 1 and lab["largest_colour"].item() == 1


def test_linear_probe_is_perfect_on_separable_data_and_chance_on_noise():
    from vladva.toyworld.base.probes import linear_probe_accuracy

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.tensor([[5.0, 0], [-5, 0], [0, 5], [0, -5]])
    x = centres[y] + 0.5 * torch.randn(200, 2, generator=g)
    assert linear_probe_accuracy(x[:100], y[:100], x[100:], y[100:]) == 1.0
    noise = torch.randn(400, 8, generator=g)
    acc = linear_probe_accuracy(noise[:200], y.repeat(2)[:200], noise[200:], y.repeat(2)[200:])
    assert acc < 0.45  # 4 classes: chance is 0.25


def test_step_budget_warms_up_then_cools_down():
    from vladva.toyworld.base.training import StepBudget

    b = StepBudget(steps=100, warmup=10)
    assert b.lr_factor(0) == pytest.approx(0.1) and b.lr_factor(9) == pytest.approx(1.0)
    assert b.lr_factor(55) < 1.0 and b.lr_factor(100) == pytest.approx(0.05)
    assert not b.done(99) and b.done(100)
    assert StepBudget(steps=5, warmup=1, min_seconds=3600).done(5) is False


# --- the recipe end to end through the CLI ---------------------------------------------------


def test_pretrain_writes_the_shipped_layout(pretrained):
    for name in ("vision-tower", "base-lvlm", "clip-baseline"):
        d = pretrained / name
        assert (d / "config.json").is_file() and (d / "model.safetensors").is_file(), name
        assert not list(d.glob("*.bin")) and not list(d.glob("*.pt")), "safetensors only"
        compute = json.loads((d / "compute.json").read_text())
        assert compute["stages"][0]["stage"] == "vision" and compute["stages"][0]["steps"] == 4
    lvlm_stages = json.loads((pretrained / "base-lvlm" / "compute.json").read_text())["stages"]
    assert [s["stage"] for s in lvlm_stages] == ["vision", "lvlm"] and lvlm_stages[1]["steps"] == 4
    report = json.loads((pretrained / "pretrain_report.json").read_text())
    for key in (
        "vision_probes",
        "caption_token_accuracy",
        "instruction_accuracy",
        "generated_examples",
        "summary_prompt_zero_shot",
        "clip_baseline_retrieval",
        "compute",
    ):
        assert key in report, key
    assert set(report["caption_token_accuracy"]) == {"lvlm", "text_lm"}
    for part in ("all", "attribute", "relation", "count"):
        assert report["caption_token_accuracy"]["lvlm"][part]["tokens"] > 0, part
    zs = report["summary_prompt_zero_shot"]
    assert zs["images"] == 8 and zs["chance_r1"] == 12.5 and 0 <= zs["t2i_r1"] <= 100
    assert (pretrained / "config.yaml").is_file()


def test_base_lvlm_loads_with_auto_classes_and_reloads_identically(pretrained, shapes_data, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vladva.data.images import load_image
    from vladva.toyworld.base.data import load_split
    from vladva.toyworld.base.lvlm import ExampleBank
    from vladva.toyworld.base.tokenizer import IMAGE_SUMMARY_PROMPT

    d = pretrained / "base-lvlm"
    model = AutoModelForImageTextToText.from_pretrained(d).eval()
    processor = AutoProcessor.from_pretrained(d)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    val = load_split(shapes_data / "val.jsonl")
    images = [load_image(val.records[i].image) for i in range(2)]
    enc = processor(images=images, text=[f"<image>\n{IMAGE_SUMMARY_PROMPT}"] * 2, return_tensors="pt", padding=True)
    # The processor builds exactly the sequences the recipe trained on.
    bank = ExampleBank(val, processor.tokenizer, None, n_image_tokens=64)
    assert enc["input_ids"][0].tolist() == bank.image_example(0, IMAGE_SUMMARY_PROMPT, None)["ids"]
    with torch.no_grad():
        logits = model(**enc).logits
    model.save_pretrained(tmp_path)
    again = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(**enc).logits, logits)
    gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert gen.shape[0] == 2 and gen.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(processor.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)[0], str)


def test_clip_baseline_embeds_normalised_and_round_trips(pretrained, shapes_data, tmp_path):
    from vladva.data.manifest import read_manifest
    from vladva.embedder import Embedder
    from vladva.toyworld.base.clip_baseline import ClipBaselineEmbedder

    emb = ClipBaselineEmbedder.from_pretrained(pretrained / "clip-baseline")
    assert isinstance(emb, Embedder) and emb.name == "clip-baseline"
    records, _ = read_manifest(shapes_data / "val.jsonl")
    paths = [r.image for r in records[:5]]
    texts = [r.captions[0] for r in records[:5]] + ["a " + "very " * 100 + "long caption"]
    im, tx = emb.encode_images(paths, batch_size=2), emb.encode_texts(texts, batch_size=4)
    assert im.shape == (5, 16) and tx.shape == (6, 16) and im.dtype == torch.float32 and im.device.type == "cpu"
    assert torch.allclose(im.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(tx.norm(dim=1), torch.ones(6), atol=1e-5)
    emb.save_pretrained(tmp_path / "clip")
    back = ClipBaselineEmbedder.from_pretrained(tmp_path / "clip")
    assert torch.equal(back.encode_images(paths), emb.encode_images(paths))
    assert torch.equal(back.encode_texts(texts), emb.encode_texts(texts))


def test_baseline_train_cli_from_a_given_tower(pretrained, shapes_data, tmp_path):
    out = tmp_path / "clip"
    res = CliRunner().invoke(
        app,
        [
            "baseline",
            "train",
            "--data",
            str(shapes_data),
            "--out",
            str(out),
            "--vision",
            str(pretrained / "base-lvlm"),
            "--quick",
            "clip.steps=2",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "R@1" in res.output
    stages = json.loads((out / "compute.json").read_text())["stages"]
    # The given tower's own cost is carried over: the baseline's compute is tower + contrastive.
    assert [s["stage"] for s in stages] == ["vision", "clip"] and stages[1]["steps"] == 2
    # what it saw: image-caption pairs, and their text-tower tokens (each caption's words and </s>)
    assert stages[1]["pairs"] == stages[1]["examples"] > 0 and stages[1]["tokens"] > 2 * stages[1]["pairs"]
    assert stages[1]["long_captions"] == 0


def test_pretrain_resume_reuses_finished_stages(pretrained, shapes_data):
    before = (pretrained / "base-lvlm" / "model.safetensors").read_bytes()
    res = CliRunner().invoke(
        app,
        [
            "base",
            "pretrain",
            "--data",
            str(shapes_data),
            "--out",
            str(pretrained),
            "--quick",
            "stages=[vision,lvlm,clip]",
            "checks.caption_images=0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reusing" in res.output
    assert (pretrained / "base-lvlm" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["lvlm.stepz=3"], "unknown config key 'lvlm.stepz'; did you mean 'lvlm.steps'?"),
        (["stages=[vision,decoder]"], "unknown stage 'decoder'"),
        (["vision.batch_size=zero"], "'vision.batch_size' must be an integer"),
    ],
)
def test_pretrain_config_errors_name_the_key(shapes_data, tmp_path, args, message):
    res = CliRunner().invoke(
        app, ["base", "pretrain", "--data", str(shapes_data), "--out", str(tmp_path), "--quick", *args]
    )
    assert res.exit_code == 2 and message in res.output


def test_pretrain_errors_name_the_missing_file_and_record(tmp_path):
    res = CliRunner().invoke(
        app, ["base", "pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--quick"]
    )
    assert res.exit_code == 2 and "train.jsonl: no training manifest" in res.output
    from vladva.data.manifest import Record, write_manifest
    from vladva.toyworld.scene import SceneConfig, render_scene, sample_scene

    (tmp_path / "d").mkdir()
    scene = sample_scene(random.Random(0), SceneConfig())
    render_scene(scene).save(tmp_path / "d" / "a.png")
    write_manifest(
        tmp_path / "d" / "train.jsonl",
        [
            Record("a", tmp_path / "d" / "a.png", ["a thing"], None, {"scene": scene.to_dict()}),
            Record("b", tmp_path / "d" / "a.png", ["a thing"]),
        ],
    )
    res = CliRunner().invoke(
        app, ["base", "pretrain", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--quick"]
    )
    assert res.exit_code == 2 and "train.jsonl:2: record 'b' has no meta.scene" in res.output


def test_shipped_dirs_raise_a_clear_error_when_missing(monkeypatch, tmp_path):
    import vladva.pretrained as base
    import vladva.pretrained.folders as folders

    monkeypatch.setattr(folders, "PRETRAINED_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="vladva base pretrain"):
        base.shipped_base_dir()
    (tmp_path / "clip-baseline").mkdir()
    (tmp_path / "clip-baseline" / "config.json").write_text("{}")
    assert base.shipped_clip_dir() == tmp_path / "clip-baseline"


# --- learning --------------------------------------------------------------------------------


def test_short_training_lowers_the_captioning_loss(shapes_data):
    """40 small steps of image -> caption training lower the loss on a fixed batch well below
    its start (ln(vocab) for a fresh model)."""
    from vladva.toyworld.base.data import SceneVocab, load_split
    from vladva.toyworld.base.lvlm import (
        ExampleBank,
        LanguageModelConfig,
        LvlmPretrainConfig,
        build_lvlm,
        collate,
        train_generative,
    )
    from vladva.toyworld.base.recipe import _texts_for_tokenizer
    from vladva.toyworld.base.tokenizer import LONG_CAPTION_PROMPT, train_word_tokenizer
    from vladva.toyworld.base.vision import VisionTowerConfig, build_vision_tower

    torch.set_num_threads(1)
    train = load_split(shapes_data / "train.jsonl")
    tok = train_word_tokenizer(_texts_for_tokenizer(train))
    tower = build_vision_tower(VisionTowerConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2))
    lm = LanguageModelConfig(hidden_size=48, intermediate_size=96, num_layers=1, num_heads=2, max_positions=256)
    model = build_lvlm(tower, tok, lm)
    bank = ExampleBank(train, tok, SceneVocab.from_scenes(train.scenes), 64)
    batch = collate(
        [bank.image_example(i, LONG_CAPTION_PROMPT, train.records[i].long_caption) for i in range(8)],
        bank.pad,
        train.images,
        "cpu",
    )

    def loss():
        with torch.no_grad():
            return model(**batch).loss.item()

    start = loss()
    assert abs(start - math.log(len(tok))) < 0.5
    cfg = LvlmPretrainConfig(
        lm=lm, steps=40, batch_long=4, batch_short=0, batch_text=0, lr=3e-3, warmup=2, log_every=10
    )
    model, compute = train_generative(model, bank, cfg, torch.device("cpu"))
    assert compute.steps == 40 and compute.examples == 160
    assert loss() < 0.6 * start


def test_largest_object_labels_skip_ties():
    from vladva.toyworld.base.data import SceneVocab
    from vladva.toyworld.base.probes import scene_probe_targets
    from vladva.toyworld.base.vision import vision_labels
    from vladva.toyworld.scene import Scene, SceneObject

    tie = Scene((SceneObject("square", "red", "small", 8.0, 8.0), SceneObject("circle", "blue", "small", 24.0, 24.0)))
    clear = Scene((SceneObject("square", "red", "small", 8.0, 8.0), SceneObject("circle", "blue", "large", 22.0, 22.0)))
    vocab = SceneVocab(shapes=["circle", "square"], colours=["blue", "red"], sizes=["large", "small"])
    assert vision_labels([tie, clear], vocab, 4)["largest_shape"].tolist() == [-100, 0]
    t = scene_probe_targets([tie, clear], vocab)
    assert t["largest_shape"].tolist() == [-1, 0] and t["colour_of_square"].tolist() == [1, 1]
    assert t["count"].tolist() == [2, 2] and t["has_blue"].tolist() == [1, 1]
