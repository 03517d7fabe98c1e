"""A vladva training step vs a bare forward + backward of the same model on the same batch.

    python benchmarks/train_step_overhead.py --batch 32 --ntp 16 --repeats 7

vladva: the trainer's collator (`StepCollator`: processor calls, prompt checks, the tensors of the
fused image/NTP pass, the other images and the captions) then `TrainingModule(batch)` (soft-prompt
injection, the fused image/NTP pass, InfoNCE with positives from ids) + backward. Bare: the same
PEFT model and the same three passes written by hand on inputs tokenised and image-processed once
before timing (no soft prompts, identity positives), + backward. Both start from zeroed gradients;
no optimizer step in either. Also reports the collator alone (`preprocess`, what DataLoader workers
take off the training process with `data.num_workers` > 0) and the vladva step on an already
collated batch (`vladva_collated`). Target: vladva / bare <= 1.10.
"""

from __future__ import annotations

import json

import common
import torch
import torch.nn.functional as F


def main() -> None:
    ap = common.parser(repeats=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ntp", type=int, default=16)
    args = ap.parse_args()
    folder, what = common.model_under_test(args)

    from vladva.model.pooling import last_token_pool, position_ids_from_mask
    from vladva.model.vladva import VladVA
    from vladva.train.batches import StepCollator
    from vladva.train.config import LossConfig
    from vladva.train.step import StepObjective, TrainingModule

    torch.manual_seed(0)
    vladva = VladVA.from_pretrained(folder)
    vladva.prepare_for_training()
    module = TrainingModule(vladva, StepObjective(LossConfig())).train()
    images, short, long = common.shapes_batch(args.batch)
    samples = common.train_samples(images, short, long, args.ntp)
    collator = StepCollator(vladva.inputs, args.ntp, "first", 0)
    batch = collator(samples)

    # inputs prepared once for the bare run
    ntp_in = vladva.ntp_inputs(images[: args.ntp], long[: args.ntp])
    img_in = vladva.image_inputs(images[args.ntp :])
    txt_in = vladva.text_inputs(short)
    model, core, lm = vladva.model, vladva.family.core(vladva.model), vladva.family.language_model(vladva.model)
    head = model.get_output_embeddings()
    scale = module.objective.contrastive.logit_scale
    end = ntp_in.prompt_starts + vladva.image_layout.n_prompt + vladva.image_layout.n_suffix - 1

    def bare_step():
        mi = ntp_in.model_inputs
        hidden = core(**mi, position_ids=position_ids_from_mask(mi["attention_mask"])).last_hidden_state
        emb_ntp = F.normalize(hidden[torch.arange(hidden.shape[0]), end].float(), dim=-1)
        targets = ntp_in.labels[:, 1:]
        keep = targets != -100
        ntp = F.cross_entropy(head(hidden[:, :-1][keep]).float(), targets[keep])
        mi = img_in.model_inputs
        h_img = core(**mi, position_ids=position_ids_from_mask(mi["attention_mask"])).last_hidden_state
        img = torch.cat([emb_ntp, last_token_pool(h_img, mi["attention_mask"])])
        mask = txt_in.model_inputs["attention_mask"]
        h_txt = lm(
            input_ids=txt_in.model_inputs["input_ids"], attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).last_hidden_state
        txt = last_token_pool(h_txt, mask)
        logits = scale.exp() * img @ txt.T
        labels = torch.arange(len(img))
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) + ntp
        loss.backward()
        module.zero_grad(set_to_none=True)

    def vladva_step():
        module(collator(samples))["loss"].backward()
        module.zero_grad(set_to_none=True)

    def vladva_collated_step():
        module(batch)["loss"].backward()
        module.zero_grad(set_to_none=True)

    times = common.side_by_side(
        {"vladva": vladva_step, "vladva_collated": vladva_collated_step, "bare": bare_step}, args.repeats
    )
    med = {k: common.median(v) for k, v in times.items()}
    # pre-processing alone (what the vladva step does before its first matmul)
    pre = common.side_by_side({"preprocess": lambda: collator(samples)}, args.repeats)
    med["preprocess"] = common.median(pre["preprocess"])
    print(
        json.dumps(
            {
                "benchmark": "train_step_overhead",
                "model": what,
                "batch": args.batch,
                "ntp": args.ntp,
                "threads": args.threads,
                "repeats": args.repeats,
                "seconds_median": {k: round(v, 4) for k, v in med.items()},
                "ratio_vladva_over_bare": round(med["vladva"] / med["bare"], 3),
                "ratio_vladva_minus_preprocess_over_bare": round((med["vladva"] - med["preprocess"]) / med["bare"], 3),
                "ratio_vladva_collated_over_bare": round(med["vladva_collated"] / med["bare"], 3),
                "target": "<= 1.10",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
