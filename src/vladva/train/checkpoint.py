"""Atomic checkpoints holding only what was trained, plus everything needed to resume exactly.

Layout of `RUN/checkpoints/step-000100/`:
  adapter/                      PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)
  vladva_weights.safetensors    soft prompts, logit_scale (and projector weights if trained)
  vladva_config.json            prompts / soft prompt / LoRA settings and the base model path
  config.yaml                   the resolved training recipe
  trainer_state.pt              optimizer, scheduler, RNG states, step and data position

A checkpoint is written into `.tmp-step-...`, fsynced, then renamed; `RUN/checkpoints/latest`
(the name of the newest complete checkpoint) is replaced last, so a crash at any point leaves
the previous checkpoint usable.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from vladva.config import save_config
from vladva.model.vladva import LATEST_FILE

TRAINER_STATE = "trainer_state.pt"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")) + [root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_latest(ckpt_root: Path, name: str) -> None:
    tmp = ckpt_root / f".{LATEST_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_root / LATEST_FILE)


def save_checkpoint(run_dir: Path, step: int, model, logit_scale: torch.Tensor, trainer_state: dict, cfg,
                    base_model: str, keep_last: int = 2) -> Path:
    """Write `run_dir/checkpoints/step-{step:06d}` atomically and point `latest` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_adapter(tmp, base_model=base_model, extra={"logit_scale": logit_scale.detach().float().cpu().reshape(1)})
    torch.save(trainer_state, tmp / TRAINER_STATE)
    save_config(cfg, tmp / "config.yaml")
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_tree(root)
    write_latest(root, name)
    if keep_last > 0:
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST_FILE
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def load_trainer_state(ckpt: Path) -> dict:
    return torch.load(Path(ckpt) / TRAINER_STATE, map_location="cpu", weights_only=False)
