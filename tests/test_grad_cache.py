"""GradCache gives the plain step's gradients (contrastive + next-token, with or without hard
negatives) while chunking the batch."""

from __future__ import annotations

import pytest
import torch

from vladva.train.step import GradCacheConfig, TrainingModule, forward_backward, grad_cache_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vladva.testing import build_tiny_llava, write_tiny_manifest

    root = tmp_path_factory.mktemp("gc")
    return build_tiny_llava(root / "llava", seed=0), write_tiny_manifest(root / "data", n_train=12, n_val=2, seed=0)


def _module(base, ntp_weight=1.0, lora_dropout=0.0, hard_negatives=False):
    from vladva.model.vladva import VladVA, VladVAConfig
    from vladva.train.config import LossConfig
    from vladva.train.step import StepObjective

    torch.manual_seed(0)
    cfg = VladVAConfig()
    cfg.lora.dropout = lora_dropout
    vladva = VladVA.from_pretrained(base, config=cfg)
    vladva.prepare_for_training()
    with torch.no_grad():  # LoRA B starts at zero: make it non-zero so LoRA A gets a gradient to compare
        for n, p in vladva.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    objective = StepObjective(LossConfig(ntp_weight=ntp_weight))
    return TrainingModule(vladva, objective, hard_negatives=hard_negatives).train()


def _batch(module, data, n=8, n_ntp=6, chunk=0, hard_negatives=0):
    """Records 0..n-1 collated for the step; with `hard_negatives`, even records carry two false captions."""
    from vladva.train.batches import StepCollator, collate_records, load_records

    records = load_records(data / "train.jsonl", strict=True)
    if hard_negatives:
        for i, r in enumerate(records):
            if i % 2 == 0:
                r.negative_captions = [f"a wrong caption {i}", f"another wrong caption number {i}"]
    collator = StepCollator(module.vladva.inputs, n_ntp, "first", 0, hard_negatives=hard_negatives, chunk_size=chunk)
    return collate_records(collator, records, list(range(n)))


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_grad_cache_matches_plain_step(tiny, chunk):
    base, data = tiny
    plain = _module(base)
    batch = _batch(plain, data)
    out = plain(batch)
    out["loss"].backward()
    want = _grads(plain)

    cached = _module(base)
    chunked = _batch(cached, data, chunk=chunk)
    assert [r for c in chunked.image_chunks for r in c.rows] == list(range(8))  # chunks of `chunk` rows
    assert len(chunked.image_chunks) == -(-8 // chunk) and chunked.chunked == (chunk < 8)
    got_out = grad_cache_step(cached, chunked, _backward)
    got = _grads(cached)

    assert set(got) == set(want) and len(want) > 10  # soft prompts, every LoRA A/B, temperature
    for k in ("contrastive", "ntp", "loss", "batch_acc"):
        torch.testing.assert_close(got_out[k], out[k].detach(), rtol=1e-5, atol=1e-6)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    assert want["objective.losses.contrastive.logit_scale"].abs() > 0
    assert want["vladva.soft_prompts.text"].abs().sum() > 0


def test_grad_cache_with_hard_negatives_matches_plain_step(tiny):
    """Hard negatives (text-tower rows after the captions, split across chunks too) give the plain
    step's losses, hard-negative accuracy and gradients; `forward_backward` picks GradCache."""
    base, data = tiny
    plain = _module(base, hard_negatives=True)
    batch = _batch(plain, data, hard_negatives=2)
    assert len(batch.negatives) == 8 and batch.negative_rows == [0, 0, 2, 2, 4, 4, 6, 6]
    out = forward_backward(plain, batch, _backward)
    want = _grads(plain)

    cached = _module(base, hard_negatives=True)
    chunked = _batch(cached, data, chunk=3, hard_negatives=2)  # text chunk 6-8 spans captions and negatives
    assert chunked.chunked and chunked.negatives == batch.negatives
    assert sum(len(t) for t in chunked.text_chunks) == 8 + 8  # captions, then negatives
    got_out = forward_backward(cached, chunked, _backward)
    got = _grads(cached)

    assert set(got) == set(want) and len(want) > 10
    for k in ("contrastive", "ntp", "loss", "batch_acc", "hard_neg_acc"):
        torch.testing.assert_close(got_out[k], out[k].detach(), rtol=1e-5, atol=1e-6)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    # the negatives really entered the loss: the same batch without them scores lower
    with torch.no_grad():
        without = TrainingModule(plain.vladva, plain.objective, hard_negatives=False)(batch)
    assert out["contrastive"].item() > without["contrastive"].item()


def test_grad_cache_replays_dropout(tiny):
    """With LoRA dropout on, the replayed chunk must see the masks of the first pass; same seed,
    same batch -> the plain step's gradients."""
    base, data = tiny
    plain = _module(base, ntp_weight=0.0, lora_dropout=0.3)
    cached = _module(base, ntp_weight=0.0, lora_dropout=0.3)
    batch = _batch(plain, data, n=6, n_ntp=0, chunk=6)  # one chunk: same random stream as the plain step
    torch.manual_seed(123)
    grad_cache_step(cached, batch, _backward)
    torch.manual_seed(123)
    # The plain forward draws image masks then text masks: exactly the order of pass 1 above.
    plain(batch)["loss"].backward()
    got, want = _grads(cached), _grads(plain)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_grad_cache_config_rejects_negative_chunk():
    with pytest.raises(ValueError, match="chunk_size"):
        GradCacheConfig(chunk_size=-1).validate()
