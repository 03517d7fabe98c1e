"""One training step, top to bottom: every loop (single process, DDP, FSDP, shards, GradCache) calls it.

    batch (vladva.train.batches.StepBatch, tensors built by the collator)
      -> image tower: rows with a long caption in one pass that also gives the next-token loss,
         the other rows through image + prompt
      -> text tower: the captions, then the hard negatives
      -> StepObjective: every registered embedding loss (contrastive, ...) on the embeddings,
         plus ntp_weight x the next-token loss
      -> backward

`forward_backward` runs that as one pass (`grad_cache.chunk_size` 0) or with GradCache (Gao et al.
2021): embed every chunk without a graph, compute the embedding losses on the cached embeddings
and their gradients, then replay each chunk with a graph and push its slice of the gradient
through it, adding the chunk's share of the next-token loss. Both give the same gradients (up to
float rounding); GradCache's peak memory follows the chunk, not the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vladva.model.vladva import VladVA
from vladva.train.batches import ImageChunk, StepBatch
from vladva.train.losses import LOSSES, BatchEmbeddings, caption_cross_entropy, positive_mask


@dataclass
class GradCacheConfig:
    # Rows per forward pass with a graph; 0 turns GradCache off (one pass over the whole batch).
    chunk_size: int = 0

    def validate(self) -> None:
        if self.chunk_size < 0:
            raise ValueError(f"grad_cache.chunk_size must be >= 0 (0 = off), got {self.chunk_size}")


class StepObjective(nn.Module):
    """The step's total loss: `sum_name weight_name * loss_name(embeddings) + ntp_weight * NTP`.

    Holds every registered embedding loss whose weight is > 0 (their learnable state, e.g. the
    contrastive temperature, lives here and is saved with the trainer's state) and the next-token
    weight. `token_share` (set for several processes) re-weights this process's token-mean
    next-token loss so the average over processes is the global token-mean."""

    def __init__(self, config, gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.weights: dict[str, float] = {}
        self.losses = nn.ModuleDict()
        for name, cls in LOSSES.items():
            sub = getattr(config, name)
            if sub.weight > 0:
                self.losses[name] = cls(sub, gather=gather)
                self.weights[name] = sub.weight
        self.ntp_weight = config.ntp_weight
        self.token_share: Callable[[int], float] | None = None

    @property
    def contrastive(self):
        return self.losses["contrastive"] if "contrastive" in self.losses else None  # noqa: SIM401 (ModuleDict)

    def embedding_losses(self, emb: BatchEmbeddings) -> dict[str, torch.Tensor]:
        return {name: loss.batch_loss(emb) for name, loss in self.losses.items()}

    def total(self, losses: dict[str, torch.Tensor], ntp: torch.Tensor | None) -> torch.Tensor:
        parts = [losses[name] if w == 1.0 else w * losses[name] for name, w in self.weights.items()]
        total = parts[0] if parts else None
        for p in parts[1:]:
            total = total + p
        if ntp is not None:
            total = self.ntp_weight * ntp if total is None else total + self.ntp_weight * ntp
        if total is None:
            raise ValueError("every loss weight is 0: nothing to train (loss.contrastive.weight, loss.ntp_weight)")
        return total


def _embed_image_chunk(m: VladVA, chunk: ImageChunk, device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """`(embeddings of chunk.rows in that order, the chunk's token-mean NTP loss or None, its NTP tokens)`."""
    parts, ntp, tokens = [], None, 0
    if chunk.ntp is not None:  # images with a long caption: one pass gives their embedding and the NTP loss
        x = chunk.ntp.to(device)
        emb, hidden = m.embed_image_with_caption(x)
        ntp = caption_cross_entropy(*m.caption_logits(hidden, x.labels))
        tokens = chunk.ntp.n_label_tokens
        parts.append(emb)
    if chunk.image is not None:
        parts.append(m.embed_image_inputs(chunk.image.to(device)))
    return (torch.cat(parts) if len(parts) > 1 else parts[0]), ntp, tokens


def _scatter_rows(n: int, rows: list[int], values: torch.Tensor) -> torch.Tensor:
    out = torch.empty(n, values.shape[1], device=values.device, dtype=values.dtype)
    return out.index_copy(0, torch.tensor(rows, device=values.device), values)


@dataclass
class KindAccuracy:
    """Hard-negative accuracy of one kind: `acc` the share (0-1) of the `items` that have a
    negative of the kind whose positive outscores every one of them (ties count against the
    model); `chance` what indistinguishable negatives score: the mean of 1 / (1 + negatives of
    the kind) over those items."""

    acc: float
    items: int
    chance: float


def hard_negative_accuracy(
    positive: torch.Tensor, negative: torch.Tensor, negative_item: torch.Tensor, negative_kinds: Sequence[str]
) -> dict[str, KindAccuracy]:
    """Per kind, and over every negative as `"all"`: how often an item's positive outscores all
    of its own hard negatives.

    `positive`: `(n,)` score of each item's true pair (image . its caption); `negative`: `(m,)`
    score of each negative against its item's image; `negative_item`: `(m,)` int64, the item
    negative k belongs to; `negative_kinds`: m kind names. Items without a negative of a kind do
    not count for it."""
    positive, negative = positive.detach().float(), negative.detach().float()
    negative_item = negative_item.to(positive.device)
    kinds = ["all"] + sorted(set(negative_kinds))
    out: dict[str, KindAccuracy] = {}
    for kind in kinds:
        mask = torch.tensor([kind in ("all", k) for k in negative_kinds], dtype=torch.bool, device=positive.device)
        items, scores = negative_item[mask], negative[mask]
        best = torch.full_like(positive, float("-inf")).scatter_reduce(0, items, scores, "amax")
        count = torch.zeros_like(positive).scatter_add(0, items, torch.ones_like(scores))
        has = count > 0
        if has.any():
            acc = (positive > best)[has].float().mean().item()
            out[kind] = KindAccuracy(acc, int(has.sum()), (1.0 / (1.0 + count[has])).mean().item())
    return out


def _metrics(emb: BatchEmbeddings, negative_kinds: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """In-batch image->text accuracy (exact pair or an identical caption) and, with hard negatives,
    the share of images whose caption outscores all of its own negatives (`hard_neg_acc`) and the
    same per kind of negative (`hard_neg_acc/<kind>`, among the images with a negative of that kind)."""
    img, txt, neg = emb.image.detach(), emb.text.detach(), emb.negatives
    out = {}
    with torch.no_grad():
        pos = positive_mask(emb.image_ids, emb.caption_ids)
        top = (img @ txt.T).argmax(dim=1).cpu()
        out["batch_acc"] = pos[torch.arange(len(top)), top].float().mean()
        if neg is not None and len(neg):
            rows = torch.tensor(emb.negative_rows, device=img.device)
            kinds = list(negative_kinds) or ["untyped"] * len(rows)
            scores = hard_negative_accuracy((img * txt).sum(dim=1), (img[rows] * neg.detach()).sum(dim=1), rows, kinds)
            for kind, score in scores.items():
                out["hard_neg_acc" if kind == "all" else f"hard_neg_acc/{kind}"] = torch.tensor(score.acc)
    return out


class TrainingModule(nn.Module):
    """The embedder plus the objective, so one `forward` (DDP-friendly) gives every loss of a batch."""

    def __init__(self, vladva: VladVA, objective: StepObjective, hard_negatives: bool = False):
        super().__init__()
        self.vladva = vladva
        self.objective = objective
        # With hard negatives on, the loss always gets a (possibly empty) negatives tensor, so the
        # distributed gather is called the same number of times on every process.
        self.hard_negatives = hard_negatives

    def _batch_embeddings(self, batch: StepBatch, img: torch.Tensor, texts: torch.Tensor) -> BatchEmbeddings:
        n = len(batch)
        neg = texts[n:] if self.hard_negatives else None
        return BatchEmbeddings(img, texts[:n], batch.image_ids, batch.caption_ids, neg, batch.negative_rows)

    def run(self, fn: Callable[[], object]) -> object:
        """`fn()`, e.g. an evaluation through `self.vladva.encode_*`. The trainer registers it as a
        forward method with FSDP2, whose hooks then gather the weights this root module owns
        around it (`vladva.train.engine.prepare`)."""
        return fn()

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Every loss of `batch` in one pass with a graph: `{"loss", <each loss>, "ntp"?, metrics}`."""
        m, device = self.vladva, self.vladva.device
        (chunk,) = batch.image_chunks
        emb, ntp, tokens = _embed_image_chunk(m, chunk, device)
        share = self.objective.token_share
        if share is not None and self.objective.ntp_weight > 0:  # a collective: every process calls it
            s = share(tokens)
            ntp = ntp * s if ntp is not None else None
        img = _scatter_rows(len(batch), chunk.rows, emb)
        (texts,) = batch.text_chunks
        embeddings = self._batch_embeddings(batch, img, m.embed_text_inputs(texts.to(device)))
        losses = self.objective.embedding_losses(embeddings)
        out = dict(losses, loss=self.objective.total(losses, ntp))
        if ntp is not None:
            out["ntp"] = ntp
        return out | _metrics(embeddings, batch.negative_kinds)


class RandomState:
    """Captures the CPU (and current CUDA device's) RNG state so a forward can be replayed."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    @contextlib.contextmanager
    def replay(self):
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def grad_cache_step(
    module: TrainingModule,
    batch: StepBatch,
    backward: Callable[[torch.Tensor], None],
    loss_scale: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """`module(batch)` + backward, chunk by chunk (the batch's `image_chunks` / `text_chunks`).

    Gradients of `loss_scale * loss` are accumulated into `.grad` exactly as
    `backward(loss_scale * module(batch)["loss"])` would (up to float rounding); returns the
    detached losses and metrics. Runs outside DDP's reducer: with several processes, average the
    gradients afterwards (`vladva.train.distributed.average_gradients`)."""
    m, obj, device = module.vladva, module.objective, module.vladva.device
    n = len(batch)

    # 1. every chunk's embeddings without a graph; the random state of each pass is kept for the replay
    image_states, text_states, img_parts, txt_parts, tokens = [], [], [], [], []
    with torch.no_grad():
        for chunk in batch.image_chunks:
            image_states.append(RandomState(device))
            with autocast():
                emb, _, k = _embed_image_chunk(m, chunk, device)
            img_parts.append(emb.float())
            tokens.append(k)
        for texts in batch.text_chunks:
            text_states.append(RandomState(device))
            with autocast():
                txt_parts.append(m.embed_text_inputs(texts.to(device)).float())
    rows = [r for chunk in batch.image_chunks for r in chunk.rows]
    img = _scatter_rows(n, rows, torch.cat(img_parts)).requires_grad_(True)
    texts = torch.cat(txt_parts).requires_grad_(True)

    # 2. the embedding losses on the cached embeddings: their gradient w.r.t. every embedding row
    embeddings = module._batch_embeddings(batch, img, texts)
    with autocast():
        losses = obj.embedding_losses(embeddings)
        emb_total = obj.total(losses, None) if losses else None
    if emb_total is not None:
        backward(emb_total * loss_scale)
    img_grad = img.grad if img.grad is not None else torch.zeros_like(img)
    txt_grad = texts.grad if texts.grad is not None else torch.zeros_like(texts)

    # 3. replay each chunk with a graph; its cached gradient slice, plus its share of the next-token
    #    loss (token-weighted, and with several processes by this process's share of all tokens)
    total_tokens = sum(tokens)
    share = obj.token_share(total_tokens) if obj.token_share is not None and obj.ntp_weight > 0 else 1.0
    ntp = torch.zeros((), device=device) if total_tokens else None
    for chunk, state, k in zip(batch.image_chunks, image_states, tokens):
        with state.replay(), autocast():
            emb, chunk_ntp, _ = _embed_image_chunk(m, chunk, device)
        target = (emb.float() * img_grad[torch.tensor(chunk.rows, device=device)]).sum()
        if chunk_ntp is not None and k:
            weight = share * k / total_tokens
            target = target + chunk_ntp * (obj.ntp_weight * weight * loss_scale)
            ntp = ntp + chunk_ntp.detach() * weight
        backward(target)
    start = 0
    for chunk_texts, state in zip(batch.text_chunks, text_states):
        with state.replay(), autocast():
            e_txt = m.embed_text_inputs(chunk_texts.to(device))
        backward((e_txt.float() * txt_grad[start : start + len(e_txt)]).sum())
        start += len(e_txt)

    out = {k: v.detach() for k, v in losses.items()}
    out["loss"] = obj.total({k: v.detach() for k, v in losses.items()}, ntp)
    if ntp is not None:
        out["ntp"] = ntp
    return out | _metrics(embeddings, batch.negative_kinds)


def forward_backward(
    module: nn.Module,
    batch: StepBatch,
    backward: Callable[[torch.Tensor], None],
    loss_scale: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """The step's forward and backward on `batch`: one pass when it has one chunk (`module` may be
    wrapped by DDP / FSDP), GradCache otherwise (on the unwrapped `TrainingModule`)."""
    if not batch.chunked:
        with autocast():
            out = module(batch)
        backward(out["loss"] * loss_scale)
        return out
    inner = getattr(module, "module", module)
    return grad_cache_step(inner, batch, backward, loss_scale, autocast)


def check_grad_cache_supported(distributed_type: str) -> None:
    """GradCache re-runs sub-modules outside the wrapper's forward: fine for DDP (gradients are
    averaged by hand afterwards), not for sharded engines whose forward gathers the weights."""
    if distributed_type.upper() in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ValueError(
            f"grad_cache.chunk_size > 0 is not supported with {distributed_type} (its forward must gather "
            "sharded weights); use DDP, or grad_cache.chunk_size=0 with a smaller per-process batch"
        )
