"""GradCache peak memory at an 8x larger contrastive batch vs the plain step at the small batch.

    python benchmarks/grad_cache_memory.py --batch 16 --factor 8 --repeats 3

Each configuration runs in its own subprocess (one training step, `forward_backward`: forward +
backward, long captions on half the rows) and reports its peak resident memory (`ru_maxrss`),
and the peak minus the resident memory just before the step (model, data and the collated
batch's input tensors loaded): the memory the step itself needed. On CUDA it reports
`torch.cuda.max_memory_allocated` instead (see benchmarks/gpu_llava7b_step.py --grad-cache for
the 7B shape). Configurations: plain at `--batch`, GradCache at `factor x batch` in chunks of
`--batch`, and (for scale) plain at `factor x batch`. Target: GradCache peak / small plain peak <= 1.2.

CPU memory is what glibc malloc keeps, not what torch uses: by default glibc raises its mmap
threshold after big frees, so later activation buffers come from the heap and freed ones stay
resident; GradCache's many short forward/backward passes then look bigger than they are.
`--mmap-threshold 131072` (the default here; `MALLOC_MMAP_THRESHOLD_` for the children) pins
the threshold so freed activations go back to the OS; `--mmap-threshold 0` measures glibc's
default behaviour. Both numbers are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import common


def child(batch: int, chunk: int, threads: int, hidden: int, layers: int) -> dict:
    import torch

    common.set_threads(threads)
    from vladva.model.vladva import VladVA
    from vladva.train.config import LossConfig
    from vladva.train.step import StepObjective, TrainingModule, forward_backward

    folder, what = common.base_model(hidden, layers)
    vladva = VladVA.from_pretrained(folder)
    vladva.prepare_for_training()
    module = TrainingModule(vladva, StepObjective(LossConfig())).train()
    images, short, long = common.shapes_batch(batch)
    # the collator's batch, split into chunks of `chunk` rows for GradCache (0: one pass)
    sb = common.step_batch(vladva, images, short, long, batch // 2, chunk_size=chunk)
    with torch.no_grad():  # touch every code path once so libraries' lazy allocations are in the baseline
        vladva.encode_images(images[:2])
        vladva.encode_texts(short[:2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = forward_backward(module, sb, lambda loss: loss.backward())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": what,
        "batch": batch,
        "chunk": chunk,
        "peak_mib": round(peak / 1024, 1),
        "step_mib": round((peak - before) / 1024, 1),
        "loss": round(float(out["loss"]), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--factor", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument(
        "--mmap-threshold", type=int, default=131072, help="MALLOC_MMAP_THRESHOLD_ for the children (0: glibc default)"
    )
    ap.add_argument("--child", nargs=2, type=int, metavar=("BATCH", "CHUNK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.hidden, args.layers)))
        return
    common.base_model(args.hidden, args.layers)  # build once, outside the measured children
    big = args.batch * args.factor
    configs = {"plain_small": (args.batch, 0), "grad_cache_big": (big, args.batch), "plain_big": (big, 0)}
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for name, (b, c) in configs.items():
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                str(b),
                str(c),
                "--threads",
                str(args.threads),
                "--hidden",
                str(args.hidden),
                "--layers",
                str(args.layers),
            ]
            env = dict(os.environ)
            if args.mmap_threshold > 0:
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    med = {k: {m: common.median([r[m] for r in v]) for m in ("peak_mib", "step_mib")} for k, v in runs.items()}
    print(
        json.dumps(
            {
                "benchmark": "grad_cache_memory",
                "model": runs["plain_small"][0]["model"],
                "device": "cpu (ru_maxrss)",
                "malloc_mmap_threshold": args.mmap_threshold or "glibc default",
                "small_batch": args.batch,
                "big_batch": big,
                "chunk": args.batch,
                "repeats": args.repeats,
                "median_mib": med,
                "losses": {k: v[0]["loss"] for k, v in runs.items()},
                "ratio_peak_grad_cache_big_over_plain_small": round(
                    med["grad_cache_big"]["peak_mib"] / med["plain_small"]["peak_mib"], 3
                ),
                "ratio_step_memory_grad_cache_big_over_plain_small": round(
                    med["grad_cache_big"]["step_mib"] / med["plain_small"]["step_mib"], 3
                ),
                "ratio_peak_plain_big_over_plain_small": round(
                    med["plain_big"]["peak_mib"] / med["plain_small"]["peak_mib"], 3
                ),
                "target": "grad_cache_big / plain_small <= 1.2",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
