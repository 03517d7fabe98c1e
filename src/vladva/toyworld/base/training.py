"""Pieces every pretraining stage shares: device choice, the clock-capped step budget, optimizer
groups, and starting / finishing the stage's compute record.

The learning-rate curve is the library's one schedule (`vladva.train.schedule.warmup_cosine`) and
the compute record its `vladva.train.compute.StageCompute`; what is particular to pretraining is
the budget, whose progress can follow the wall clock (`StepBudget`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from vladva.train.compute import StageCompute, describe_device
from vladva.train.schedule import warmup_cosine


def progress_bar(total: int, desc: str):
    """A tqdm bar that redraws often on a terminal and rarely in a log file."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=0.5 if sys.stderr.isatty() else 30.0)


def resolve_device(name: str) -> torch.device:
    """ "cpu", "cuda", "cuda:1" or "auto" (cuda when available). Refuses cuda without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    return dev


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context otherwise (CPU runs stay fp32)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class StepBudget:
    """How long a stage trains: `steps` optimizer steps, or less if `max_seconds` (> 0) runs out,
    or more if `min_seconds` (> 0) has not yet passed (to give a stage at least another's time).

    The schedule's progress follows whichever limit binds, so a run stopped by the clock still
    ends with a cooled-down learning rate.
    """

    steps: int
    warmup: int
    max_seconds: float = 0.0
    min_seconds: float = 0.0
    min_lr_ratio: float = 0.05
    # "wall" (seconds of the clock on the wall) or "cpu" (this process's CPU seconds: with one
    # thread, what the stage would take on an idle core, whatever else shares the machine).
    clock: str = "wall"
    start: float | None = None

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.start is None:
            self.start = self.now()

    def now(self) -> float:
        return CLOCKS[self.clock]()

    def elapsed(self) -> float:
        return self.now() - self.start

    def progress(self, step: int) -> float:
        p = step / max(1, self.steps)
        if self.min_seconds > 0:
            p = min(p, self.elapsed() / self.min_seconds)
        if self.max_seconds > 0:
            p = max(p, self.elapsed() / self.max_seconds)
        return min(1.0, p)

    def done(self, step: int) -> bool:
        if self.max_seconds > 0 and self.elapsed() >= self.max_seconds:
            return True
        return step >= self.steps and (self.min_seconds <= 0 or self.elapsed() >= self.min_seconds)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up reaching the peak on the last of `warmup` steps, `(step + 1) / warmup`,
        then cosine down to `min_lr_ratio` as `progress` goes from 0 to 1.

        That is `warmup_cosine` with one warm-up step less and the cosine held at its start on
        that step: the shared schedule peaks one step after its ramp, and the shipped base models
        were trained with this ramp, so a rerun of the recipe keeps their learning rates."""
        progress = 0.0 if step < self.warmup else self.progress(step)
        return warmup_cosine(step, self.warmup - 1, progress, self.min_lr_ratio)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor


def param_groups(groups: list[tuple[list[torch.nn.Parameter], float]], weight_decay: float) -> list[dict]:
    """AdamW groups from `(params, lr)`; lr 0 freezes them. No decay on biases and norms (ndim < 2).
    A parameter listed twice (tied embeddings) stays in its first group."""
    out, seen = [], set()
    for params, lr in groups:
        unique = []
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        params = unique
        if lr <= 0:
            for p in params:
                p.requires_grad_(False)
            continue
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for ps, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if ps:
                out.append({"params": ps, "lr": lr, "base_lr": lr, "weight_decay": wd})
    return out


def start_compute(stage: str, device: torch.device) -> StageCompute:
    """The compute record of a stage about to train on `device` (its name, CPU threads)."""
    return StageCompute(stage, device=device.type, device_name=describe_device(device), threads=torch.get_num_threads())


def finish_compute(compute: StageCompute, steps: int, budget: StepBudget, seconds: float, ema: float | None) -> None:
    """Fill in what the finished stage cost: `steps` taken (fewer than planned: the clock stopped
    it), wall `seconds` of its loop, and the smoothed final loss."""
    compute.steps, compute.seconds = steps, seconds
    compute.final_loss = round(ema, 4) if ema is not None else None
    compute.stopped_by_clock = steps < budget.steps
