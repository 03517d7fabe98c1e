"""Training checkpoints: the one owner of their layout. Atomic, and enough to resume exactly.

Layout of `RUN/checkpoints/step-000100/`:
  (a weights folder, vladva.model.weights: what `VladVA.from_pretrained(base, weights)` loads)
  adapter/                      PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)
  vladva_weights.safetensors    soft prompts (and projector / LM weights if trained)
  vladva_config.json            prompts / soft prompt / LoRA settings and the base model path
  (the trainer's own files)
  config.yaml                   the resolved training recipe
  trainer_state.pt              optimizer, scheduler, loss state (the learned temperature), RNG
                                states, step and data position
  compute.json                  what training cost up to this step (vladva.train.compute)

A checkpoint is written into `.tmp-step-...`, fsynced, then renamed; `RUN/checkpoints/latest`
(the name of the newest complete checkpoint) is replaced last, so a crash at any point leaves
the previous checkpoint usable. `trainer_state.pt` holds only tensors and plain Python values and
is read with `torch.load(weights_only=True)` (no pickled code runs on resume).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from vladva.config import save_config
from vladva.model.weights import (
    LATEST_FILE,
    UnsafeFolderError,
    check_weights_dir,
    is_plain_name,
    read_trained_tensors,
)
from vladva.storage import atomic_write_text, fsync_tree, pause_for_tests, writing
from vladva.train.compute import COMPUTE_FILE, StageCompute, write_compute

TRAINER_STATE = "trainer_state.pt"
RECIPE_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
# Test hook of the kill-and-resume tests (`vladva.storage.pause_for_tests`, env PAUSE_ENV =
# "POINT:STEP"). Points: "step" (gradients computed, optimizer not stepped), "files" (checkpoint
# adapter written, trainer state not yet), "rename" (checkpoint folder complete, `latest` not yet updated).


def rng_state() -> dict:
    """Every RNG's state as tensors and plain values (loadable with `weights_only=True`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_latest(ckpt_root: Path, name: str) -> None:
    """Point `latest` at checkpoint `name`: the commit point of a checkpoint."""
    atomic_write_text(ckpt_root / LATEST_FILE, name + "\n")


def checkpoint_root(run_dir: Path | str) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def has_checkpoints(run_dir: Path | str) -> bool:
    root = checkpoint_root(run_dir)
    return root.is_dir() and any(root.iterdir())


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    trainer_state: dict,
    cfg,
    base_model: str,
    compute: StageCompute | None = None,
    keep_last: int = 2,
    weights=None,
) -> Path:
    """Write `run_dir/checkpoints/step-{step:06d}` atomically and point `latest` at it: the model's
    weights folder (`model.save_weights`, from `weights` when given: `model.trained_weights()`
    gathered by every process of a sharded run), the trainer's state, the recipe and the compute
    record. A full disk raises `DiskFullError` naming the checkpoint still intact; nothing partial
    is left."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tmp, final = root / f".tmp-{name}", root / name
    previous = (root / LATEST_FILE).read_text(encoding="utf-8").strip() if (root / LATEST_FILE).is_file() else None
    intact = (
        f"the last complete checkpoint {previous} is intact: free some space, then run again with --resume"
        if previous
        else "no checkpoint of this run was complete yet: free some space and run again"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(f"checkpoint {name}", root, intact):
            model.save_weights(tmp, base_model=base_model, weights=weights)
            pause_for_tests(root, "files", step)
            torch.save(trainer_state, tmp / TRAINER_STATE)
            save_config(cfg, tmp / RECIPE_FILE)
            if compute is not None:
                write_compute(tmp / COMPUTE_FILE, [compute])
            fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint is never left behind
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_tree(root)
    pause_for_tests(root, "rename", step)
    with writing(f"the pointer {root / LATEST_FILE}", root, intact):
        write_latest(root, name)
    if keep_last > 0:
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_final(ckpt: Path | None, step: int) -> bool:
    """True when `ckpt` is the checkpoint of `step`."""
    return ckpt is not None and ckpt.name == checkpoint_name(step)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (checked), or None when it has none."""
    pointer = checkpoint_root(run_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not is_plain_name(name):
        raise UnsafeFolderError(f"{pointer}: names {name!r}, not a checkpoint folder inside {pointer.parent}")
    path = pointer.parent / name
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing or incomplete")
    check_checkpoint(path)
    return path


def check_checkpoint(ckpt: Path) -> None:
    """Raise a clear error naming the file when a checkpoint folder lacks a file or holds a
    truncated / corrupt safetensors file (reads headers only; cheap)."""
    if not (Path(ckpt) / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{ckpt}: incomplete checkpoint, {TRAINER_STATE} is missing")
    check_weights_dir(ckpt)


def load_trainer_state(ckpt: Path) -> dict:
    """The optimizer / scheduler / RNG / step state; `weights_only=True` so no pickled code runs."""
    path = Path(ckpt) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError for bad files
        raise ValueError(
            f"{path}: cannot load the trainer state ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def load_checkpoint(ckpt: Path, model, objective) -> dict:
    """Restore a run's trained weights into `model` (already prepared for training) and the loss
    state into `objective`; returns the trainer state (optimizer, scheduler, RNG, step, data).

    Checkpoints written before the loss state moved to the trainer state keep the temperature in
    the weights file as `logit_scale`; it is read from there."""
    import torch

    state = load_trainer_state(ckpt)
    weights = read_trained_tensors(ckpt)
    model.load_trained_tensors(weights)
    model.load_lora_state(ckpt)
    if "objective" in state:
        objective.load_state_dict(state["objective"])
    elif "logit_scale" in weights and objective.contrastive is not None:
        with torch.no_grad():
            objective.contrastive.logit_scale.copy_(weights["logit_scale"].reshape(1))
    return state


def read_checkpoint_compute(ckpt: Path) -> StageCompute | None:
    """The compute record saved with a checkpoint (None for checkpoints written without one)."""
    from vladva.train.compute import read_compute

    path = Path(ckpt) / COMPUTE_FILE
    return read_compute(path)[0] if path.is_file() else None
