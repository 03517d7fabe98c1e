"""`vladva ablate` as a library call: train every (cell, seed) of a grid, evaluate it, aggregate.

    grid (vladva.ablation.grid) -> plan: runs, equal cells sharing runs
      -> per run: vladva.train.trainer.train_or_reuse (a finished run is reused, an interrupted
         one resumes) -> vladva.eval.runner.run_evaluation on the grid's data (one embedding
         cache for the grid) -> OUT/runs/<cell>/seed-<s>/eval/results.json, and for generation
         blocks vladva.eval.generation -> OUT/runs/<cell>/seed-<s>/ablation_run.json
      -> vladva.eval.report.write_ablation_report: OUT/ablations.json, ablations.md, one PNG per block

A run whose `ablation_run.json` holds the current evaluation settings is done and is never
redone; rerunning the same command after an interruption continues where it stopped. Runs go
one after the other, or `jobs` at a time in worker processes (one CPU thread each by default).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

from vladva.ablation.grid import AblationGrid, PlannedCell, PlannedRun, plan_grid, unique_runs
from vladva.config import config_to_dict, save_config

RUN_RECORD = "ablation_run.json"
PROGRESS_FILE = "progress.json"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """`{"retrieval": {"t2i_R@1": 40.0}, "zeroshot": {"count": {"top1": 50.0}}}` ->
    `{"retrieval/t2i_R@1": 40.0, "zeroshot/count/top1": 50.0}` (numbers only)."""
    out = {}
    for k, v in metrics.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out |= flatten_metrics(v, key)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def eval_config(grid: AblationGrid, cache_dir: Path):
    from vladva.eval.runner import EvalConfig

    e = grid.eval
    return EvalConfig(
        data=str(grid.data),
        suites=list(e.suites),
        limit=e.limit,
        seed=e.seed,
        batch_size=e.batch_size,
        cache_dir=str(cache_dir),
        show_progress=False,
    )


def run_settings(grid: AblationGrid, generation: bool) -> dict:
    """What a run's record must have been made with to be reused."""
    return {
        "eval": config_to_dict(grid.eval),
        "generation": config_to_dict(grid.generation) if generation else None,
    }


def _zero_shot_model(cell: str, cfg):
    """The base with the recipe's model settings and no training, as a `LoadedModel`."""
    import hashlib

    from vladva.eval.models import LoadedModel, count_parameters, folder_fingerprint, read_train_compute
    from vladva.model.vladva import VladVA

    base = cfg.base_dir()
    model = VladVA.from_pretrained(base, config=cfg.model)
    settings = hashlib.sha256(repr(config_to_dict(cfg.model)).encode("utf-8")).hexdigest()[:12]
    identity = f"zeroshot-cell:{base}|{settings}|{folder_fingerprint([base])}"
    return LoadedModel(cell, f"zeroshot:{base}", model, identity, count_parameters(model), read_train_compute([base]))


def _generation(model, grid: AblationGrid, cfg) -> dict:
    from vladva.data.images import load_image
    from vladva.eval.generation import generation_report
    from vladva.train.batches import load_records

    g = grid.generation
    records = [r for r in load_records(cfg.data.val, strict=False) if r.long_caption][: g.images]
    if not records:
        raise ValueError(f"{cfg.data.val}: no record with a long caption to measure generation on")
    prompts = {"summary": None} | ({"caption": g.caption_prompt} if g.caption_prompt else {})
    report = generation_report(
        model,
        [load_image(r.image) for r in records],
        [r.long_caption for r in records],
        prompts,
        samples=g.samples,
        max_new_tokens=g.max_new_tokens,
    )
    report["references"] = [r.long_caption for r in records[: g.samples]]
    return report


def execute_run(run: PlannedRun, zero_shot: bool, generation: bool, grid: AblationGrid, cache_dir: Path) -> dict:
    """Train (or reuse / resume) one run, evaluate it, measure generation when asked, and write
    its record `RUN/ablation_run.json`; a record made with the same settings is returned as is."""
    import torch

    from vladva.eval.models import load_model
    from vladva.eval.report import as_report, write_report
    from vladva.eval.runner import run_evaluation
    from vladva.train.checkpoint import read_checkpoint_compute
    from vladva.train.trainer import train_or_reuse

    settings = run_settings(grid, generation)
    record_path = run.run_dir / RUN_RECORD
    done = _read_json(record_path)
    if done is not None and done.get("settings") == settings:
        return done | {"reused": True}
    torch.set_num_threads(grid.num_threads)
    cfg = run.config
    wall0, cpu0 = time.perf_counter(), time.process_time()
    checkpoint, compute = None, {}
    if zero_shot:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.run_dir / "config.yaml")
        model = _zero_shot_model(run.cell, cfg)
    else:
        checkpoint = train_or_reuse(
            cfg, log=lambda msg: print(f"[ablate] {run.cell} seed {run.seed}: {msg}", flush=True)
        )
        stage = read_checkpoint_compute(checkpoint)
        compute = stage.to_dict() if stage is not None else {}
        model = load_model(f"{run.cell}=vladva:{cfg.base_dir()}:{checkpoint}")
    wall1, cpu1 = time.perf_counter(), time.process_time()
    results = run_evaluation([model], eval_config(grid, cache_dir), log=lambda _msg: None)
    eval_dir = run.run_dir / "eval"
    write_report(as_report(results, str(eval_dir)), eval_dir)
    gen = _generation(model.embedder, grid, cfg) if generation else None
    wall2, cpu2 = time.perf_counter(), time.process_time()
    record = {
        "cell": run.cell,
        "seed": run.seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "settings": settings,
        "metrics": flatten_metrics(results["models"][0]["metrics"]),
        "counts": results["models"][0]["counts"],
        "compute": compute,
        "generation": gen,
        # This process's share of the work; a reused or resumed training run counts only what ran now.
        "timing": {
            "train_wall_s": round(wall1 - wall0, 1),
            "train_cpu_s": round(cpu1 - cpu0, 1),
            "eval_wall_s": round(wall2 - wall1, 1),
            "eval_cpu_s": round(cpu2 - cpu1, 1),
            "threads": grid.num_threads,
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    _write_json(record_path, record)
    return record


def _execute_in_worker(args) -> dict:
    run, zero_shot, generation, grid, cache_dir = args
    return execute_run(run, zero_shot, generation, grid, cache_dir)


def collect(grid: AblationGrid, plan: list[PlannedCell], out_dir: Path, meta: dict) -> dict:
    """The ablations dict (`vladva.eval.report.write_ablation_report` adds the statistics) from
    the run records on disk; a run without a record is missing (its cell is incomplete)."""
    settings_of = {id(p.runs): run_settings(grid, p.generation) for p in plan}
    blocks = []
    for block in grid.blocks:
        cells = []
        for p in (q for q in plan if q.block is block):
            runs = []
            for r in p.runs:
                rec = _read_json(r.run_dir / RUN_RECORD)
                if rec is not None and rec.get("settings") == settings_of[id(p.runs)]:
                    runs.append({k: v for k, v in rec.items() if k != "settings"})
            cells.append(
                {
                    "name": p.cell.name,
                    "label": p.cell.title,
                    "zero_shot": p.cell.zero_shot,
                    "overrides": list(p.cell.overrides),
                    "runs_of": p.runs_of,
                    "seeds": [r.seed for r in p.runs],
                    "runs": runs,
                }
            )
        blocks.append(
            {
                "name": block.name,
                "title": block.title or block.name,
                "note": block.note,
                "reference": block.reference or block.cells[0].name,
                "generation": block.generation,
                "cells": cells,
            }
        )
    return meta | {"blocks": blocks}


def run_ablation(
    grid: AblationGrid,
    out_dir: Path | str,
    extra_overrides: list[str] = (),
    jobs: int = 1,
    only_blocks: list[str] | None = None,
    log=print,
) -> dict:
    """Run (or continue) the grid into `out_dir` and write its report; returns the ablations dict.
    `extra_overrides`: recipe overrides for every run (after the grid's); `only_blocks`: run the
    runs of these blocks only (the report still lists every block, with what is done)."""
    from vladva.eval.report import write_ablation_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_grid(grid, out_dir, list(extra_overrides))
    if only_blocks:
        unknown = [b for b in only_blocks if b not in [x.name for x in grid.blocks]]
        if unknown:
            raise ValueError(f"--only {unknown[0]}: no such block; blocks: {', '.join(b.name for b in grid.blocks)}")
    save_config(grid, out_dir / "grid.yaml")
    cache_dir = out_dir / "cache"
    todo = [
        (p, r)
        for p, r in unique_runs(plan)
        if not only_blocks or any(q.block.name in only_blocks for q in plan if q.runs is p.runs)
    ]
    total_cells = len(plan)
    started = time.perf_counter()
    meta = {
        "schema": "vladva.ablations/1",
        "grid": config_to_dict(grid),
        "extra_overrides": list(extra_overrides),
        "out": str(out_dir),
    }
    progress = _read_json(out_dir / PROGRESS_FILE) or {}
    load_trace = progress.get("load_trace", [])
    failures: list[str] = []

    def cells_done() -> int:
        n = 0
        for p in plan:
            n += all((r.run_dir / RUN_RECORD).is_file() for r in p.runs)
        return n

    def report(running: list[str]) -> None:
        elapsed = time.perf_counter() - started
        load_trace.append([datetime.now(UTC).isoformat(timespec="seconds"), round(os.getloadavg()[0], 2)])
        done_runs = sum((r.run_dir / RUN_RECORD).is_file() for _, r in unique_runs(plan))
        state = {
            "runs_done": done_runs,
            "runs_total": len(unique_runs(plan)),
            "cells_done": cells_done(),
            "cells_total": total_cells,
            "running": running,
            "this_invocation_s": round(elapsed, 1),
            "load_trace": load_trace[-2000:],
            "failures": failures,
        }
        _write_json(out_dir / PROGRESS_FILE, state)
        meta["progress"] = state
        write_ablation_report(collect(grid, plan, out_dir, meta), out_dir)

    def label(p: PlannedCell, r: PlannedRun) -> str:
        return f"{p.block.name}/{p.cell.name}" + ("" if r.seed is None else f" seed {r.seed}")

    def finished(p: PlannedCell, r: PlannedRun, rec: dict | None, error: str | None, running: list[str]) -> None:
        if error is not None:
            failures.append(f"{label(p, r)}: {error}")
            log(f"[ablate] FAILED {label(p, r)}: {error}")
        else:
            t = rec.get("timing", {})
            how = "reused" if rec.get("reused") else f"train {t.get('train_wall_s')} s, eval {t.get('eval_wall_s')} s"
            log(f"[ablate] done {label(p, r)} ({how})")
        report(running)
        log(
            f"[ablate] progress: cells {meta['progress']['cells_done']}/{total_cells}, "
            f"runs {meta['progress']['runs_done']}/{meta['progress']['runs_total']}, "
            f"{time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f}"
            + (f"; running {', '.join(running)}" if running else "")
        )

    log(f"[ablate] {len(todo)} runs to check of {len(unique_runs(plan))} in {total_cells} cells -> {out_dir}")
    if jobs <= 1:
        for p, r in todo:
            log(f"[ablate] running {label(p, r)}")
            try:
                rec, err = execute_run(r, p.cell.zero_shot, p.generation, grid, cache_dir), None
            except Exception as e:  # one failed run must not lose the others' results
                rec, err = None, f"{type(e).__name__}: {e}"
                traceback.print_exc()
            finished(p, r, rec, err, [])
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(_execute_in_worker, (r, p.cell.zero_shot, p.generation, grid, cache_dir)): (p, r)
                for p, r in todo
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                running = [label(*futures[f]) for f in futures if f in pending][:jobs]
                for f in done:
                    p, r = futures[f]
                    try:
                        rec, err = f.result(), None
                    except Exception as e:
                        rec, err = None, f"{type(e).__name__}: {e}"
                    finished(p, r, rec, err, running)
    report([])
    ablations = collect(grid, plan, out_dir, meta)
    if failures:
        raise RuntimeError(
            f"{len(failures)} run(s) failed (the others are saved; rerun to retry): " + "; ".join(failures)
        )
    return ablations
