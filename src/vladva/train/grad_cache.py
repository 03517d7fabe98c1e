"""GradCache: a contrastive batch larger than memory, with the next-token loss in the same step.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (2021).
The contrastive loss couples every pair of the batch, so it cannot be split into independent
micro-batches; but it only needs the embeddings. One step (`grad_cache_step`):

  1. embed every chunk of `chunk_size` images and texts without a graph -> `(n, dim)` each;
  2. compute the contrastive loss on those (detached, `requires_grad`) embeddings and backward:
     this gives `dL/d(embedding)` for every row and the temperature's gradient;
  3. re-run each chunk with a graph and backpropagate its cached `dL/d(embedding)` slice, so the
     parameters receive exactly the gradient of the full-batch loss while holding one chunk's
     activations at a time;
  4. next-token loss in chunks of the same size, each chunk's backward weighted by its share of
     the batch's caption tokens, so the sum is the full batch's token-mean loss.

Peak activation memory follows `chunk_size`, not the batch. Random state (dropout) is replayed
per chunk so pass 3 sees the same masks as pass 1. Multi-process: the loss's `gather` hook
(global negatives) works unchanged; the chunk passes run outside DDP's reducer, so the caller
averages gradients afterwards (`vladva.train.distributed.average_gradients`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class GradCacheConfig:
    # Rows per forward pass with a graph; 0 turns GradCache off (one pass over the whole batch).
    chunk_size: int = 0

    def validate(self) -> None:
        if self.chunk_size < 0:
            raise ValueError(f"grad_cache.chunk_size must be >= 0 (0 = off), got {self.chunk_size}")


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


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _caption_tokens(labels: torch.Tensor) -> int:
    """Tokens that `next_token_loss` averages over (targets shifted by one, not -100)."""
    return int((labels[:, 1:] != -100).sum())


def grad_cache_step(
    module,
    batch,
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] | None = None,
    loss_scale: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> dict[str, torch.Tensor]:
    """One forward + backward of `module` (a `TrainingModule`: `.vladva`, `.contrastive`,
    `.ntp_weight`) on `batch` (a `StepBatch`) in chunks of `chunk_size` rows.

    Gradients of `loss_scale * (contrastive + ntp_weight * ntp)` are accumulated into the
    parameters' `.grad` exactly as `backward(loss_scale * module(batch)["loss"])` would (up to
    float rounding). `backward` defaults to `Tensor.backward` (pass `accelerator.backward` for
    loss scaling); `autocast` wraps each forward. Returns the detached losses and batch accuracy,
    like `TrainingModule.forward`."""
    backward = backward or (lambda loss: loss.backward())
    autocast = autocast or contextlib.nullcontext
    m = module.vladva
    device = m.device
    n = len(batch.images)
    parts = _chunks(n, chunk_size)

    # 1. embeddings without a graph; remember each chunk's inputs and random state for the replay
    image_chunks = [m.image_inputs(batch.images[s]) for s in parts]
    text_chunks = [m.text_inputs(batch.captions[s]) for s in parts]
    states: list[tuple[RandomState, RandomState]] = []
    img_parts, txt_parts = [], []
    with torch.no_grad():
        for x_img, x_txt in zip(image_chunks, text_chunks):
            s_img = RandomState(device)
            with autocast():
                img_parts.append(m.embed_image_inputs(x_img.to(device)).float())
            s_txt = RandomState(device)
            with autocast():
                txt_parts.append(m.embed_text_inputs(x_txt.to(device)).float())
            states.append((s_img, s_txt))
    img = torch.cat(img_parts).requires_grad_(True)
    txt = torch.cat(txt_parts).requires_grad_(True)

    # 2. the contrastive loss on cached embeddings: gradients w.r.t. every embedding (+ temperature)
    with autocast():
        contrastive = module.contrastive(img, txt, image_ids=batch.image_ids, caption_ids=batch.caption_ids)
    backward(contrastive * loss_scale)
    img_grad, txt_grad = img.grad, txt.grad

    # 3. replay each chunk with a graph and push its cached gradient through the model
    for s, x_img, x_txt, (s_img, s_txt) in zip(parts, image_chunks, text_chunks, states):
        with s_img.replay(), autocast():
            e_img = m.embed_image_inputs(x_img.to(device))
        torch.autograd.backward(e_img.float(), img_grad[s])
        with s_txt.replay(), autocast():
            e_txt = m.embed_text_inputs(x_txt.to(device))
        torch.autograd.backward(e_txt.float(), txt_grad[s])

    out = {"contrastive": contrastive.detach(), "loss": contrastive.detach()}

    # 4. next-token loss in chunks, each weighted by its share of the caption tokens (and, with
    #    several processes, by this process's share of all processes' tokens)
    inputs = []
    if batch.ntp_images and module.ntp_weight > 0:
        inputs = [
            m.ntp_inputs(batch.ntp_images[s], batch.ntp_captions[s]) for s in _chunks(len(batch.ntp_images), chunk_size)
        ]
    tokens = [_caption_tokens(x.labels) for x in inputs]
    total_tokens = sum(tokens)
    share_fn = getattr(module, "token_share", None)
    share = share_fn(total_tokens) if share_fn is not None and module.ntp_weight > 0 else 1.0  # a collective
    if inputs:
        ntp = torch.zeros((), device=device)
        for x, k in zip(inputs, tokens):
            if k == 0:
                continue
            with autocast():
                chunk_loss = m.next_token_loss(x.to(device))
            weight = share * k / total_tokens
            backward(chunk_loss * (module.ntp_weight * weight * loss_scale))
            ntp = ntp + chunk_loss.detach() * weight
        out["ntp"] = ntp
        out["loss"] = out["loss"] + module.ntp_weight * ntp

    with torch.no_grad():  # in-batch image->text accuracy, as TrainingModule.forward reports it
        pos = (batch.image_ids[:, None] == batch.image_ids[None, :]) | (
            batch.caption_ids[:, None] == batch.caption_ids[None, :]
        )
        top = (img.detach() @ txt.detach().T).argmax(dim=1).cpu()
        out["batch_acc"] = pos[torch.arange(len(top)), top].float().mean()
    return out


def check_grad_cache_supported(distributed_type: str) -> None:
    """GradCache re-runs sub-modules outside the wrapper's forward: fine for DDP (gradients are
    averaged by hand afterwards), not for sharded engines whose forward gathers the weights."""
    if distributed_type.upper() in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ValueError(
            f"grad_cache.chunk_size > 0 is not supported with {distributed_type} (its forward must gather "
            "sharded weights); use DDP, or grad_cache.chunk_size=0 with a smaller per-process batch"
        )
