"""Embedding throughput: `VladVA.encode_images` / `encode_texts` vs a bare batched forward.

    python benchmarks/embed_throughput.py --n 256 --batch 64 --repeats 5

Bare: the same model called by hand in batches of `--batch` with `torch.no_grad()` on inputs
prepared once before timing (processor / tokenizer output), last-token pooling inline: the
fastest a user could go with transformers alone. vladva's calls include their own
pre-processing (processor, tokenizer, prompt checks) inside the timing. Target: >= 0.9x.
"""

from __future__ import annotations

import json

import common
import torch
import torch.nn.functional as F


def main() -> None:
    ap = common.parser(repeats=5)
    ap.add_argument("--n", type=int, default=256, help="images and texts per call")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    folder, what = common.model_under_test(args)

    from vladva.model.pooling import position_ids_from_mask
    from vladva.model.vladva import VladVA

    vladva = VladVA.from_pretrained(folder).eval()
    images, short, _ = common.shapes_batch(args.n)
    core, lm = vladva.family.core(vladva.model), vladva.family.language_model(vladva.model)
    chunks = range(0, args.n, args.batch)
    img_inputs = [vladva.image_inputs(images[s : s + args.batch]).model_inputs for s in chunks]
    txt_inputs = [vladva.text_inputs(short[s : s + args.batch]).model_inputs for s in chunks]

    def pool(hidden, mask):  # inputs are right-padded: the last real token is at sum(mask) - 1
        return F.normalize(hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1].float(), dim=-1)

    @torch.no_grad()
    def bare_images():
        return torch.cat(
            [
                pool(
                    core(**mi, position_ids=position_ids_from_mask(mi["attention_mask"])).last_hidden_state,
                    mi["attention_mask"],
                )
                for mi in img_inputs
            ]
        )

    @torch.no_grad()
    def bare_texts():
        return torch.cat(
            [
                pool(
                    lm(
                        input_ids=mi["input_ids"],
                        attention_mask=mi["attention_mask"],
                        position_ids=position_ids_from_mask(mi["attention_mask"]),
                    ).last_hidden_state,
                    mi["attention_mask"],
                )
                for mi in txt_inputs
            ]
        )

    # same vectors: the bare path is a fair reference (soft prompts start at the handcrafted prompt)
    torch.testing.assert_close(vladva.encode_images(images, args.batch), bare_images(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vladva.encode_texts(short, args.batch), bare_texts(), rtol=1e-4, atol=1e-5)
    times = common.side_by_side(
        {
            "vladva_images": lambda: vladva.encode_images(images, args.batch),
            "bare_images": bare_images,
            "vladva_texts": lambda: vladva.encode_texts(short, args.batch),
            "bare_texts": bare_texts,
        },
        args.repeats,
    )
    med = {k: common.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "embed_throughput",
                "model": what,
                "n": args.n,
                "batch": args.batch,
                "threads": args.threads,
                "repeats": args.repeats,
                "items_per_s": {k: round(args.n / v, 1) for k, v in med.items()},
                "ratio_images_vladva_over_bare": round(med["bare_images"] / med["vladva_images"], 3),
                "ratio_texts_vladva_over_bare": round(med["bare_texts"] / med["vladva_texts"], 3),
                "target": ">= 0.9 (throughput ratio)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
