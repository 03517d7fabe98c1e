"""The VladVA training loop on accelerate: contrastive on short captions + next-token on long ones.

`train(cfg)`, top to bottom: load the base LVLM and make its soft prompts + LoRA trainable; build
the objective (vladva.train.step.StepObjective), the optimizer and the schedule; read batches
(vladva.train.batches.TrainBatches); then per optimizer step, for each of `grad_accum`
micro-batches, `forward_backward` (one pass or GradCache), then clip, AdamW step, scheduler step;
log; evaluate held-out retrieval; checkpoint (vladva.train.checkpoint). Everything one step does
is in vladva.train.step; what each engine (DDP, FSDP2, DeepSpeed) needs is in vladva.train.engine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vladva.config import save_config
from vladva.data.shards import is_shard_spec, resolve_shards
from vladva.data.vocab import warn_unknown_tokens
from vladva.model.dual_encoder import DualEncoder
from vladva.model.vladva import VladVA
from vladva.storage import atomic_write_text, writing
from vladva.threads import apply_threads
from vladva.train import engine
from vladva.train.batches import ALL_KINDS, StepCollator, TrainBatches, load_records
from vladva.train.checkpoint import (
    RECIPE_FILE,
    has_checkpoints,
    is_final,
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    pause_for_tests,
    read_checkpoint_compute,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vladva.train.compute import StageCompute, describe_device
from vladva.train.config import TrainConfig
from vladva.train.curves import METRICS_FILE, plot_training_curves
from vladva.train.distributed import (
    average_gradients,
    gather_with_grad,
    mean_over_processes,
    mean_over_processes_where_present,
    negatives_per_query,
    sum_over_processes,
    token_share,
)
from vladva.train.schedule import step_progress, warmup_cosine
from vladva.train.step import StepObjective, TrainingModule, check_grad_cache_supported, forward_backward

log = logging.getLogger(__name__)

# `TrainConfig.architecture` -> the model class; each offers VladVA's training interface
# (`inputs`, `prepare_for_training`, `parameter_groups`, `embed_*_inputs`, `save_weights`, ...).
MODEL_CLASSES: dict[str, type[VladVA]] = {"vladva": VladVA, "dual_encoder": DualEncoder}


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    trainable_params: int
    seconds: float
    final: dict = field(default_factory=dict)
    evals: list[dict] = field(default_factory=list)
    compute: StageCompute | None = None
    curves: Path | None = None  # training_curves.png


def retrieval_recall(model: VladVA, records, batch_size: int = 64) -> dict:
    """Held-out checks over `records` and all their short captions: text->image and image->text
    R@1 (%), ties against the model (vladva.eval.metrics); a text->image hit retrieves the
    caption's own image, image->text any caption of the image. When captions have hard negatives
    (`caption_negatives`), also the hard-negative accuracy per kind (`held_out_hard_negatives`)."""
    from vladva.eval.metrics import retrieval_recalls

    images = [r.image for r in records]
    texts, owner = [], []
    for i, r in enumerate(records):
        texts.extend(r.captions)
        owner.extend([i] * len(r.captions))
    img = model.encode_images(images, batch_size=batch_size)
    txt = model.encode_texts(texts, batch_size=batch_size)
    r = retrieval_recalls(img @ txt.T, torch.tensor(owner), ks=(1,))
    return {
        "t2i_r1": round(r["t2i_R@1"], 2),
        "i2t_r1": round(r["i2t_R@1"], 2),
        "n_images": len(images),
        "n_texts": len(texts),
    } | held_out_hard_negatives(model, records, img, txt, batch_size)


def held_out_hard_negatives(model: VladVA, records, img: torch.Tensor, txt: torch.Tensor, batch_size: int = 64) -> dict:
    """Per kind of negative (and `"all"`), the share (0-1) of (image, caption) items of `records`
    whose caption outscores every one of its own `caption_negatives` of that kind, ties against
    the model (`vladva.train.step.hard_negative_accuracy`); `{}` when no caption has negatives.

    `img`: `(n_records, dim)` and `txt`: `(n_captions, dim)` (every record's captions in order)
    L2-normalised embeddings. Returns `{"hard_neg_acc": {kind: share}, "hard_neg_items": {kind: n},
    "hard_neg_chance": {kind: share}}` (chance: 1 / (1 + the item's negatives of the kind), averaged)."""
    from vladva.data.manifest import as_negatives
    from vladva.train.step import hard_negative_accuracy

    item, image_of_item, neg_texts, neg_item, neg_kinds = 0, [], [], [], []
    for i, r in enumerate(records):
        for c in range(len(r.captions)):
            for neg in as_negatives(r.caption_negatives[c] if r.caption_negatives else []):
                neg_texts.append(neg.text)
                neg_item.append(item)
                neg_kinds.append(neg.kind_name)
            image_of_item.append(i)
            item += 1
    if not neg_texts:
        return {}
    unique = list(dict.fromkeys(neg_texts))
    emb = model.encode_texts(unique, batch_size=batch_size)
    row = {t: k for k, t in enumerate(unique)}
    neg = emb[torch.tensor([row[t] for t in neg_texts])]
    owner = torch.tensor(image_of_item)
    items = torch.tensor(neg_item)
    positive = (img[owner] * txt).sum(dim=1)
    negative = (img[owner[items]] * neg).sum(dim=1)
    scores = hard_negative_accuracy(positive, negative, items, neg_kinds)
    return {
        "hard_neg_acc": {k: round(v.acc, 4) for k, v in scores.items()},
        "hard_neg_items": {k: v.items for k, v in scores.items()},
        "hard_neg_chance": {k: round(v.chance, 4) for k, v in scores.items()},
    }


def _optimizer_groups(module: TrainingModule, cfg: TrainConfig) -> list[dict]:
    o = cfg.optim
    lrs = {"soft_prompt": o.lr_soft_prompt, "lora": o.lr_lora, "projector": o.lr_projector}
    groups = [
        {
            "name": name,
            "params": params,
            "lr": lrs[name],
            "weight_decay": 0.0 if name == "soft_prompt" else o.weight_decay,
        }
        for name, params in module.vladva.parameter_groups().items()
    ]
    loss_params = [p for p in module.objective.parameters() if p.requires_grad]
    if loss_params:  # the learnable temperature
        groups.append({"name": "temperature", "params": loss_params, "lr": o.lr_temperature, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class MetricsLog:
    """Appends JSON lines to `RUN/metrics.jsonl`; on resume drops lines past the resumed step (and a
    line torn by a crash or a full disk). A full disk is a `DiskFullError` naming the file."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            atomic_write_text(path, "", durable=False)
        elif path.is_file():
            keep = [
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if _step_of(ln, resume_step + 1) <= resume_step
            ]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep), durable=False)

    def write(self, record: dict) -> None:
        if self.enabled:
            intact = (
                "the lines logged before this step and the last checkpoint are intact; free some space and --resume"
            )
            with writing("the training log", self.path, intact), open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _step_of(line: str, otherwise: int) -> int:
    """The `step` of a metrics.jsonl line; `otherwise` for a blank or torn (not JSON) line."""
    try:
        return int(json.loads(line).get("step", 0)) if line.strip() else otherwise
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return otherwise


def _check_inputs(cfg: TrainConfig, resume: bool) -> tuple[Path, Path, Path | None]:
    """`(base folder, run folder, checkpoint to resume)` after the checks that need no model."""
    if not cfg.data.train:
        raise ValueError("data.train: give the training manifest (e.g. data.train=DATA/train.jsonl)")
    base_dir = cfg.base_dir()
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"base_model: {base_dir} is not a Hugging Face model folder (no config.json)")
    run_dir = Path(cfg.output_dir)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    if not resume and has_checkpoints(run_dir):
        raise ValueError(f"output_dir {run_dir} already holds checkpoints; pass --resume or choose another output_dir")
    return base_dir, run_dir, ckpt


def _check_negative_kinds(records, kinds: list[str], hard_negatives: int, where: str) -> None:
    """Warn when the training data has no hard negatives of the kinds `data.negative_kinds` selects."""
    present = {
        x.kind_name for r in records for x in r.negative_captions + [y for ys in r.caption_negatives for y in ys]
    }
    if not present:
        log.warning(
            "data.hard_negatives=%d but no record of %s has negative captions: training without hard negatives",
            hard_negatives,
            where,
        )
        return
    if ALL_KINDS in kinds:
        return
    missing = sorted(set(kinds) - present)
    if missing:
        log.warning(
            "data.negative_kinds: %s %s in %s (its negatives are of kinds %s)%s",
            ", ".join(missing),
            "is not" if len(missing) == 1 else "are not",
            where,
            ", ".join(sorted(present)),
            "; training without hard negatives" if not present & set(kinds) else "",
        )


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train per `cfg`; `resume=True` continues from `output_dir`'s latest checkpoint exactly."""
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    apply_threads(cfg.num_threads)  # 0: chosen from the cores and the machine's load (vladva.threads)
    base_dir, run_dir, ckpt = _check_inputs(cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / RECIPE_FILE)
    accelerator = engine.make_accelerator(_mixed_precision(cfg))
    _seed_everything(cfg.seed)
    val_records = load_records(cfg.data.val, strict=cfg.data.strict)[: cfg.eval.max_images] if cfg.data.val else []
    # Read the training data before the model loads, so a bad manifest or missing shard fails fast.
    records = None
    if is_shard_spec(cfg.data.train):
        resolve_shards(cfg.data.train)
    else:
        records = load_records(cfg.data.train, strict=cfg.data.strict)

    with engine.loading_whole(accelerator):
        vladva = MODEL_CLASSES[cfg.architecture].from_pretrained(base_dir, config=cfg.model)
    if accelerator.is_main_process:  # words the base cannot read are lost in training, say so now
        for what, recs in (
            (f"the captions of {cfg.data.train}", records),
            (f"the captions of {cfg.data.val}", val_records),
        ):
            if recs:
                texts = [c for r in recs for c in r.captions] + [r.long_caption for r in recs if r.long_caption]
                warn_unknown_tokens(vladva.tokenizer, texts, what)
    n_trainable = vladva.prepare_for_training()
    n_total = sum(p.numel() for p in vladva.parameters())
    accelerator.print(f"trainable parameters: {n_trainable:,} of {n_total:,} ({100 * n_trainable / n_total:.2f}%)")
    accelerator.print(f"engine: {engine.describe(accelerator)}")
    # Global negatives: every process scores its queries against all processes' candidates.
    global_negatives = accelerator.num_processes > 1 and cfg.distributed.global_negatives
    objective = StepObjective(cfg.loss, gather=gather_with_grad if global_negatives else None)
    if accelerator.num_processes > 1:
        objective.token_share = token_share
    module = TrainingModule(vladva, objective, hard_negatives=cfg.data.hard_negatives > 0)
    if cfg.grad_cache.chunk_size > 0:
        check_grad_cache_supported(str(accelerator.distributed_type).split(".")[-1])
    b = cfg.data.contrastive_batch_size
    negatives = negatives_per_query(b, global_negatives)  # a collective when distributed: every process runs it
    accelerator.print(
        f"contrastive batch: {accelerator.num_processes} process(es) x {b} pairs; each query is scored against "
        f"{negatives + 1} candidates ({negatives} negatives, {'global' if global_negatives else 'per-process'})"
        + (f"; GradCache chunks of {cfg.grad_cache.chunk_size}" if cfg.grad_cache.chunk_size > 0 else "")
        + (
            f"; plus up to {cfg.data.hard_negatives} hard negative caption(s) per image (image->text)"
            if cfg.data.hard_negatives > 0
            else ""
        )
    )
    optimizer = torch.optim.AdamW(_optimizer_groups(module, cfg), betas=tuple(cfg.optim.betas))
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, o.warmup_steps, step_progress(s, o.warmup_steps, o.max_steps), o.min_lr_ratio, o.schedule
        ),
    )
    # The checkpoint's weights go in before `prepare`, which may shard them over processes (FSDP).
    state = load_checkpoint(ckpt, vladva, objective) if ckpt is not None else None
    module, optimizer = engine.prepare(accelerator, module, optimizer, b)
    inner: TrainingModule = accelerator.unwrap_model(module)

    step, saved = 0, {}
    compute = StageCompute(
        MODEL_CLASSES[cfg.architecture].COMPUTE_STAGE,
        device=accelerator.device.type,
        device_name=describe_device(accelerator.device),
        threads=torch.get_num_threads(),
        extra={"trainable_params": n_trainable, "processes": accelerator.num_processes},
    )
    if state is not None:
        engine.load_optimizer_state(accelerator, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, saved = state["step"], state.get("data", {})
        compute = read_checkpoint_compute(ckpt) or compute
        accelerator.print(f"resumed from {ckpt} at step {step}")

    if cfg.data.num_workers > 0:  # tokenizers must not use threads of their own in forked workers
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    collator = StepCollator(
        vladva.inputs,
        cfg.data.ntp_batch_size,
        cfg.data.caption_choice,
        cfg.seed,
        cfg.data.hard_negatives,
        cfg.grad_cache.chunk_size,
        with_ntp=cfg.loss.ntp_weight > 0,
        negative_kinds=cfg.data.negative_kinds,
        contrastive_captions=cfg.data.contrastive_captions,
        ntp_captions=cfg.data.ntp_captions,
    )
    batches = TrainBatches(
        cfg.data.train,
        collator,
        b,
        cfg.seed,
        accelerator.process_index,
        accelerator.num_processes,
        cfg.data.num_workers,
        cfg.data.strict,
        start=step * cfg.optim.grad_accum,
        shard_state=saved.get("shards"),
        records=records,
    )
    if cfg.data.hard_negatives > 0 and records is not None:
        _check_negative_kinds(records, cfg.data.negative_kinds, cfg.data.hard_negatives, cfg.data.train)

    metrics = MetricsLog(run_dir / METRICS_FILE, step if ckpt is not None else None, accelerator.is_main_process)
    evals: list[dict] = []
    counts = {"pairs": 0, "long_captions": 0, "tokens": 0}

    def evaluate() -> None:
        # the main process evaluates; with sharded weights every process joins the forward passes
        if not val_records or not (accelerator.is_main_process or engine.shards_parameters(accelerator)):
            return
        t0 = time.perf_counter()
        result = engine.on_whole_model(
            accelerator, module, lambda: retrieval_recall(vladva, val_records, cfg.eval.batch_size)
        )
        if not accelerator.is_main_process:
            return
        rec = {"step": step, "eval": result, "eval_seconds": round(time.perf_counter() - t0, 2)}
        evals.append(rec)
        metrics.write(rec)
        per_kind = "".join(f"  {k} {v:.2f}" for k, v in result.get("hard_neg_acc", {}).items())
        accelerator.print(
            f"step {step}: held-out R@1 text->image {result['t2i_r1']:.1f}  image->text {result['i2t_r1']:.1f}"
            + (f"; hard-negative accuracy{per_kind}" if per_kind else "")
        )

    def update_compute(final_loss: float | None) -> StageCompute:
        """Add this process group's counts since the last call (a collective with several processes)."""
        totals = sum_over_processes({k: float(v) for k, v in counts.items()})
        compute.pairs += int(totals["pairs"])
        compute.long_captions += int(totals["long_captions"])
        compute.tokens += int(totals["tokens"])
        compute.examples = compute.pairs
        for k in counts:
            counts[k] = 0
        compute.steps, compute.final_loss = step, final_loss
        return compute

    def checkpoint() -> Path | None:
        # Collectives (and, under FSDP, the gathers of sharded tensors): every process, before the rank check.
        data_state = batches.state_all_processes()
        record = update_compute(last.get("loss"))
        weights = vladva.trained_weights()
        optimizer_state = engine.whole_optimizer_state(accelerator, optimizer)
        objective_state = engine.whole_parameters(inner.objective)
        if not accelerator.is_main_process:
            return None
        state = {
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "objective": objective_state,
            "rng": rng_state(),
            "step": step,
            "data": data_state,
        }
        return save_checkpoint(
            run_dir, step, vladva, state, cfg, str(base_dir), record, cfg.checkpoint.keep_last, weights
        )

    if ckpt is None and cfg.eval.at_start:
        evaluate()  # zero-shot: LoRA starts at zero and soft prompts at the handcrafted prompt
    module.train()
    skipped_total = 0
    last: dict = {}
    bar = tqdm(
        total=cfg.optim.max_steps,
        initial=step,
        desc="training",
        disable=not (cfg.progress and accelerator.is_main_process),
    )
    last_ckpt = ckpt
    while step < cfg.optim.max_steps:
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        seen: dict[str, int] = {}  # micro-batches that reported each value (a kind may be absent from some)
        chunked = False
        for _ in range(cfg.optim.grad_accum):
            batch = batches.next()
            skipped_total += len(batch.skipped)
            if len(batch) < 2:
                raise ValueError(
                    f"step {step}: fewer than 2 readable images in the batch ({len(batch.skipped)} skipped)"
                )
            chunked = chunked or batch.chunked
            out = forward_backward(
                module, batch, accelerator.backward, 1.0 / cfg.optim.grad_accum, accelerator.autocast
            )
            counts["pairs"] += batch.pairs
            counts["long_captions"] += batch.long_captions
            counts["tokens"] += batch.n_tokens
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.optim.grad_accum
                seen[k] = seen.get(k, 0) + 1
        sums = {
            k: v * cfg.optim.grad_accum / seen[k] if seen[k] != cfg.optim.grad_accum else v for k, v in sums.items()
        }
        pause_for_tests(run_dir / "checkpoints", "step", step + 1)  # kill-and-resume tests stop here
        if chunked:  # GradCache ran outside DDP's reducer
            average_gradients(p for p in module.parameters() if p.requires_grad)
        if accelerator.num_processes > 1:  # log the global batch's losses, not the main process's part
            keys = ["loss", "contrastive", "batch_acc"]
            keys += ["ntp"] if cfg.loss.ntp_weight > 0 and cfg.data.ntp_batch_size else []
            hard = {k: v for k, v in sums.items() if k.startswith("hard_neg_acc")}
            sums = mean_over_processes({k: sums.get(k, 0.0) for k in keys})
            if cfg.data.hard_negatives > 0:  # a process may have no negative of some kind this step
                sums |= mean_over_processes_where_present(hard)
        grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        compute.seconds += time.perf_counter() - t0
        contrastive = inner.objective.contrastive
        last = {
            "step": step,
            **{k: round(v, 5) for k, v in sums.items()},
            **({"logit_scale": round(contrastive.current_scale(), 3)} if contrastive is not None else {}),
            "grad_norm": round(float(grad_norm), 4),
            "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
            "skipped": skipped_total,
            "negatives": negatives,
            "step_seconds": round(time.perf_counter() - t0, 3),
        }
        if step % cfg.log_every == 0 or step == cfg.optim.max_steps or step == 1:
            metrics.write(last)
        bar.update(1)
        shown = ["loss", "contrastive", "ntp", "batch_acc", "hard_neg_acc"]
        shown += sorted(k for k in last if k.startswith("hard_neg_acc/"))
        bar.set_postfix({k: f"{last[k]:.3f}" for k in shown if k in last})
        if cfg.eval.every > 0 and step % cfg.eval.every == 0 and step != cfg.optim.max_steps:
            evaluate()
            module.train()
        if cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0 and step != cfg.optim.max_steps:
            last_ckpt = checkpoint()
    bar.close()
    if step > 0 and not is_final(last_ckpt, step):
        evaluate()
        last_ckpt = checkpoint()
    if skipped_total:
        log.warning("skipped %d unreadable samples in total (see the log lines above)", skipped_total)
    curves = None
    if accelerator.is_main_process and (run_dir / METRICS_FILE).is_file():
        try:
            curves = plot_training_curves(run_dir)
        except (OSError, ValueError, RuntimeError) as e:  # the checkpoint is saved; a chart must not lose the run
            log.warning("could not draw %s: %s", run_dir / "training_curves.png", e)
    module.eval()
    return TrainResult(
        run_dir, last_ckpt, step, n_trainable, time.perf_counter() - start_time, last, evals, compute, curves
    )


# Recipe keys that change how a run goes, not what it learns: a finished run is reused across them.
RUNTIME_KEYS = ("num_threads", "progress")


def _result_keys(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k not in RUNTIME_KEYS}


def train_or_reuse(cfg: TrainConfig, log=print) -> Path:
    """The final checkpoint of the run `cfg` describes: reused when `output_dir` holds that run
    finished, resumed when it holds it interrupted, trained otherwise. A run folder holding a run
    with another config is an error (nothing is overwritten)."""
    from vladva.config import ConfigError, config_to_dict, load_config

    run_dir = Path(cfg.output_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        log(f"training {cfg.base_model} for {cfg.optim.max_steps} steps into {run_dir}")
        return train(cfg).checkpoint
    recipe = run_dir / RECIPE_FILE
    try:  # a key the saved recipe predates reads as its default (e.g. data.negative_kinds: [all])
        saved = config_to_dict(load_config(TrainConfig, recipe)) if recipe.is_file() else None
    except (ConfigError, ValueError):
        saved = None
    if saved is None or _result_keys(saved) != _result_keys(config_to_dict(cfg)):
        raise ValueError(f"{run_dir} holds a VladVA run with another config; remove it or choose another output_dir")
    if is_final(ckpt, cfg.optim.max_steps):
        log(f"reusing the finished run {ckpt}")
        return ckpt
    log(f"resuming the interrupted run from {ckpt}")
    return train(cfg, resume=True).checkpoint


__all__ = [
    "TrainResult",
    "held_out_hard_negatives",
    "load_trainer_state",
    "retrieval_recall",
    "train",
    "train_or_reuse",
]
