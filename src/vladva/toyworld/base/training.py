"""Pieces every pretraining stage shares: device choice, the learning-rate schedule, and the
record of what each stage cost (steps, seconds, device) written next to its checkpoint."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


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
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

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
        """Linear warmup over `warmup` steps, then cosine down to `min_lr_ratio`."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        p = self.progress(step)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


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


@dataclass
class StageCompute:
    """What one stage cost; `seconds` is wall time of the training loop on `device`."""

    stage: str
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    device_name: str = ""
    threads: int = 1
    final_loss: float | None = None
    stopped_by_clock: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["device_seconds"] = round(self.seconds * (self.threads if self.device == "cpu" else 1), 1)
        d["seconds"] = round(self.seconds, 1)
        return d


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def write_compute(path: Path, stages: list[StageCompute]) -> None:
    """`compute.json`: per stage steps, examples, seconds; the total is what the checkpoint cost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(s.seconds for s in stages)
    data = {"stages": [s.to_dict() for s in stages], "total_seconds": round(total, 1)}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_compute(path: Path) -> list[StageCompute]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for s in data["stages"]:
        s = {k: v for k, v in s.items() if k != "device_seconds"}
        out.append(StageCompute(**s))
    return out
