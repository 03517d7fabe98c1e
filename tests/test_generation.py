"""Generation kept: teacher-forced caption token accuracy equals the training next-token loss's
view of the same captions, greedy decoding follows the model's argmax, and a captioning prompt
leaves the soft prompt out."""

from __future__ import annotations

import pytest
import torch

from vladva.data.images import load_image
from vladva.eval.generation import caption_token_accuracy, generation_report, greedy_captions
from vladva.model.vladva import VladVA
from vladva.testing import build_tiny_llava, write_tiny_manifest
from vladva.train.batches import load_records
from vladva.train.losses import caption_cross_entropy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = build_tiny_llava(tmp_path_factory.mktemp("base"))
    data = write_tiny_manifest(tmp_path_factory.mktemp("data"), n_train=4, n_val=4)
    records = load_records(data / "val.jsonl", strict=True)
    model = VladVA.from_pretrained(base)
    model.prepare_for_training()  # LoRA attached, soft prompts trainable: what a checkpoint holds
    with torch.no_grad():  # a soft prompt that differs from the handcrafted prompt
        model.soft_prompts.image.add_(0.5 * torch.randn_like(model.soft_prompts.image))
    return model, [load_image(r.image) for r in records], [r.long_caption for r in records]


def test_token_accuracy_matches_the_next_token_loss(setup):
    model, images, captions = setup
    acc = caption_token_accuracy(model, images, captions, batch_size=3)
    batch = model.ntp_inputs(images, captions)  # the training layout: captions + EOS, labels on them
    with torch.no_grad():
        logits, targets = model.caption_logits(model.image_hidden(batch), batch.labels)
    assert acc["tokens"] == len(targets) and acc["captions"] == 4
    assert acc["nll"] == pytest.approx(float(caption_cross_entropy(logits, targets)), abs=1e-3)
    assert acc["token_accuracy"] == pytest.approx(100 * float((logits.argmax(-1) == targets).float().mean()), abs=0.01)


def test_captioning_prompt_runs_without_the_soft_prompt(setup):
    model, images, captions = setup
    own = caption_token_accuracy(model, images, captions)
    other = caption_token_accuracy(model, images, captions, prompt="describe the image in detail :")
    assert own["tokens"] == other["tokens"] and own["nll"] != other["nll"]
    report = generation_report(model, images, captions, {"summary": None, "caption": "describe :"}, samples=2)
    assert report["summary"]["prompt"] == model.config.prompts.image_prompt
    assert len(report["caption"]["samples"]) == 2 and report["summary"]["nll"] == pytest.approx(own["nll"])


def test_greedy_caption_follows_the_argmax(setup):
    model, images, _ = setup
    (text,) = greedy_captions(model, images[:1], max_new_tokens=3)
    ids = []
    for _ in range(3):  # the same three steps by hand
        batch = model.inputs.continuation_inputs(images[:1], [ids])
        with torch.no_grad():
            logits = model.model.get_output_embeddings()(model.image_hidden(batch)[0, -1])
        nxt = int(logits.argmax())
        if nxt == model.tokenizer.eos_token_id:
            break
        ids.append(nxt)
    assert text == model.tokenizer.decode(ids, skip_special_tokens=True).strip()
