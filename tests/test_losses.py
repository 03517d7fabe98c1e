"""Loss values against hand-computed cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vladva.train.losses import (
    LOSSES,
    BatchEmbeddings,
    ContrastiveLoss,
    ContrastiveLossConfig,
    caption_cross_entropy,
    caption_keys,
    positive_mask,
    register_loss,
)


def fixed(scale: float) -> ContrastiveLoss:
    """A loss with a fixed logit scale (temperature 1/scale)."""
    return ContrastiveLoss(ContrastiveLossConfig(learnable_temperature=False, init_temperature=1.0 / scale))


def test_2x2_identity_pairs():
    e = torch.eye(2)
    # logits = 2 * I: each row's loss is -log(e^2 / (e^2 + e^0)) = log(1 + e^-2)
    assert fixed(2.0)(e, e).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_3x3_by_hand():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [1 / math.sqrt(2), 1 / math.sqrt(2), 0], [0, 0, 1.0]])
    # scale 1: logits = img @ txt.T = [[1, .7071, 0], [0, .7071, 0], [0, 0, 1]]
    r = 1 / math.sqrt(2)
    L = [[1, r, 0], [0, r, 0], [0, 0, 1]]

    def nll(row, i):
        return -math.log(math.exp(row[i]) / sum(math.exp(v) for v in row))

    i2t = sum(nll(L[i], i) for i in range(3)) / 3
    t2i = sum(nll([L[j][i] for j in range(3)], i) for i in range(3)) / 3
    assert fixed(1.0)(img, txt).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    # equals CLIP's cross-entropy form when every pair is its only positive
    logits = img @ txt.T
    clip = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    assert fixed(1.0)(img, txt).item() == pytest.approx(clip.item(), abs=1e-6)


def test_duplicate_captions_count_as_positives():
    # images 0 and 1 share the caption "a red circle": text 1 is the same text as text 0
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    caps = ["a red circle", "A  red circle", "a blue square"]
    keys = caption_keys(caps)
    assert keys[0] == keys[1] != keys[2]
    mask = positive_mask(torch.arange(3), keys)
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    e = math.e
    # image 0: logits [1, 1, 0], positives {0, 1}: -log((e + e) / (e + e + 1))
    # image 1: logits [0, 0, 0], positives {0, 1}: -log(2 / 3)
    # image 2: logits [0, 0, 1], positive {2}:      -log(e / (2 + e))
    i2t = (-math.log(2 * e / (2 * e + 1)) - math.log(2 / 3) - math.log(e / (2 + e))) / 3
    # texts 0 and 1 (identical): columns [1, 0, 0]; positives images {0, 1}: -log((e + 1) / (e + 2)) each
    # text 2: column [0, 0, 1], positive image 2: -log(e / (2 + e))
    t2i = (2 * -math.log((e + 1) / (e + 2)) - math.log(e / (2 + e))) / 3
    got = fixed(1.0)(img, txt, image_ids=torch.arange(3), caption_ids=keys).item()
    assert got == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    # treating the duplicate as a negative would be a higher (wrong) loss
    assert fixed(1.0)(img, txt).item() > got


def test_same_image_twice_is_multi_positive():
    img = torch.tensor([[1.0, 0], [1.0, 0]])  # one image appearing with two different captions
    txt = torch.tensor([[1.0, 0], [0.0, 1.0]])
    loss = fixed(1.0)(img, txt, image_ids=torch.tensor([7, 7]), caption_ids=caption_keys(["x", "y"]))
    # every text is a positive of every image: all softmax mass is on positives -> loss 0
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_hard_negatives_only_enter_image_to_text():
    img = torch.eye(2)
    txt = torch.eye(2)
    neg = torch.tensor([[[1.0, 0]], [[0, 1.0]]])  # each image's hard negative equals its own caption
    s = 2.0
    base = math.log(1 + math.exp(-s))
    # i2t: logits [s, 0, s, 0] -> -log(e^s / (2 e^s + 2)); t2i unchanged
    i2t = -math.log(math.exp(s) / (2 * math.exp(s) + 2))
    assert fixed(s)(img, txt, hard_negatives=neg).item() == pytest.approx((i2t + base) / 2, abs=1e-6)


def test_learnable_temperature_init_and_clamp():
    loss = ContrastiveLoss()
    assert loss.logit_scale.requires_grad and loss.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    assert loss.scale().item() == pytest.approx(100.0)
    e = torch.eye(2, requires_grad=True)
    loss.logit_scale.data.fill_(0.0)
    loss(e, torch.eye(2)).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.item() < 0  # sharper helps this easy batch


def test_gather_hook_sees_embeddings_and_ids():
    seen = []

    def gather(x):
        seen.append(tuple(x.shape))
        return torch.cat([x, x])  # pretend a second process holds the same rows

    loss = ContrastiveLoss(ContrastiveLossConfig(learnable_temperature=False), gather=gather)
    e = torch.eye(2)
    out = loss(e, e, image_ids=torch.tensor([0, 1]), caption_ids=torch.tensor([5, 6]))
    assert seen == [(2, 2), (2, 2), (2,), (2,)]
    # the duplicated rows share ids, so each row has 2 positives of equal score among 4 columns
    s = 1 / 0.07
    want = -math.log(2 * math.exp(s) / (2 * math.exp(s) + 2))
    assert out.item() == pytest.approx(want, abs=1e-5)


def test_next_token_loss_masks_prompt_and_padding():
    from vladva.model.vladva import VladVA

    vocab = 3
    logits = torch.zeros(1, 4, vocab)
    logits[0, 0] = torch.tensor([50.0, -50, -50])  # position 0 predicts label[1] = -100: ignored
    logits[0, 1] = torch.tensor([0.0, 0.0, math.log(2)])  # predicts label 2 with p = 2/4
    logits[0, 3] = torch.tensor([99.0, 0, 0])  # last position predicts nothing
    labels = torch.tensor([[-100, -100, 2, 1]])
    # position 2 (all zeros) predicts label 1 with p = 1/3
    want = (-math.log(0.5) - math.log(1 / 3)) / 2
    # `caption_logits` keeps the labelled positions (shifted by one) and applies the LM head: with an
    # identity head the hidden states above are the logits
    head = SimpleNamespace(model=SimpleNamespace(get_output_embeddings=nn.Identity))
    kept, targets = VladVA.caption_logits(head, logits, labels)
    assert kept.shape == (2, vocab) and targets.tolist() == [2, 1]
    assert caption_cross_entropy(kept, targets).item() == pytest.approx(want, abs=1e-6)


def test_objective_sums_registered_losses_by_weight(monkeypatch):
    """A registered loss joins the step's total with its config's weight; weight 0 leaves it out."""
    from vladva.train.step import StepObjective

    class Alignment(nn.Module):
        """1 - mean cosine of the pairs."""

        def __init__(self, config, gather=None):
            super().__init__()

        def batch_loss(self, emb: BatchEmbeddings) -> torch.Tensor:
            return 1 - (emb.image * emb.text).sum(dim=1).mean()

    monkeypatch.setitem(LOSSES, "alignment", Alignment)  # removed again after the test
    with pytest.raises(ValueError, match="already registered"):
        register_loss("alignment")(Alignment)
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [1 / math.sqrt(2), 1 / math.sqrt(2), 0], [0, 0, 1.0]])
    emb = BatchEmbeddings(img, txt, torch.arange(3), caption_keys(["a", "b", "c"]))
    contrastive = ContrastiveLossConfig(weight=0.5, learnable_temperature=False, init_temperature=1.0)
    config = SimpleNamespace(contrastive=contrastive, alignment=SimpleNamespace(weight=2.0), ntp_weight=0.25)
    objective = StepObjective(config)
    losses = objective.embedding_losses(emb)
    assert set(losses) == {"contrastive", "alignment"}
    alignment = 1 - (2 + 1 / math.sqrt(2)) / 3
    assert losses["alignment"].item() == pytest.approx(alignment, abs=1e-6)
    assert losses["contrastive"].item() == pytest.approx(fixed(1.0)(img, txt).item(), abs=1e-6)
    total = objective.total(losses, torch.tensor(3.0))
    assert total.item() == pytest.approx(0.5 * losses["contrastive"].item() + 2 * alignment + 0.25 * 3, abs=1e-6)
    config.alignment.weight = 0.0
    assert set(StepObjective(config).losses) == {"contrastive"}
    config.contrastive.weight = 0.0
    off = StepObjective(config)
    assert off.contrastive is None and off.total({}, torch.tensor(3.0)).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="every loss weight is 0"):
        off.total({}, None)
    with pytest.raises(ValueError, match="loss.contrastive.weight"):
        ContrastiveLossConfig(weight=-1.0).validate()
