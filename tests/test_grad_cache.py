"""GradCache gives the plain step's gradients (contrastive + next-token) while chunking the batch."""

from __future__ import annotations

import pytest
import torch

from vladva.train.grad_cache import GradCacheConfig, grad_cache_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vladva.testing import build_tiny_llava, write_tiny_manifest

    root = tmp_path_factory.mktemp("gc")
    return build_tiny_llava(root / "llava", seed=0), write_tiny_manifest(root / "data", n_train=12, n_val=2, seed=0)


def _module(base, ntp_weight=1.0, lora_dropout=0.0):
    from vladva.model.vladva import VladVA, VladVAConfig
    from vladva.train.losses import ContrastiveLoss
    from vladva.train.trainer import TrainingModule

    torch.manual_seed(0)
    cfg = VladVAConfig()
    cfg.lora.dropout = lora_dropout
    vladva = VladVA.from_pretrained(base, config=cfg)
    vladva.prepare_for_training()
    with torch.no_grad():  # LoRA B starts at zero: make it non-zero so LoRA A gets a gradient to compare
        for n, p in vladva.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return TrainingModule(vladva, ContrastiveLoss(), ntp_weight).train()


def _batch(data, n=8, n_ntp=6):
    from vladva.train.data import BatchCollator, load_records

    records = load_records(data / "train.jsonl", strict=True)
    return BatchCollator(records, n_ntp, "first", 0, True)(0, list(range(n)))


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_grad_cache_matches_plain_step(tiny, chunk):
    base, data = tiny
    batch = _batch(data)
    plain = _module(base)
    out = plain(batch)
    out["loss"].backward()
    want = _grads(plain)

    cached = _module(base)
    got_out = grad_cache_step(cached, batch, chunk_size=chunk)
    got = _grads(cached)

    assert set(got) == set(want) and len(want) > 10  # soft prompts, every LoRA A/B, temperature
    for k in ("contrastive", "ntp", "loss", "batch_acc"):
        torch.testing.assert_close(got_out[k], out[k].detach(), rtol=1e-5, atol=1e-6)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    assert want["contrastive.logit_scale"].abs() > 0 and want["vladva.soft_prompts.text"].abs().sum() > 0


def test_grad_cache_replays_dropout(tiny):
    """With LoRA dropout on, the replayed chunk must see the masks of the first pass; same seed,
    same batch -> the plain step's gradients."""
    base, data = tiny
    batch = _batch(data, n=6, n_ntp=0)
    plain = _module(base, ntp_weight=0.0, lora_dropout=0.3)
    cached = _module(base, ntp_weight=0.0, lora_dropout=0.3)
    torch.manual_seed(123)
    grad_cache_step(cached, batch, chunk_size=6)  # one chunk: same random stream as the plain step
    torch.manual_seed(123)
    # The plain forward draws image masks then text masks: exactly the order of pass 1 above.
    plain(batch)["loss"].backward()
    got, want = _grads(cached), _grads(plain)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_grad_cache_config_rejects_negative_chunk():
    with pytest.raises(ValueError, match="chunk_size"):
        GradCacheConfig(chunk_size=-1).validate()
