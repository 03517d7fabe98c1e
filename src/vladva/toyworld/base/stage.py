"""The one loop every generative pretraining stage runs (the 4M base's LVLM and text LM, the
SmolLM2 base's heal / align / instruct stages), top to bottom:

    for each optimizer step until the budget (steps and/or seconds) is spent:
        learning rate from the budget's schedule; zero the gradients
        step_fn(rng) -> draws its examples, runs forward + backward, returns the loss and counts
        clip, AdamW step; log (metrics.jsonl); every `checkpoint_every` steps: checkpoint

What a stage trains (its parameter groups and learning rates) and what one step computes
(`step_fn`) come from the caller. With `run_dir`, the stage is resumable: its checkpoint
(`run_dir/stage_state.pt`: the trained tensors, optimizer, RNG states, step, counters, elapsed
seconds) is written atomically (temporary file, fsync, rename), and a run killed at any point
(kill -9 included) continues from the last checkpoint exactly as if it had not stopped, when the
budget is counted in steps (a clock-bound schedule depends on the clock by design).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vladva.toyworld.base.training import (
    StepBudget,
    finish_compute,
    param_groups,
    progress_bar,
    set_lr,
    start_compute,
)
from vladva.train.compute import StageCompute

STATE_FILE = "stage_state.pt"
METRICS_FILE = "metrics.jsonl"
# Kill-and-resume tests: "STAGE:STEP" makes the loop stop and sleep after step STEP's checkpoint.
PAUSE_ENV = "VLADVA_TEST_STAGE_PAUSE_AT"


@dataclass
class StepOutput:
    """What one step's `step_fn` did: the (summed) loss and what it consumed."""

    loss: float
    examples: int = 0
    long_captions: int = 0
    tokens: int = 0
    pairs: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def _trainable(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.nn.Parameter]:
    """Every parameter the optimizer updates, by its name in `model`."""
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=True):
        if id(p) in ids:
            out[name] = p
    return out


def _save_state(run_dir: Path, state: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / STATE_FILE)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_stage_state(run_dir: Path | str) -> dict | None:
    """A stage's checkpoint (`weights_only`: tensors and plain values), or None."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError for a bad file
        raise ValueError(f"{path}: cannot read the stage checkpoint ({type(e).__name__}: {e}); delete it") from None


def _pause_for_tests(stage: str, step: int, run_dir: Path) -> None:
    if os.environ.get(PAUSE_ENV) == f"{stage}:{step}":
        (run_dir / "PAUSED").write_text(str(step), encoding="utf-8")
        while True:
            time.sleep(1)


def run_stage(
    stage: str,
    model: torch.nn.Module,
    groups: list[tuple[list[torch.nn.Parameter], float]],
    step_fn: Callable[[random.Random], StepOutput],
    budget: StepBudget,
    device: torch.device,
    seed: int = 0,
    weight_decay: float = 0.0,
    log_every: int = 50,
    run_dir: Path | str | None = None,
    checkpoint_every: int = 0,
    max_grad_norm: float = 1.0,
) -> StageCompute:
    """Train `model` until `budget` is spent. Returns the stage's `StageCompute`
    (`extra["loss_curve"]`: (step, loss) pairs every `log_every` steps).

    Args:
        groups: `(params, peak lr)` per group (lr 0 freezes them); AdamW with `weight_decay` on
            matrices only (`param_groups`).
        step_fn: draws the step's examples with the given `random.Random` (the stage's data RNG,
            saved in checkpoints), runs forward and backward, returns a `StepOutput`.
        run_dir: where the checkpoint and `metrics.jsonl` go; None: neither (not resumable).
        checkpoint_every: steps between checkpoints (0: none; the finished stage is saved by the caller).
    """
    from vladva.train.trainer import MetricsLog

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(groups, weight_decay))
    trainable = [p for g in opt.param_groups for p in g["params"]]
    compute = start_compute(stage, device)
    step, ema, curve = 0, None, []
    run_dir = Path(run_dir) if run_dir is not None else None
    state = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        state = load_stage_state(run_dir)
    if state is not None:
        named = _trainable(model, opt)
        with torch.no_grad():
            for name, value in state["weights"].items():
                named[name].copy_(value)
        opt.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step, ema, curve = state["step"], state["ema"], [tuple(x) for x in state["curve"]]
        for key, value in state["counts"].items():
            setattr(compute, key, value)
        budget.start = budget.now() - state.get("budget_seconds", state["seconds"])
    metrics = MetricsLog(
        (run_dir or Path(".")) / METRICS_FILE, step if state is not None else None, enabled=run_dir is not None
    )
    seconds = state["seconds"] if state is not None else 0.0
    cpu_seconds = state.get("cpu_seconds", 0.0) if state is not None else 0.0
    bar = progress_bar(budget.steps, stage)
    bar.update(step)
    while not budget.done(step):
        t0, c0 = time.perf_counter(), time.process_time()
        set_lr(opt, budget.lr_factor(step))
        opt.zero_grad(set_to_none=True)
        out = step_fn(rng)
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        opt.step()
        step += 1
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
        compute.examples += out.examples
        compute.long_captions += out.long_captions
        compute.tokens += out.tokens
        compute.pairs += out.pairs
        ema = out.loss if ema is None else 0.98 * ema + 0.02 * out.loss
        bar.update(1)
        if step % log_every == 0 or step == 1:
            curve.append((step, round(out.loss, 4)))
            bar.set_postfix(loss=f"{ema:.3f}")
            metrics.write(
                {
                    "step": step,
                    "loss": round(out.loss, 5),
                    **{k: round(v, 5) for k, v in out.extra.items()},
                    "lr_factor": round(budget.lr_factor(step - 1), 5),
                    "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu_seconds, 2),
                }
            )
        if run_dir is not None and checkpoint_every > 0 and step % checkpoint_every == 0 and not budget.done(step):
            _save_state(
                run_dir,
                {
                    "weights": {n: p.detach().cpu().clone() for n, p in _trainable(model, opt).items()},
                    "optimizer": opt.state_dict(),
                    "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "ema": ema,
                    "curve": [list(x) for x in curve],
                    "counts": {k: getattr(compute, k) for k in ("examples", "long_captions", "tokens", "pairs")},
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "budget_seconds": budget.elapsed(),
                },
            )
            _pause_for_tests(stage, step, run_dir)
    bar.close()
    finish_compute(compute, step, budget, seconds, ema)
    compute.extra["cpu_seconds"] = round(cpu_seconds, 1)
    compute.extra["clock"] = budget.clock
    compute.extra["loss_curve"] = curve
    model.eval()
    return compute


def clear_stage_state(run_dir: Path | str) -> None:
    """Remove a finished stage's checkpoint (its products are saved by then)."""
    path = Path(run_dir) / STATE_FILE
    if path.is_file():
        path.unlink()
