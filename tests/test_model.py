"""The VladVA embedder on tiny random LVLMs: pooling, prompts, soft prompts, families, save/load, merge."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from vladva.config import build_config, load_config
from vladva.model import VladVA, VladVAConfig, last_token_pool
from vladva.model.families import SUPPORTED_MODEL_TYPES, UnsupportedModelError, family_for
from vladva.testing import build_tiny_idefics3, build_tiny_llava, build_tiny_qwen2_vl

torch.set_num_threads(2)

TEXTS = ["a red circle", "a small blue square left of a large green triangle", "two objects", "pink cross"]


def _images():
    # different colours and, for dynamic-resolution models, different sizes
    return [
        Image.new("RGB", (32, 32), (220, 30, 30)),
        Image.new("RGB", (48, 32), (30, 30, 220)),
        Image.new("RGB", (32, 32), (30, 200, 60)),
    ]


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def idefics_dir(tmp_path_factory):
    return build_tiny_idefics3(tmp_path_factory.mktemp("idefics"))


def _ntp_loss(m: VladVA, batch) -> torch.Tensor:
    """The next-token loss of one `embed_image_with_caption` pass, as training computes it."""
    from vladva.train.losses import caption_cross_entropy

    _, hidden = m.embed_image_with_caption(batch)
    return caption_cross_entropy(*m.caption_logits(hidden, batch.labels))


def _full_logits_ntp(m: VladVA, batch) -> torch.Tensor:
    """Reference: plain cross-entropy on the full model's logits, labels shifted by one, -100 ignored
    (positions counted from the attention mask, as the image tower passes them)."""
    mi = dict(batch.model_inputs)
    mi["position_ids"] = torch.cumsum(mi["attention_mask"], 1) - 1
    logits = m.model(**mi).logits
    vocab = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), batch.labels[:, 1:].reshape(-1), ignore_index=-100
    )


def _perturb(m: VladVA, seed: int = 1) -> None:
    """Move every trained part away from its initial value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _n, p in m.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_last_token_pool_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(hidden, right, normalize=False).tolist() == [[2.0, 3.0], [14.0, 15.0]]
    assert last_token_pool(hidden, left, normalize=False).tolist() == [[6.0, 7.0], [14.0, 15.0]]
    assert torch.allclose(last_token_pool(hidden, right).norm(dim=1), torch.ones(2))


def test_mean_pool_counts_only_real_positions():
    from vladva.model.pooling import mean_pool

    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert mean_pool(hidden, right, normalize=False).tolist() == [[1.0, 2.0], [11.0, 12.0]]
    assert mean_pool(hidden, left, normalize=False).tolist() == [[5.0, 6.0], [11.0, 12.0]]
    with pytest.raises(ValueError, match="model.pooling must be one of"):
        load_config(VladVAConfig, None, ["pooling=max"])


@pytest.mark.parametrize("side,pooling", [("right", "last"), ("left", "last"), ("right", "mean"), ("left", "mean")])
def test_batched_text_embeddings_equal_one_at_a_time(llava_dir, side, pooling):
    m = VladVA.from_pretrained(llava_dir)
    m.config.prompts.padding_side = side
    m.config.pooling = pooling
    batched = m.encode_texts(TEXTS, batch_size=4)
    single = torch.cat([m.encode_texts([t]) for t in TEXTS])
    assert batched.shape == (4, 64) and batched.dtype == torch.float32
    assert torch.allclose(batched.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(batched, single, atol=1e-5)
    # distinct sentences give distinct embeddings
    assert (batched @ batched.T - torch.eye(4)).max() < 0.999


def test_prompt_layout_and_soft_prompt_injection(llava_dir):
    m = VladVA.from_pretrained(llava_dir)
    tok = m.tokenizer
    assert tok.convert_ids_to_tokens(m.image_layout.prompt_ids) == [
        "Summary",
        "above",
        "image",
        "in",
        "one",
        "word",
        ":",
    ]
    assert m.text_layout.n_suffix == 0  # the tiny model has no chat template: the prompt ends the sequence
    batch = m.text_inputs(["a red circle", "a small blue square left of a large green triangle"])
    ids, starts = batch.model_inputs["input_ids"], batch.prompt_starts
    for row in range(2):
        got = ids[row, starts[row] : starts[row] + 7].tolist()
        assert tok.convert_ids_to_tokens(got)[0] == "Summary" and got == m.text_layout.prompt_ids
    before = m.encode_texts(TEXTS)
    # soft prompts start at the handcrafted prompt: identical to the model without them
    plain = VladVA.from_pretrained(
        llava_dir, config=build_config(VladVAConfig, {"soft_prompt": {"enabled": False}}, "t")
    )
    assert plain.soft_prompts is None
    assert torch.allclose(before, plain.encode_texts(TEXTS), atol=1e-6)
    with torch.no_grad():
        m.soft_prompts.text[-1] += 1.0
    after = m.encode_texts(TEXTS)
    assert (after - before).abs().max() > 1e-3
    # the image soft prompt is separate: image embeddings unchanged by the text prompt edit
    imgs = _images()
    e1 = m.encode_images(imgs)
    with torch.no_grad():
        m.soft_prompts.image[0] += 1.0
    assert (m.encode_images(imgs) - e1).abs().max() > 1e-3


def test_extra_soft_tokens_extend_the_prompt(llava_dir):
    cfg = build_config(VladVAConfig, {"soft_prompt": {"extra_tokens": 3}}, "test")
    m = VladVA.from_pretrained(llava_dir, config=cfg)
    assert m.image_layout.n_prompt == 7 + 3 and m.soft_prompts.image.shape == (10, 64)
    assert m.encode_texts(TEXTS).shape == (4, 64)


def test_next_token_labels_cover_only_the_caption(llava_dir):
    m = VladVA.from_pretrained(llava_dir)
    imgs = _images()[:2]
    caps = ["the image shows a red circle", "two objects"]
    batch = m.ntp_inputs(imgs, caps)
    labels, mask = batch.labels, batch.model_inputs["attention_mask"]
    eos = m.tokenizer.eos_token_id
    for row, cap in enumerate(caps):
        kept = labels[row][labels[row] != -100].tolist()
        assert kept == m.tokenizer(cap, add_special_tokens=False)["input_ids"] + [eos]
    assert (labels[mask == 0] == -100).all()
    # the loss equals plain cross-entropy on the full model's logits
    with torch.no_grad():
        assert torch.allclose(_ntp_loss(m, batch), _full_logits_ntp(m, batch), atol=1e-5)


def test_trainable_parts(llava_dir):
    m = VladVA.from_pretrained(llava_dir, config=build_config(VladVAConfig, {"train_projector": True}, "test"))
    n = m.prepare_for_training()
    names = [k for k, p in m.named_parameters() if p.requires_grad]
    assert any("lora_A" in k for k in names) and any("soft_prompts" in k for k in names)
    assert not any("vision_tower" in k for k in names)
    assert any("multi_modal_projector" in k for k in names)
    lm_layers = 2 * 7  # 2 layers x 7 target projections, r=16: A (r x in) + B (out x r)
    assert sum(1 for k in names if "lora_A" in k) == lm_layers
    assert n == sum(p.numel() for k, p in m.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "parts",
    [{}, {"lora": {"enabled": False}, "train_language_model": True, "pooling": "mean"}, {"train_language_model": True}],
)
def test_save_load_and_merge_give_identical_embeddings(llava_dir, tmp_path, parts):
    m = VladVA.from_pretrained(llava_dir, config=build_config(VladVAConfig, parts, "test"))
    m.prepare_for_training()
    _perturb(m)
    imgs = _images()
    want_i, want_t = m.encode_images(imgs), m.encode_texts(TEXTS)
    m.save_weights(tmp_path / "adapter", base_model=str(llava_dir))
    lora = parts.get("lora", {}).get("enabled", True)
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter"] * lora + [
        "vladva_config.json",
        "vladva_weights.safetensors",
    ]
    loaded = VladVA.from_pretrained(llava_dir, tmp_path / "adapter")
    assert torch.equal(loaded.encode_images(imgs), want_i)
    assert torch.equal(loaded.encode_texts(TEXTS), want_t)
    # what was trained really matters: the base alone differs
    assert (VladVA.from_pretrained(llava_dir).encode_texts(TEXTS) - want_t).abs().max() > 1e-3
    loaded.merge(tmp_path / "merged")
    merged = VladVA.from_pretrained(tmp_path / "merged")
    assert merged.peft_model is None
    assert torch.allclose(merged.encode_images(imgs), want_i, atol=1e-5)
    assert torch.allclose(merged.encode_texts(TEXTS), want_t, atol=1e-5)
    meta = json.loads((tmp_path / "merged" / "vladva_config.json").read_text())
    assert meta["format"] == "vladva-merged" and meta["vladva"]["lora"]["enabled"] is False
    assert meta["vladva"]["train_language_model"] is False and meta["vladva"]["pooling"] == parts.get("pooling", "last")


def test_similarity_and_embedder_protocol(llava_dir):
    from vladva.embedder import Embedder

    m = VladVA.from_pretrained(llava_dir)
    assert isinstance(m, Embedder) and m.name.startswith("vladva:")
    a, b = m.encode_texts(TEXTS[:2]), m.encode_texts(TEXTS)
    sim = m.similarity(a, b)
    assert sim.shape == (2, 4) and torch.allclose(sim.diagonal(), torch.ones(2), atol=1e-5)


def test_encode_images_accepts_paths_and_names_bad_files(llava_dir, tmp_path):
    from vladva.data.images import ImageLoadError

    m = VladVA.from_pretrained(llava_dir)
    imgs = _images()
    imgs[0].save(tmp_path / "a.png")
    assert torch.allclose(m.encode_images([tmp_path / "a.png"]), m.encode_images(imgs[:1]), atol=1e-6)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="bad.png"):
        m.encode_images([tmp_path / "bad.png"])


@pytest.mark.parametrize("builder", ["qwen_dir", "idefics_dir"])
def test_other_backbones(builder, request, tmp_path):
    """Qwen2-VL (dynamic resolution: images of different sizes -> different token counts) and
    Idefics3/SmolVLM: batched == one-at-a-time for both padding sides; training parts and save/load."""
    folder = request.getfixturevalue(builder)
    m = VladVA.from_pretrained(folder)
    imgs = _images()
    single = torch.cat([m.encode_images([im]) for im in imgs])
    for side in ("right", "left"):
        m.config.prompts.padding_side = side
        assert torch.allclose(m.encode_images(imgs), single, atol=1e-5)
        assert torch.allclose(m.encode_texts(TEXTS), torch.cat([m.encode_texts([t]) for t in TEXTS]), atol=1e-5)
    m.config.prompts.padding_side = "right"
    if builder == "qwen_dir":  # dynamic resolution really happened
        grid = m.image_inputs(imgs).model_inputs["image_grid_thw"]
        assert grid.tolist() == [[1, 8, 8], [1, 8, 12], [1, 8, 8]]
    m.prepare_for_training()
    batch = m.ntp_inputs(imgs[:2], ["the image shows a red circle", "two objects"])
    loss = _ntp_loss(m, batch)
    loss.backward()
    assert m.soft_prompts.image.grad.abs().sum() > 0
    _perturb(m)
    want = m.encode_images(imgs)
    m.save_weights(tmp_path / "ad")
    assert torch.allclose(VladVA.from_pretrained(folder, tmp_path / "ad").encode_images(imgs), want, atol=1e-6)


def test_unsupported_model_type_is_a_clear_error(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"unsupported model_type 'paligemma'.*llava.*qwen2_vl.*idefics3"):
        family_for("paligemma")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "paligemma"}))
    with pytest.raises(UnsupportedModelError, match="paligemma"):
        VladVA.from_pretrained(tmp_path)
    assert {"llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm"} <= set(SUPPORTED_MODEL_TYPES)


def test_docs_python_snippet_runs(llava_dir, tmp_path, monkeypatch):
    """The first ```python block of docs/core.md, with BASE pointing at a tiny model."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "core.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    Image.new("RGB", (32, 32), (220, 30, 30)).save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace('"path/to/base-lvlm"', repr(str(llava_dir))), "docs/core.md", "exec"), scope)
    assert scope["scores"].shape == (1, 2)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_one_pass_embedding_and_ntp_equals_separate_passes(llava_dir, pooling):
    from vladva.train.losses import caption_cross_entropy

    m = VladVA.from_pretrained(llava_dir)
    m.config.pooling = pooling
    imgs = _images()
    caps = ["the image shows a red circle", "two objects", "a pink cross on the left"]
    batch = m.ntp_inputs(imgs, caps)
    with torch.no_grad():
        emb, hidden = m.embed_image_with_caption(batch)
        loss = caption_cross_entropy(*m.caption_logits(hidden, batch.labels))
        assert torch.allclose(emb, m.encode_images(imgs), atol=1e-5)
        assert torch.allclose(loss, _full_logits_ntp(m, batch), atol=1e-5)


def test_prompt_selection_signals(llava_dir):
    import math

    from vladva.model.prompt_selection import effective_rank, pca_cumulative_variance, score_prompts, summary_entropy

    line = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert effective_rank(line) == pytest.approx(1.0)
    cross = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    assert effective_rank(cross) == pytest.approx(2.0)  # two equal singular values
    assert pca_cumulative_variance(cross, k=1) == pytest.approx(0.5)
    m = VladVA.from_pretrained(llava_dir)
    ent = summary_entropy(m, _images(), TEXTS)
    vocab = m.model.get_output_embeddings().weight.shape[0]
    assert set(ent) == {"image", "text"} and all(0 < v <= math.log(vocab) + 1e-4 for v in ent.values())
    rows = score_prompts(
        llava_dir,
        [
            ("Summary above image in one word:", "Summary above sentence in one word:"),
            ("describe the image in one word:", "describe the sentence in one word:"),
        ],
        _images(),
        TEXTS,
    )
    assert (
        len(rows) == 2
        and rows[0]["image_entropy"] + rows[0]["text_entropy"] >= rows[1]["image_entropy"] + rows[1]["text_entropy"]
    )
    assert all(1.0 <= r["image_effective_rank"] <= 3 and 1.0 <= r["text_effective_rank"] <= 4 for r in rows)


# ---- what users type from habit (issue 15, items 2 and 3) ------------------------------------------


def test_a_single_string_or_path_is_one_item(llava_dir, tmp_path):
    """`encode_texts("a string")` is one text, not one row per character; one image path (str or
    Path) or one PIL image is one image; other types are refused by name."""
    m = VladVA.from_pretrained(llava_dir)
    one = m.encode_texts("a red circle")
    assert one.shape == (1, m.hidden_size) and torch.allclose(one, m.encode_texts(["a red circle"]), atol=1e-6)
    _images()[0].save(tmp_path / "red.png")
    want = m.encode_images([_images()[0]])
    for single in (str(tmp_path / "red.png"), tmp_path / "red.png", _images()[0]):
        got = m.encode_images(single)
        assert got.shape == (1, m.hidden_size) and torch.allclose(got, want, atol=1e-6)
    with pytest.raises(TypeError, match=r"texts\[1\]: expected a string, got int"):
        m.encode_texts(["a red circle", 7])
    with pytest.raises(TypeError, match="processor"):
        m.encode_images(torch.zeros(1, 3, 32, 32))


def test_sentence_transformers_and_open_clip_names(llava_dir, tmp_path):
    """`encode` in the sentence-transformers manner (mixed texts and images, numpy / tensor, a single
    item gives a vector), open_clip's `encode_text` / `encode_image`, `similarity` on numpy, and
    `save_pretrained` writing a folder that reloads alone to the same vectors, readable by all."""
    import os
    import stat

    import numpy as np

    from vladva import VladVA as TopLevel

    assert TopLevel is VladVA
    m = VladVA.from_pretrained(llava_dir)
    img = _images()[1]
    out = m.encode(["a red circle", img, "two objects"], batch_size=2)
    assert isinstance(out, np.ndarray) and out.shape == (3, m.hidden_size)
    assert np.allclose(out[[0, 2]], m.encode_texts(["a red circle", "two objects"]).numpy(), atol=1e-6)
    assert np.allclose(out[1], m.encode_images([img])[0].numpy(), atol=1e-6)
    vec = m.encode("a red circle", convert_to_tensor=True)
    assert isinstance(vec, torch.Tensor) and vec.shape == (m.hidden_size,)
    assert len(m.encode(["a", "b"], convert_to_numpy=False)) == 2
    assert torch.allclose(m.encode_text(["pink cross"]), m.encode_texts(["pink cross"]))
    assert torch.allclose(m.encode_image([img]), m.encode_images([img]))
    sim = m.similarity(out[0], out)  # numpy in, cosine out
    assert sim.shape == (1, 3) and abs(float(sim[0, 0]) - 1) < 1e-5
    with pytest.raises(TypeError, match="item 1 is a int"):
        m.encode(["a", 3])

    m.prepare_for_training()
    _perturb(m)
    want = m.encode_texts(TEXTS)
    folder = m.save_pretrained(tmp_path / "saved")
    again = VladVA.from_pretrained(folder)
    assert torch.allclose(again.encode_texts(TEXTS), want, atol=1e-5)
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in folder.rglob("*.safetensors")}
    umask = os.umask(0)
    os.umask(umask)
    assert modes and all(mode == 0o666 & ~umask for mode in modes.values()), modes


def test_import_vladva_stays_light():
    """`import vladva` must not import torch (the CLI's --help and scripts stay fast); `VladVA`
    comes on first use."""
    import subprocess
    import sys

    code = "import sys, vladva; print('torch' in sys.modules); from vladva import VladVA; print(VladVA.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "VladVA"], out.stderr


def test_loading_prints_nothing_that_is_not_the_users_business(llava_dir, tmp_path, capfd):
    """No transformers "Loading weights" bar and no peft FutureWarning about transformers'
    `is_gradient_checkpointing` on every command; the weights folder is readable by all."""
    import os
    import stat
    import warnings

    m = VladVA.from_pretrained(llava_dir)
    m.prepare_for_training()
    weights = m.save_weights(tmp_path / "weights", base_model=str(llava_dir))
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VladVA.from_pretrained(llava_dir, weights)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "is_gradient_checkpointing" not in err
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    umask = os.umask(0)
    os.umask(umask)
    files = list(weights.rglob("*.safetensors"))
    assert len(files) == 2 and all(stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~umask for f in files)
