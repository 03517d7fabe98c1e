"""The binding diagnostic: its data (swaps in pixels and words, deterministic, other splits
untouched), swap sensitivity and linear probes on hand-made features, stage read-outs of VladVA
and the CLIP-style baseline, and the benchmark through `run_evaluation` and the report."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vladva.eval import benchmarks as B
from vladva.eval.benchmarks.binding import load_binding
from vladva.eval.loaders import BenchmarkFormatError
from vladva.eval.models import LoadedModel
from vladva.eval.probes import grouped_probe_accuracy, swap_sensitivity
from vladva.eval.report import as_report, write_report
from vladva.eval.runner import EvalConfig, run_evaluation
from vladva.toyworld.binding import ITEMS_FILE, write_binding
from vladva.toyworld.captions import caption_is_true
from vladva.toyworld.scene import COLOURS, SHAPES, Scene, object_masks
from vladva.toyworld.shapes import generate_shapes_dataset
from vladva.toyworld.world import WORLDS, ShapesDataConfig

PALETTE = list(COLOURS)
SMALL = dict(n_train=8, n_val=4, n_retrieval=6, n_sugarcrepe=4, n_winoground=4, n_aro=4, n_zeroshot=3)


@pytest.fixture(scope="module")
def binding_data(tmp_path_factory):
    """A --data folder holding only a 120-item binding split."""
    root = tmp_path_factory.mktemp("binding_data")
    write_binding(root / "binding", ShapesDataConfig(seed=1, n_binding=120), WORLDS["default"], progress=False)
    return root


def _items(folder):
    return [json.loads(line) for line in (folder / ITEMS_FILE).read_text().splitlines()]


# ----------------------------------------------------------------------------- data


def test_swap_exchanges_the_colours_in_pixels_and_in_words(binding_data):
    folder = binding_data / "binding"
    scenes = {k: Scene.from_dict(v) for k, v in json.loads((folder / "scenes.json").read_text()).items()}
    items = _items(folder)
    assert len(items) == 120 and all(len(x["captions"]) == 2 for x in items)
    assert {c["form"] for x in items for c in x["captions"]} == {"pair", "list", "full"}  # not one template
    for x in items[:20]:
        scene, swapped = scenes[x["image"].split("/")[-1]], scenes[x["swap_image"].split("/")[-1]]
        a, b = scene.objects
        assert len({a.colour, b.colour}) == 2 and len({a.shape, b.shape}) == 2
        assert x["colours"] == {a.shape: a.colour, b.shape: b.colour}
        assert x["swap_colours"] == {a.shape: b.colour, b.shape: a.colour}
        # Pixels fully inside each object carry the other object's colour in the swapped image.
        original = np.asarray(Image.open(folder / x["image"]).convert("RGB"))
        swap = np.asarray(Image.open(folder / x["swap_image"]).convert("RGB"))
        for mask, obj, twin in zip(object_masks(scene), (a, b), (b, a)):
            inside = mask >= 1.0
            assert inside.sum() > 5
            assert (original[inside] == COLOURS[obj.colour]).all() and (swap[inside] == COLOURS[twin.colour]).all()
        background = object_masks(scene).sum(0) == 0
        assert (original[background] == 0).all() and (swap[background] == 0).all()
        for c in x["captions"]:
            words, swap_words = c["caption"].split(), c["swap_caption"].split()
            assert sorted(words) == sorted(swap_words) and words != swap_words  # the same bag, other order
            changed = [(u, v) for u, v in zip(words, swap_words) if u != v]
            assert {u for u, v in changed if u in COLOURS} == {a.colour, b.colour}
            assert all(u in COLOURS or u in ("a", "an") for u, _ in changed)  # colour words (and "a"/"an") moved
            assert caption_is_true(c["caption"], scene) and not caption_is_true(c["caption"], swapped)
            assert caption_is_true(c["swap_caption"], swapped) and not caption_is_true(c["swap_caption"], scene)
        assert x["other"] != x["id"]


def test_binding_split_is_deterministic_and_leaves_every_other_output_byte_identical(tmp_path):
    generate_shapes_dataset(tmp_path / "a", ShapesDataConfig(seed=2, n_binding=10, **SMALL), progress=False)
    generate_shapes_dataset(tmp_path / "b", ShapesDataConfig(seed=2, n_binding=10, **SMALL), progress=False)
    generate_shapes_dataset(tmp_path / "none", ShapesDataConfig(seed=2, n_binding=0, **SMALL), progress=False)
    a, b, none = tmp_path / "a", tmp_path / "b", tmp_path / "none"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert any(str(f).startswith("binding/") for f in files)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert not (none / "binding").exists()
    records = ("data_config.yaml", "dataset_summary.json")  # these gain the binding split's config and counts
    untouched = [f for f in files if not str(f).startswith("binding/") and f.name not in records]
    assert len(untouched) > 50 and all((a / f).read_bytes() == (none / f).read_bytes() for f in untouched)
    summary = json.loads((a / "dataset_summary.json").read_text())
    assert summary["binding"]["items"] == 10 and summary["binding"]["captions"] == 20
    from vladva.toyworld.shapes import check_dataset

    assert check_dataset(a)["problems"] == []


def test_loader_checks_the_items(binding_data, tmp_path):
    items = load_binding(binding_data / "binding")
    assert len(items) == 120 and items[0].image.path.is_file() and len(items[0].captions) == 2
    folder = tmp_path / "bad"
    (folder / "images").mkdir(parents=True)
    lines = _items(binding_data / "binding")[:3]
    for x in lines:
        for key in ("image", "swap_image"):
            (folder / x[key]).write_bytes((binding_data / "binding" / x[key]).read_bytes())
    lines[1]["swap_colours"] = lines[1]["colours"]
    (folder / ITEMS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(BenchmarkFormatError, match=r"items.jsonl:2: 'swap_colours' must be 'colours' with"):
        load_binding(folder)


# ----------------------------------------------------------------------------- measures on hand-made features


def test_swap_sensitivity_by_hand():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert swap_sensitivity(x, [(0, 1, 2)]) == 0.0  # the swap does not move the item
    assert swap_sensitivity(x, [(0, 2, 2)]) == 100.0  # as far as a random other item
    # cos(x0, x3) = 0.707: the swap moves it 0.293 of the way to an orthogonal other item.
    assert swap_sensitivity(x, [(0, 3, 2)]) == pytest.approx(100 * (1 - 2**-0.5))


def test_probe_reads_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    n = 800
    labels = torch.randint(0, 8, (n,), generator=g)
    groups = ["circle" if k % 2 else "square" for k in range(n)]
    train = [k < 500 for k in range(n)]
    separable = F.one_hot(labels, 8).float() * 3 + 0.3 * torch.randn(n, 8, generator=g)
    separable = torch.cat([separable, torch.randn(n, 24, generator=g)], dim=1)
    assert grouped_probe_accuracy(separable, range(n), groups, labels.tolist(), train) >= 99.0
    noise = torch.randn(n, 32, generator=g)
    assert grouped_probe_accuracy(noise, range(n), groups, labels.tolist(), train) < 25.0  # chance 12.5
    # The same features asked in a group with no held-out example are left out, not counted.
    assert np.isnan(grouped_probe_accuracy(noise, range(n), groups, labels.tolist(), [True] * n))


# ----------------------------------------------------------------------------- toy embedders


def _colour_histogram(image, halves: bool) -> list[float]:
    pal = np.array([COLOURS[c] for c in PALETTE], dtype=np.float32)
    px = np.asarray(image.convert("RGB"), dtype=np.float32)
    parts = [px[:, :16], px[:, 16:]] if halves else [px]
    out = []
    for part in parts:
        flat = part.reshape(-1, 3)
        dist = ((flat[:, None, :] - pal[None]) ** 2).sum(-1)
        solid = dist.min(1) < 30**2
        out += np.bincount(dist.argmin(1)[solid], minlength=len(PALETTE)).tolist()
    return out


class BagOfColoursEmbedder:
    """Images: which colours are present; texts: colour-word counts. Blind to which colour is where
    (a colour histogram would not be: swapping colours also swaps their areas)."""

    name = "bag"

    def encode_images(self, images, batch_size=32, show_progress=False):
        present = [[float(k > 0) for k in _colour_histogram(im, False)] for im in images]
        return F.normalize(torch.tensor(present), dim=-1)

    def encode_texts(self, texts, batch_size=64, show_progress=False):
        rows = [[t.split().count(c) for c in PALETTE] for t in texts]
        return F.normalize(torch.tensor(rows).float(), dim=-1)


class PhraseEmbedder(BagOfColoursEmbedder):
    """Images: a colour histogram of each half (colour per position); texts: counts of each
    "<colour> <shape>" phrase (bound pairs). Exposes two stages: the colour words, then the phrases."""

    name = "phrases"

    def encode_images(self, images, batch_size=32, show_progress=False):
        return F.normalize(torch.tensor([_colour_histogram(im, True) for im in images]).float(), dim=-1)

    def encode_texts(self, texts, batch_size=64, show_progress=False):
        return self.hidden_stages(texts=texts)["phrases"]

    def hidden_stages(self, images=None, texts=None, batch_size=32):
        if images is not None:
            return {"colours": torch.tensor([_colour_histogram(im, False) for im in images]).float()}
        phrases = []
        for t in texts:
            row = torch.zeros(len(PALETTE) * len(SHAPES))
            for colour, shape in re.findall(rf"({'|'.join(PALETTE)}) ({'|'.join(SHAPES)})", t):
                row[PALETTE.index(colour) * len(SHAPES) + SHAPES.index(shape)] += 1
            phrases.append(row)
        words = BagOfColoursEmbedder.encode_texts(self, texts)
        return {"colour words": words, "phrases": F.normalize(torch.stack(phrases), dim=-1)}


def test_benchmark_through_run_evaluation_report_and_chart(binding_data, tmp_path):
    models = [
        LoadedModel("bag", "toy:", BagOfColoursEmbedder(), identity="toy|bag"),
        LoadedModel("phrases", "toy:", PhraseEmbedder(), identity="toy|phrases"),
    ]
    cfg = EvalConfig(data=str(binding_data), use_cache=False, show_progress=False)
    res = run_evaluation(models, cfg, log=lambda _: None)
    bag, phrases = (m["metrics"]["binding"] for m in res["models"])
    assert res["models"][0]["counts"]["binding"] == {
        "items": 120,
        "captions": 240,
        "probe_train_items": 72,
        "probe_held_out_items": 48,
    }
    # A bag of words cannot see a swap, nor tell the two bindings of the same words apart.
    assert bag["swap"]["text"] == 0.0 and bag["swap"]["image"] == 0.0
    assert bag["probe"]["text"] <= 60 and bag["bag_of_words"]["swap"] == 0.0 and bag["bag_of_words"]["probe"] <= 60
    assert bag["probe"]["chance"] == 12.5 and [s["stage"] for s in bag["stages"]["text"]] == ["embedding"]
    # Colour per position moves with a swap; bound phrases move and are read by the probe.
    assert phrases["swap"]["image"] > 10 and phrases["swap"]["text"] > 10
    assert set(phrases["swap"]["text_by_form"]) == {"pair", "list", "full"}
    assert phrases["probe"]["text"] >= 95
    stages = {s["stage"]: s for s in phrases["stages"]["text"]}
    assert list(stages) == ["colour words", "phrases", "embedding"]
    assert stages["colour words"]["swap"] == 0.0 and stages["colour words"]["probe"] <= 60
    assert stages["phrases"] == stages["embedding"] | {"stage": "phrases"}

    paths = write_report(as_report(res, str(tmp_path)), tmp_path)
    md = paths["md"].read_text()
    assert "bind swap img | bind swap txt | bind probe img | bind probe txt" in md
    assert "| phrases | text | colour words |" in md and "bag of words (control)" in md
    assert "![binding probe accuracy by stage](binding_stages.png)" in md
    assert paths["binding_stages"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert B.get_benchmark("binding").path.flag == "--binding"


def test_limit_keeps_each_items_random_other_item(binding_data):
    cfg = EvalConfig(data=str(binding_data), suites=["binding"], limit=10, use_cache=False, show_progress=False)
    res = run_evaluation([LoadedModel("phrases", "toy:", PhraseEmbedder(), identity="p")], cfg, log=lambda _: None)
    assert res["models"][0]["counts"]["binding"]["items"] == 10
    assert res["models"][0]["metrics"]["binding"]["swap"]["text"] > 0


# ----------------------------------------------------------------------------- model stages


def test_vladva_stages_end_in_its_embedding_and_leave_the_forward_alone(tmp_path, binding_data):
    from vladva.model.vladva import VladVA
    from vladva.testing import build_tiny_llava

    model = VladVA.from_pretrained(build_tiny_llava(tmp_path / "llava"))
    images = [ref.image.load() for ref in load_binding(binding_data / "binding")[:5]]
    texts = ["a red circle left of a blue square", "two objects: the green cross and the pink triangle"]
    before = model.encode_images(images)
    stages = model.hidden_stages(images=images, batch_size=2)
    layers = model.family.language_model(model.model).config.num_hidden_layers
    expected = ["vision", "projector"] + [f"lm{k}{s}" for k in range(layers + 1) for s in ("", ".mean")]
    assert list(stages) == expected + ["embedding"] and all(v.shape[0] == 5 for v in stages.values())
    assert torch.allclose(stages["embedding"], before, atol=1e-5)
    assert stages["vision"].shape[1] == model.family.vision_tower(model.model).config.hidden_size
    assert stages["projector"].shape[1] == model.hidden_size
    assert torch.allclose(F.normalize(stages[f"lm{layers}"], dim=-1), before, atol=1e-5)
    assert torch.equal(model.encode_images(images), before)  # the hook is gone
    text_stages = model.hidden_stages(texts=texts)
    assert "vision" not in text_stages
    assert torch.allclose(F.normalize(text_stages[f"lm{layers}"], dim=-1), model.encode_texts(texts), atol=1e-5)
    model.config.pooling = "mean"  # a mean-pooling model has no separate mean reading
    assert [k for k in model.hidden_stages(texts=texts) if k.endswith(".mean")] == []
    with pytest.raises(ValueError, match="images or texts"):
        model.hidden_stages()


def test_clip_baseline_stages_end_in_its_pooled_positions(binding_data):
    from vladva.pretrained import shipped_clip_dir
    from vladva.toyworld.base.clip_baseline import ClipBaselineEmbedder

    emb = ClipBaselineEmbedder.from_pretrained(shipped_clip_dir())  # 1.65M parameters
    model, layers = emb.model, emb.model.config.vision_config.num_hidden_layers
    images = [item.image.load() for item in load_binding(binding_data / "binding")[:3]]
    stages = emb.hidden_stages(images=images)
    assert list(stages) == [f"vision{k}{s}" for k in range(layers + 1) for s in ("", ".mean")] + ["embedding"]
    assert torch.allclose(stages["embedding"], emb.encode_images(images), atol=1e-5)
    # The last layer's class token is what CLIP normalises and projects into the embedding.
    projected = model.visual_projection(model.vision_model.post_layernorm(stages[f"vision{layers}"]))
    assert torch.allclose(F.normalize(projected, dim=-1), emb.encode_images(images), atol=1e-5)
    texts = ["a red circle", "two objects: a blue square left of a red circle"]
    stages = emb.hidden_stages(texts=texts, batch_size=1)
    layers = model.config.text_config.num_hidden_layers
    assert list(stages) == [f"text{k}{s}" for k in range(layers + 1) for s in ("", ".mean")] + ["embedding"]
    assert torch.allclose(stages["embedding"], emb.encode_texts(texts), atol=1e-5)
    projected = model.text_projection(model.text_model.final_layer_norm(stages[f"text{layers}"]))
    assert torch.allclose(F.normalize(projected, dim=-1), emb.encode_texts(texts), atol=1e-5)
