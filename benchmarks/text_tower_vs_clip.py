"""Text-tower cost: vladva's text embedding (caption + summary prompt through the LVLM's language
model) vs a CLIP-style text encoder of equal size (transformers `CLIPTextModel` with the same
hidden size, layers, heads and MLP width), same captions, same batch size.

    python benchmarks/text_tower_vs_clip.py --n 512 --batch 64 --repeats 5

Timed: tokenisation + forward (no_grad) for both; vladva through `encode_texts`. The CLIP text
model uses the same word-level tokenizer output (its vocabulary sized to match) and pools its
EOS token as CLIP does. Reported: texts/s, tokens per text, parameters, and the cost ratio.
"""

from __future__ import annotations

import json

import common
import torch


def main() -> None:
    ap = common.parser(repeats=5)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    folder, what = common.model_under_test(args)

    from transformers import CLIPTextConfig, CLIPTextModel

    from vladva.model.vladva import VladVA

    vladva = VladVA.from_pretrained(folder).eval()
    lm_cfg = vladva.family.language_model(vladva.model).config
    tok = vladva.tokenizer
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=lm_cfg.vocab_size,
            hidden_size=lm_cfg.hidden_size,
            intermediate_size=lm_cfg.intermediate_size,
            num_hidden_layers=lm_cfg.num_hidden_layers,
            num_attention_heads=lm_cfg.num_attention_heads,
            max_position_embeddings=77,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    _, short, _ = common.shapes_batch(args.n)

    @torch.no_grad()
    def clip_texts():
        out = []
        for s in range(0, args.n, args.batch):
            enc = tok(
                [t + tok.eos_token for t in short[s : s + args.batch]],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=77,
            )
            out.append(clip(**enc).pooler_output)
        return torch.cat(out)

    def vladva_texts():
        return vladva.encode_texts(short, args.batch)

    times = common.side_by_side({"vladva_text_tower": vladva_texts, "clip_text_encoder": clip_texts}, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    n_lm = sum(p.numel() for p in vladva.family.language_model(vladva.model).parameters())
    n_clip = sum(p.numel() for p in clip.parameters())
    tokens_vladva = float(vladva.text_inputs(short[:64]).model_inputs["attention_mask"].sum(1).float().mean())
    tokens_clip = float(
        tok([t + tok.eos_token for t in short[:64]], return_tensors="pt", padding=True)["attention_mask"]
        .sum(1)
        .float()
        .mean()
    )
    print(
        json.dumps(
            {
                "benchmark": "text_tower_vs_clip",
                "model": what,
                "n": args.n,
                "batch": args.batch,
                "threads": args.threads,
                "repeats": args.repeats,
                "texts_per_s": {k: round(args.n / v, 1) for k, v in med.items()},
                "params": {"vladva_language_model": n_lm, "clip_text_model": n_clip},
                "mean_tokens_per_text": {
                    "vladva (caption + prompt)": round(tokens_vladva, 1),
                    "clip (caption + eos)": round(tokens_clip, 1),
                },
                "cost_ratio_vladva_over_clip": round(med["vladva_text_tower"] / med["clip_text_encoder"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
