"""Model specs -> `LoadedModel`s: the `Embedder` plus what a report needs to know about it
(identity for the embedding cache, parameter count, training compute).

A spec is `KIND:ARGS` (`vladva:BASE_DIR[:WEIGHTS_DIR]`, `zeroshot:BASE_DIR`, `clip:DIR`,
`toy:colours`, `python:MODULE:ATTR[:ARG]`, or any kind registered with
`vladva.model_kinds.register_model_kind`), optionally prefixed by a display name: `name=spec`.
Model code is imported only when used, so the harness runs with whichever model packages exist.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from vladva.model_kinds import ModelSpecError, build_embedder

__all__ = ["COMPUTE_FILES", "LoadedModel", "ModelSpecError", "load_embedder", "load_model", "parse_model_arg"]

# Files a model folder may carry that describe the compute spent to make it.
COMPUTE_FILES = ("compute.json", "train_compute.json", "pretrain_report.json", "train_report.json")


@dataclass
class LoadedModel:
    """An embedder with its report metadata. `identity` keys the embedding cache: the spec
    plus a fingerprint of every file in the model folders, so retrained weights re-encode."""

    name: str
    spec: str
    embedder: object
    identity: str
    params: int | None = None
    train_compute: dict = field(default_factory=dict)


def parse_model_arg(arg: str) -> tuple[str | None, str]:
    """`"name=spec"` -> (name, spec); `"spec"` -> (None, spec)."""
    head, sep, tail = arg.partition("=")
    if sep and ":" not in head and head.strip():
        return head.strip(), tail.strip()
    return None, arg.strip()


def folder_fingerprint(folders: list[Path]) -> str:
    """SHA-256 over (relative path, size, mtime) of every file under `folders`."""
    h = hashlib.sha256()
    for folder in folders:
        files = (
            sorted(p for p in folder.rglob("*") if p.is_file())
            if folder.is_dir()
            else [folder]
            if folder.is_file()
            else []
        )
        for p in files:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def count_parameters(embedder) -> int | None:
    """Total parameters of the embedder's torch module(s), or None if it has none we can see."""
    import torch

    if hasattr(embedder, "num_parameters") and callable(embedder.num_parameters):
        try:
            return int(embedder.num_parameters())
        except TypeError:
            pass
    for candidate in (embedder, getattr(embedder, "model", None)):
        if isinstance(candidate, torch.nn.Module):
            return sum(p.numel() for p in candidate.parameters())
    return None


# What a stage saw, summed over a model's stages: contrastive image-caption pairs, long captions
# trained with the next-token loss, training sequences of any kind, text tokens (vladva.train.compute).
SEEN_KEYS = ("pairs", "long_captions", "examples", "tokens")
# What the per-stage rows of a report keep of each stage.
STAGE_KEYS = ("stage", "steps", *SEEN_KEYS, "device", "device_name", "threads", "seconds", "device_seconds")


def read_train_compute(folders: list[Path]) -> dict:
    """Compute metadata found in the model folders (and a checkpoint's run folder), summed over
    every report found, so a VladVA model counts its base's pretraining too:

    `{"files": {path: content}, "cpu_minutes", "gpu_seconds", "pairs", "long_captions",
    "examples", "tokens", "stages": [{"file", "stage", "steps", "pairs", ...}], "incomplete": [...]}`.
    CPU-minutes (see `cpu_minutes`) and accelerator seconds (see `gpu_seconds`) are summed over
    reports; the counts of what was seen (`SEEN_KEYS`) over the stages of `{"stages": [...]}`
    records (vladva.train.compute). A count no stage states is absent; one that some stages do
    not state (records written before it existed) is the sum of those that do and is named in
    `incomplete`. `stages` lists every stage in the order found (base before fine-tune)."""
    out: dict = {"files": {}}
    total, known = 0.0, False
    gpu_total, gpu_known = 0.0, False
    seen = dict.fromkeys(SEEN_KEYS, 0)
    stated = dict.fromkeys(SEEN_KEYS, 0)
    stages: list[dict] = []
    from vladva.model.weights import resolve_weights_dir

    search = []
    for folder in folders:
        search.append(folder)
        try:  # a training run folder: its latest checkpoint holds the run's compute.json
            folder = resolve_weights_dir(folder)
            search.append(folder)
        except (FileNotFoundError, OSError):
            pass
        if folder.parent.name == "checkpoints":  # a trainer checkpoint: its run folder too
            search.append(folder.parent.parent)
    for folder in dict.fromkeys(search):
        if not folder.is_dir():
            continue
        for name in COMPUTE_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue  # a malformed report must not stop an evaluation; it is simply absent
            if not isinstance(data, dict):
                continue
            out["files"][str(path)] = data
            minutes = cpu_minutes(data)
            if minutes is not None:
                total += minutes
                known = True
            seconds = gpu_seconds(data)
            if seconds is not None:
                gpu_total += seconds
                gpu_known = True
            for st in data.get("stages", []) if isinstance(data.get("stages"), list) else []:
                if not isinstance(st, dict):
                    continue
                stages.append({"file": str(path)} | {k: st[k] for k in STAGE_KEYS if k in st})
                for k in SEEN_KEYS:
                    if isinstance(st.get(k), (int, float)) and not isinstance(st.get(k), bool):
                        seen[k] += st[k]
                        stated[k] += 1
    if known:
        out["cpu_minutes"] = total
    if gpu_known:
        out["gpu_seconds"] = gpu_total
    for k in SEEN_KEYS:
        if stated[k]:
            out[k] = int(seen[k])
    incomplete = [k for k in SEEN_KEYS if 0 < stated[k] < len(stages)]
    if stages:
        out["stages"] = stages
    if incomplete:
        out["incomplete"] = incomplete
    return out if out["files"] else {}


def cpu_minutes(report: dict) -> float | None:
    """CPU-minutes stated by one compute report, else None. Understood forms: `cpu_minutes`;
    `cpu_seconds`; `{"stages": [{"device": "cpu", "device_seconds" | "seconds", "threads"}]}`
    (what `vladva base` writes to compute.json; GPU stages are not CPU time and are skipped);
    `wall_seconds` x `threads` (threads default 1)."""
    for key in ("cpu_minutes", "train_cpu_minutes"):
        if isinstance(report.get(key), (int, float)):
            return float(report[key])
    if isinstance(report.get("cpu_seconds"), (int, float)):
        return report["cpu_seconds"] / 60
    if isinstance(report.get("stages"), list):
        seconds = 0.0
        for st in report["stages"]:
            if isinstance(st, dict) and st.get("device", "cpu") == "cpu":
                if isinstance(st.get("device_seconds"), (int, float)):
                    seconds += st["device_seconds"]
                elif isinstance(st.get("seconds"), (int, float)):
                    seconds += st["seconds"] * (st.get("threads") or 1)
        return seconds / 60
    wall = report.get("wall_seconds", report.get("wall_s", report.get("train_seconds")))
    if isinstance(wall, (int, float)):
        threads = report.get("threads", report.get("num_threads", 1))
        return wall * (threads if isinstance(threads, (int, float)) else 1) / 60
    return None


def gpu_seconds(report: dict) -> float | None:
    """Accelerator seconds of a `{"stages": [...]}` compute report (the stages whose device is not
    the CPU: `device_seconds`, else `seconds`), or None when it has no such stage."""
    stages = (
        [st for st in report.get("stages", []) if isinstance(st, dict) and st.get("device", "cpu") != "cpu"]
        if isinstance(report.get("stages"), list)
        else []
    )
    times = [st.get("device_seconds", st.get("seconds")) for st in stages]
    times = [t for t in times if isinstance(t, (int, float))]
    return float(sum(times)) if times else None


def load_model(arg: str) -> LoadedModel:
    """Parse `[name=]spec`, build the embedder, and collect identity, parameters and compute."""
    name, spec = parse_model_arg(arg)
    embedder, folders = build_embedder(spec)
    display = name or getattr(embedder, "name", None) or spec
    identity = f"{spec}|{getattr(embedder, 'name', '')}|{folder_fingerprint(folders)}"
    return LoadedModel(display, spec, embedder, identity, count_parameters(embedder), read_train_compute(folders))


def load_embedder(spec: str):
    """Just the `Embedder` for `spec` (see the module docstring for spec forms)."""
    return load_model(spec).embedder
