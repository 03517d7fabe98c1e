"""Tiny random LVLMs built from configs, for tests and examples (no downloads, a few MB each).

Each builder writes a `save_pretrained` folder (model + processor with a word-level tokenizer)
that `AutoModelForImageTextToText` / `AutoProcessor` load offline, exactly like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "a",
    "an",
    "the",
    "image",
    "shows",
    "of",
    "on",
    "and",
    "with",
    "is",
    "are",
    "in",
    "left",
    "right",
    "above",
    "below",
    "next",
    "to",
    "black",
    "background",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "pink",
    "circle",
    "square",
    "triangle",
    "cross",
    "small",
    "large",
    "object",
    "objects",
    "summary",
    "sentence",
    "one",
    "word",
    ":",
    ".",
    ",",
    "two",
    "three",
    "there",
    "picture",
    "photo",
    "describe",
    "what",
    "colour",
    "shape",
]


def _word_tokenizer(special: list[str], extra_words: tuple[str, ...] = ()):
    """A `PreTrainedTokenizerFast` over a whitespace word vocabulary plus `special` tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab: dict[str, int] = {}
    for w in [*special, *WORDS, *extra_words]:
        vocab.setdefault(w, len(vocab))
    vocab.update({w.capitalize(): len(vocab) + i for i, w in enumerate(["summary", "the", "a"])})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(special)
    return tok, len(vocab)


def _llama_config(vocab_size: int, hidden: int, layers: int, intermediate: int | None = None):
    """The tiny language model every test LVLM uses: 4 heads, ids pad 0 / bos 2 / eos 3."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def build_tiny_llava(
    out_dir: Path | str,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    vision_hidden: int = 32,
    vision_layers: int = 1,
    intermediate: int | None = None,
) -> Path:
    """LLaVA-1.5 architecture: CLIP vision tower (32 px, patch 4 -> 64 image tokens), Llama LM.
    The defaults make a ~0.15M-parameter model; `hidden=256, layers=4, intermediate=688,
    vision_hidden=128, vision_layers=4` matches the shipped base's sizes (for timing)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    tok, vocab_size = _word_tokenizer(["<pad>", "<unk>", "<s>", "</s>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2 if vision_hidden == 32 else vision_hidden * 4,
            num_hidden_layers=vision_layers,
            num_attention_heads=2 if vision_hidden == 32 else 4,
            image_size=32,
            patch_size=4,
        ),
        text_config=_llama_config(vocab_size, hidden, layers, intermediate),
        image_token_id=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=4,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def write_tiny_manifest(out_dir: Path | str, n_train: int = 64, n_val: int = 16, seed: int = 0) -> Path:
    """A small shapes data set in the manifest layout (`train.jsonl`, `val.jsonl`, `images/`),
    with short captions naming every object and a long caption describing sizes and positions."""
    import random

    from vladva.data.manifest import Record, write_manifest
    from vladva.toyworld.scene import SceneConfig, render_scene, sample_scene

    out_dir = Path(out_dir)
    rng = random.Random(seed)
    cfg = SceneConfig(min_objects=1, max_objects=2)
    for split, n in (("train", n_train), ("val", n_val)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(n):
            scene = sample_scene(rng, cfg)
            path = out_dir / "images" / split / f"{i:06d}.png"
            render_scene(scene).save(path)
            names = [o.phrase() for o in scene.objects]
            short = "a " + " and a ".join(names)
            parts = [f"a {o.phrase(with_size=True)} on the {'left' if o.x < 16 else 'right'}" for o in scene.objects]
            long = (
                f"the image shows {len(names)} objects on a black background . there is " + " and ".join(parts) + " ."
            )
            records.append(
                Record(f"{split}-{i:06d}", path, [short, " and a ".join(reversed(names)).join(["a ", ""])], long)
            )
        write_manifest(out_dir / f"{split}.jsonl", records)
    return out_dir


def build_tiny_qwen2_vl(out_dir: Path | str, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Qwen2-VL architecture with dynamic resolution: patch 4, 2x2 merge, so a 32x32 image gives
    16 image tokens and a 48x32 one 24. Uses the PIL image processor (no torchvision)."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from vladva.model.families import qwen2_vl_image_only_processor

    out_dir = Path(out_dir)
    special = [
        "<|endoftext|>",
        "<unk>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok, vocab_size = _word_tokenizer(special)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": None,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=64 * 64, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    processor = qwen2_vl_image_only_processor()(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_idefics3(out_dir: Path | str, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Idefics3 / SmolVLM architecture: SigLIP-style tower (32 px, patch 4), pixel-shuffle 2 -> 16
    image tokens, Llama LM; no image splitting. Uses the PIL image processor (no torchvision)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    rowcol = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    special = [
        "<pad>",
        "<unk>",
        "<s>",
        "</s>",
        "<image>",
        "<fake_token_around_image>",
        "<end_of_utterance>",
        "<global-img>",
        *rowcol,
    ]
    tok, vocab_size = _word_tokenizer(special)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=4,
        ),
        text_config=_llama_config(vocab_size, hidden, layers),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
