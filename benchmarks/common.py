"""Shared set-up for the CPU benchmarks: the model under test, a batch, side-by-side timing."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout without installing

SHIPPED = Path(__file__).resolve().parent.parent / "src" / "vladva" / "pretrained" / "base-lvlm"


def base_model(hidden: int = 256, layers: int = 4) -> tuple[Path, str]:
    """`(folder, description)`: the shipped base LVLM if present, else a random LLaVA built from
    config (vladva.testing, LM hidden `hidden` x `layers` layers, 1-layer 32-d CLIP tower)."""
    if (SHIPPED / "config.json").is_file():
        return SHIPPED, f"shipped base ({SHIPPED})"
    from vladva.testing import build_tiny_llava

    folder = Path(tempfile.gettempdir()) / f"vladva-bench-llava-h{hidden}-l{layers}"
    if not (folder / "config.json").is_file():
        build_tiny_llava(folder, hidden=hidden, layers=layers, seed=0)
    return folder, f"random LLaVA from config (LM hidden {hidden}, {layers} layers; CLIP tower 32-d, 1 layer, 32 px)"


def parser(repeats: int = 5) -> argparse.ArgumentParser:
    """The options every CPU benchmark shares: timed repeats, torch threads, and the size of the
    random LLaVA used when the shipped base is absent (`base_model`)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    return ap


def model_under_test(args: argparse.Namespace) -> tuple[Path, str]:
    """Pin torch's threads, then `base_model(args.hidden, args.layers)`."""
    set_threads(args.threads)
    return base_model(args.hidden, args.layers)


def shapes_batch(n: int, seed: int = 0):
    """`n` rendered shapes images (PIL, 32 px) with a short and a long caption each."""
    import random

    from vladva.toyworld.scene import SceneConfig, render_scene, sample_scene

    rng = random.Random(seed)
    images, short, long = [], [], []
    for _ in range(n):
        scene = sample_scene(rng, SceneConfig(min_objects=1, max_objects=2))
        images.append(render_scene(scene))
        names = [o.phrase() for o in scene.objects]
        short.append("a " + " and a ".join(names))
        long.append(
            f"the image shows {len(names)} objects on a black background . there is "
            + " and ".join(
                f"a {o.phrase(with_size=True)} on the {'left' if o.x < 16 else 'right'}" for o in scene.objects
            )
            + " ."
        )
    return images, short, long


def train_samples(images: list, short: list[str], long: list[str], n_ntp: int) -> list:
    """`TrainSample`s for the training collator: image i with its short caption (pair id i), and a
    long caption for the first `n_ntp` images."""
    from vladva.train.batches import TrainSample

    return [
        TrainSample(i, f"0/{i}", image, [caption], long[i] if i < n_ntp else None)
        for i, (image, caption) in enumerate(zip(images, short))
    ]


def step_batch(vladva, images: list, short: list[str], long: list[str], n_ntp: int, chunk_size: int = 0):
    """The `StepBatch` the trainer's collator builds for these pairs (tensors included): every image
    with its short caption, next-token loss on the first `n_ntp` long captions, split into chunks of
    `chunk_size` rows for GradCache (0: one chunk)."""
    from vladva.train.batches import StepCollator

    collator = StepCollator(vladva.inputs, n_ntp, "first", 0, chunk_size=chunk_size)
    return collator(train_samples(images, short, long, n_ntp))


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def side_by_side(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each of `fns` (name -> callable) `warmup` times, then `repeats` rounds, interleaved so
    machine noise hits every variant alike. Returns seconds per call per variant."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
