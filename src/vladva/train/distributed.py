"""Multi-process training helpers: global negatives through a gather that keeps the gradient.

With `W` processes each holding `n_r` pairs, `gather_with_grad` concatenates every process's
`(n_r, dim)` embeddings into one `(sum n_r, dim)` tensor in rank order, so the contrastive loss
scores each query against all `sum n_r` candidates (`sum n_r - 1` negatives, not `n_r - 1`).

Gradient bookkeeping (why the result equals a single-process run on the global batch): every
process computes the same global loss `L` over the gathered tensors. The backward of the gather
sums, over processes, the gradient each one computed for this process's slice, so a process's
embeddings receive `W * dL/d(own slice)`; data parallelism (DDP, or `average_gradients` below)
then averages parameter gradients over the `W` processes, which leaves exactly `dL/dtheta`.
Unequal `n_r` (a process skipped a bad sample) are handled by padding to the largest and
trimming after the gather.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedConfig:
    """How processes share the contrastive batch (only matters with more than one process)."""

    # Score each query against every process's candidates (global batch) rather than its own only.
    global_negatives: bool = True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """`(rank, world_size)`; `(0, 1)` without an initialised process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def collective_device() -> torch.device:
    """Where small bookkeeping tensors must live for the backend: the GPU for NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gathered_sizes(n_local: int, device: torch.device | str | None = None) -> list[int]:
    """Every process's local row count, in rank order."""
    if not is_distributed():
        return [n_local]
    device = device or collective_device()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.long, device=device))
    return [int(s.item()) for s in sizes]


def _all_gather_padded(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """All-gather `x` `(n_local, ...)` when processes hold different `n`: pad to the largest, trim after."""
    biggest = max(sizes)
    padded = x
    if x.shape[0] < biggest:
        padded = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [p[:n] for p, n in zip(parts, sizes)]


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all-gather and concatenate. Backward: sum the gathered tensor's gradient over
    processes (all-reduce, which every backend incl. gloo supports) and return this process's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat(_all_gather_padded(x, sizes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """`(n_local, ...)` -> `(sum of n over processes, ...)` in rank order; identity with one process.

    Floating tensors keep their gradient (see the module docstring for the scaling); integer
    tensors (image ids, caption keys) are gathered plainly. Every process must call it the same
    number of times in the same order (it is a collective)."""
    if not is_distributed():
        return x
    rank, _ = rank_and_world()
    sizes = gathered_sizes(x.shape[0], x.device)
    if x.is_floating_point() and x.requires_grad:
        return _GatherWithGrad.apply(x, sizes, rank)
    return torch.cat(_all_gather_padded(x.detach(), sizes))


def local_offset(n_local: int, device: torch.device | str | None = None) -> int:
    """Row of this process's first pair in the gathered batch (its positives are rows
    `offset ... offset + n_local - 1` of the gathered candidates)."""
    rank, _ = rank_and_world()
    return sum(gathered_sizes(n_local, device)[:rank])


def negatives_per_query(n_local: int, global_negatives: bool = True, device: torch.device | str | None = None) -> int:
    """Candidates a query is scored against minus its own positive (before duplicate captions)."""
    total = sum(gathered_sizes(n_local, device)) if global_negatives else n_local
    return total - 1


def token_share(n_local: int) -> float:
    """`world * n_local / n_global` for a loss averaged over tokens (the next-token loss).

    A process's token-mean times this factor, averaged over processes (as DDP averages
    gradients), is the token-mean over every process's tokens, whatever each one holds. 1 with
    one process. A collective: every process calls it, with 0 when it has no tokens."""
    if not is_distributed():
        return 1.0
    total = torch.tensor([float(n_local)], device=collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return dist.get_world_size() * n_local / total.item() if total.item() > 0 else 0.0


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over processes (for logging); same keys in the same order everywhere."""
    if not is_distributed() or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def mean_over_processes_where_present(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes that have it (keys may differ between processes,
    e.g. a kind of hard negative one process drew no example of); a collective: all call it."""
    if not is_distributed():
        return values
    keys = sorted({k for ks in all_gather_objects(sorted(values)) for k in ks})
    if not keys:
        return {}
    t = torch.tensor(
        [values.get(k, 0.0) for k in keys] + [float(k in values) for k in keys],
        dtype=torch.float64,
        device=collective_device(),
    )
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    total, count = t[: len(keys)].tolist(), t[len(keys) :].tolist()
    return {k: s / n for k, s, n in zip(keys, total, count) if n > 0}


def all_gather_objects(obj) -> list:
    """Every process's `obj` (picklable), in rank order; `[obj]` with one process."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over processes (counts such as pairs seen)."""
    if not is_distributed() or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(values, t.tolist()))


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce and average `.grad` over processes, for steps that run outside DDP's own
    synchronisation (GradCache's chunked backward). Parameters without a gradient get zeros, so
    every process joins the same collectives."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # one collective, not one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g).to(g.dtype))
        offset += g.numel()
