"""vladva training steps on a LLaVA-1.5-7B-shaped model with random weights (no download).

Builds `LlavaForConditionalGeneration` from its config directly on the GPU in bf16 (CLIP
ViT-L/14-336 vision tower: hidden 1024, 24 layers, 16 heads, MLP 4096, 336 px, patch 14 ->
576 image tokens; Llama-2-7B language model: hidden 4096, 32 layers, 32 heads, MLP 11008,
vocab 32064), wraps it in vladva's `VladVA` (soft prompts + LoRA r16 on every attention and MLP
projection: the real code path) and runs the trainer's steps: the collator (`StepCollator`,
processor and tokenizer: the CPU work of every step when `data.num_workers` is 0), then
`forward_backward` (one pass, or GradCache with `--grad-cache`): symmetric InfoNCE over `--batch`
image/short-caption pairs plus next-token loss on `--ntp-batch` long captions of `--seq-len-long`
tokens, backward, AdamW. Prints one JSON object.

    PYTHONPATH=src python benchmarks/gpu_llava7b_step.py --batch 8 --steps 6            # H100
    PYTHONPATH=src python benchmarks/gpu_llava7b_step.py --tiny --batch 4 --steps 3     # CPU check

Model FLOPs (for MFU): the language model's non-embedding parameters N_lm see every token of
the step's sequences (image tower rows: image + prompt; text rows: caption + prompt; NTP rows:
image + prompt + long caption): 2 * N_lm * tokens forward + 4 * N_lm * tokens backward (the
usual 6 N T convention; with frozen base weights the backward actually computes activation
gradients only, ~2 N T, so `mfu_executed` reports (2 + 2) N T as well). The frozen vision tower
runs forward only: 2 * N_vis * 577 * images. Attention score FLOPs are not counted (they add
~5% at these lengths). Peak: H100 SXM dense bf16 989 TFLOP/s (`--peak-tflops`).
The tokenizer is vladva's tiny word-level one (ids fit the 32064 vocabulary): sequence lengths
are what matter here, not the words.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout without installing


def build_config(tiny: bool):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if tiny:
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=4,
        )
        text = LlamaConfig(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    else:
        vision = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        )
        text = LlamaConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    # LLaVA-1.5: penultimate vision layer, CLS dropped, 2-layer GELU projector
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=4,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def build_processor(image_size: int, patch: int):
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    from vladva.testing.tiny_models import _word_tokenizer

    tok, _ = _word_tokenizer(["<pad>", "<unk>", "<s>", "</s>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    assert tokenizer.convert_tokens_to_ids("<image>") == 4
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )


def build_model(config, device: torch.device, dtype: torch.dtype):
    """Random weights created on `device` in `dtype` (a 7B model never touches CPU memory)."""
    from transformers import LlavaForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def make_samples(n: int, n_ntp: int, image_size: int, long_words: int, seed: int) -> list:
    """`n` random images with a short caption each (pair id i), a long caption on the first `n_ntp`."""
    from PIL import Image

    from vladva.testing.tiny_models import WORDS
    from vladva.train.batches import TrainSample

    rng = random.Random(seed)
    words = [w for w in WORDS if w not in (":", ".", ",")]
    images = [
        Image.frombytes("RGB", (image_size, image_size), rng.randbytes(image_size * image_size * 3)) for _ in range(n)
    ]
    captions = [" ".join(rng.choice(words) for _ in range(12)) + f" {i}" for i in range(n)]
    longs = [" ".join(rng.choice(words) for _ in range(long_words)) for _ in range(n_ntp)]
    return [
        TrainSample(i, f"0/{i}", image, [caption], longs[i] if i < n_ntp else None)
        for i, (image, caption) in enumerate(zip(images, captions))
    ]


def count_tokens(batch) -> dict:
    """Tokens the language model processes in one step, per kind of row (from the collated batch)."""
    ntp = [c.ntp for c in batch.image_chunks if c.ntp is not None]
    rest = [c.image for c in batch.image_chunks if c.image is not None]
    out = {
        "ntp_rows": sum(x.n_tokens for x in ntp),
        "image_rows": sum(x.n_tokens for x in rest),
        "text_rows": sum(x.n_tokens for x in batch.text_chunks),
        "caption_targets": sum(x.n_label_tokens for x in ntp),
    }
    out["lm_total"] = out["ntp_rows"] + out["image_rows"] + out["text_rows"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="contrastive image/caption pairs per step")
    ap.add_argument("--ntp-batch", type=int, default=None, help="images with a long caption (default: batch / 2)")
    ap.add_argument("--seq-len-long", type=int, default=128, help="words (= tokens) per long caption")
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (checks the script on CPU)")
    ap.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    ap.add_argument("--grad-checkpointing", action="store_true", help="recompute decoder layers in backward")
    ap.add_argument("--grad-cache", type=int, default=0, help="GradCache chunk size (0: one pass, the default)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="device dense bf16 peak for MFU")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from vladva.model.vladva import VladVA, VladVAConfig
    from vladva.train.batches import StepCollator
    from vladva.train.config import LossConfig
    from vladva.train.step import StepObjective, TrainingModule, forward_backward

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    config = build_config(args.tiny)
    vc = config.vision_config
    t0 = time.perf_counter()
    model = build_model(config, device, dtype)
    build_s = time.perf_counter() - t0
    processor = build_processor(vc.image_size, vc.patch_size)
    cfg = VladVAConfig()
    cfg.prompts.use_chat_template = False
    cfg.prompts.max_long_caption_tokens = args.seq_len_long
    vladva = VladVA(model, processor, cfg, name="llava-1.5-7b-shape" if not args.tiny else "tiny")
    n_trainable = vladva.prepare_for_training()
    vladva.to(device)
    if args.grad_checkpointing:
        vladva.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = TrainingModule(vladva, StepObjective(LossConfig())).to(device).train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    lm = vladva.family.language_model(model)
    n_lm = (
        sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n) - lm.get_input_embeddings().weight.numel()
    )
    n_vis = sum(p.numel() for p in vladva.family.vision_tower(model).parameters())
    n_ntp = args.batch // 2 if args.ntp_batch is None else args.ntp_batch
    samples = make_samples(args.batch, n_ntp, vc.image_size, args.seq_len_long, args.seed)
    collator = StepCollator(vladva.inputs, n_ntp, "first", args.seed, chunk_size=args.grad_cache)
    tokens = count_tokens(collator(samples))
    pre = []
    for _ in range(3):  # CPU work inside every step: processor, tokenizer, prompt checks
        t = time.perf_counter()
        collator(samples)
        pre.append(time.perf_counter() - t)
    vis_tokens = args.batch * ((vc.image_size // vc.patch_size) ** 2 + 1)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> dict:
        out = forward_backward(module, collator(samples), lambda loss: loss.backward(), autocast=autocast)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in out.items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, last = [], {}
    for _ in range(args.steps):
        t = time.perf_counter()
        last = step()
        sync()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    flops_6nt = 6 * n_lm * tokens["lm_total"] + 2 * n_vis * vis_tokens
    flops_4nt = 4 * n_lm * tokens["lm_total"] + 2 * n_vis * vis_tokens
    peak = args.peak_tflops * 1e12
    result = {
        "model": "LLaVA-1.5-7B shape, random bf16 weights" if not args.tiny else "tiny LLaVA shape",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "params_lm_non_embedding": n_lm,
        "params_vision": n_vis,
        "params_trainable": n_trainable,
        "batch": args.batch,
        "ntp_batch": n_ntp,
        "seq_len_long": args.seq_len_long,
        "grad_checkpointing": args.grad_checkpointing,
        "grad_cache_chunk": args.grad_cache,
        "tokens_per_step": tokens,
        "vision_tokens_per_step": vis_tokens,
        "step_seconds_median": round(step_s, 4),
        "step_seconds_all": [round(t, 4) for t in times],
        "preprocess_seconds_median": round(statistics.median(pre), 4),
        "tokens_per_s": round(tokens["lm_total"] / step_s, 1),
        "images_per_s": round(args.batch / step_s, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "model_tflops_per_step_6NT": round(flops_6nt / 1e12, 2),
        "mfu_6NT": round(flops_6nt / step_s / peak, 4),
        "mfu_executed_4NT": round(flops_4nt / step_s / peak, 4),
        "peak_tflops": args.peak_tflops,
        "losses_last_step": {k: round(v, 4) for k, v in last.items()},
        "build_seconds": round(build_s, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
