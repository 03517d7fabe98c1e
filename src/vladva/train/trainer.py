"""The VladVA training loop on accelerate: contrastive on short captions + next-token on long ones.

One optimizer step, top to bottom (`train`):
  for each of `grad_accum` micro-batches: images + one short caption each, and long captions for
  the first `ntp_batch_size` images -> image/text embeddings -> symmetric InfoNCE, plus the
  next-token loss of the long caption after image + image prompt -> backward;
  then clip, AdamW step, scheduler step; log; evaluate held-out retrieval; checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vladva.config import save_config
from vladva.data.shards import is_shard_spec
from vladva.model.vladva import VladVA
from vladva.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    pause_for_tests,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vladva.train.config import TrainConfig
from vladva.train.data import BatchCollator, BatchOrder, StepBatch, load_records
from vladva.train.distributed import (
    average_gradients,
    gather_with_grad,
    mean_over_processes,
    negatives_per_query,
    token_share,
)
from vladva.train.grad_cache import check_grad_cache_supported, grad_cache_step
from vladva.train.losses import ContrastiveLoss
from vladva.train.shard_batches import ShardBatches

log = logging.getLogger(__name__)


class TrainingModule(nn.Module):
    """The embedder plus the loss's temperature, so one `forward` (DDP-friendly) gives every loss."""

    def __init__(self, vladva: VladVA, contrastive: ContrastiveLoss, ntp_weight: float, hard_negatives: bool = False):
        super().__init__()
        self.vladva = vladva
        self.contrastive = contrastive
        self.ntp_weight = ntp_weight
        # data.hard_negatives > 0: the batch's negative captions are encoded by the text tower and
        # join every image's candidates (image->text). Always passed when on, even empty, so the
        # loss's gather is called the same number of times on every process.
        self.hard_negatives = hard_negatives
        # Several processes: `token_share(n_tokens)` re-weights this process's token-mean NTP so the
        # average over processes is the global token-mean (vladva.train.distributed.token_share).
        self.token_share = None

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        m = self.vladva
        device = m.device
        n = len(batch.images)
        ntp_rows = batch.ntp_rows if (batch.ntp_images and self.ntp_weight > 0) else []
        other = [i for i in range(n) if i not in set(ntp_rows)]
        parts, ntp = [], None
        ntp_batch = m.ntp_inputs(batch.ntp_images, batch.ntp_captions) if ntp_rows else None
        if ntp_rows:  # images with a long caption: one pass gives their embedding and the NTP loss
            emb, ntp = m.embed_image_and_next_token_loss(ntp_batch.to(device))
            parts.append(emb)
        if self.token_share is not None and self.ntp_weight > 0:  # a collective: every process calls it
            share = self.token_share(int((ntp_batch.labels[:, 1:] != -100).sum()) if ntp_batch is not None else 0)
            ntp = ntp * share if ntp is not None else None
        if other:
            parts.append(m.embed_image_inputs(m.image_inputs([batch.images[i] for i in other]).to(device)))
        order = torch.tensor(ntp_rows + other, device=device)
        img = torch.empty(n, parts[0].shape[1], device=device, dtype=parts[0].dtype)
        img = img.index_copy(0, order, torch.cat(parts))
        if self.hard_negatives and batch.negatives:  # one text-tower pass for captions and negatives
            both = m.embed_text_inputs(m.text_inputs(batch.captions + batch.negatives).to(device))
            txt, neg = both[:n], both[n:]
        else:
            txt = m.embed_text_inputs(m.text_inputs(batch.captions).to(device))
            neg = txt[:0] if self.hard_negatives else None
        contrastive = self.contrastive(
            img, txt, image_ids=batch.image_ids, caption_ids=batch.caption_ids, hard_negatives=neg
        )
        out = {"contrastive": contrastive, "loss": contrastive}
        if ntp is not None:
            out["ntp"] = ntp
            out["loss"] = contrastive + self.ntp_weight * ntp
        with torch.no_grad():  # in-batch image->text accuracy (exact pair or an identical caption)
            pos = (batch.image_ids[:, None] == batch.image_ids[None, :]) | (
                batch.caption_ids[:, None] == batch.caption_ids[None, :]
            )
            top = (img @ txt.T).argmax(dim=1).cpu()
            out["batch_acc"] = pos[torch.arange(len(top)), top].float().mean()
            if neg is not None and len(neg):  # share of images whose caption outscores all its own negatives
                rows = torch.tensor(batch.negative_rows, device=device)
                neg_score = (img[rows] * neg).sum(dim=1)
                best = torch.full((n,), float("-inf"), device=device).scatter_reduce(0, rows, neg_score, "amax")
                has = torch.isfinite(best)
                out["hard_neg_acc"] = ((img * txt).sum(dim=1) > best)[has].float().mean().cpu()
        return out


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    trainable_params: int
    seconds: float
    final: dict = field(default_factory=dict)
    evals: list[dict] = field(default_factory=list)


def retrieval_recall(model: VladVA, records, batch_size: int = 64) -> dict[str, float]:
    """Text->image and image->text R@1 (%) over `records` and all their short captions.
    A text->image hit retrieves the caption's own image; image->text: any caption of the image."""
    images = [r.image for r in records]
    texts, owner = [], []
    for i, r in enumerate(records):
        texts.extend(r.captions)
        owner.extend([i] * len(r.captions))
    owner_t = torch.tensor(owner)
    img = model.encode_images(images, batch_size=batch_size)
    txt = model.encode_texts(texts, batch_size=batch_size)
    sim = txt @ img.T  # (texts, images)
    t2i = (sim.argmax(dim=1) == owner_t).float().mean().item()
    i2t = (owner_t[sim.argmax(dim=0)] == torch.arange(len(images))).float().mean().item()
    return {
        "t2i_r1": round(100 * t2i, 2),
        "i2t_r1": round(100 * i2t, 2),
        "n_images": len(images),
        "n_texts": len(texts),
    }


def _lr_lambda(cfg: TrainConfig):
    o = cfg.optim

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / (o.warmup_steps + 1)
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _param_groups(module: TrainingModule, cfg: TrainConfig) -> list[dict]:
    o = cfg.optim
    m = module.vladva
    soft = [p for p in (m.soft_prompts.parameters() if m.soft_prompts is not None else []) if p.requires_grad]
    proj_ids = set()
    if cfg.model.train_projector:
        proj_ids = {id(p) for p in m.adapter.projector(m.model).parameters()}
    proj = [p for p in m.model.parameters() if p.requires_grad and id(p) in proj_ids]
    lora = [p for p in m.model.parameters() if p.requires_grad and id(p) not in proj_ids]
    groups = [
        {"name": "soft_prompt", "params": soft, "lr": o.lr_soft_prompt, "weight_decay": 0.0},
        {"name": "lora", "params": lora, "lr": o.lr_lora, "weight_decay": o.weight_decay},
        {"name": "projector", "params": proj, "lr": o.lr_projector, "weight_decay": o.weight_decay},
    ]
    if module.contrastive.logit_scale.requires_grad:
        groups.append(
            {
                "name": "temperature",
                "params": [module.contrastive.logit_scale],
                "lr": o.lr_temperature,
                "weight_decay": 0.0,
            }
        )
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
    """Appends JSON lines to `RUN/metrics.jsonl`; on resume drops lines past the resumed step."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.is_file():
            keep = [
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= resume_step
            ]
            path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train per `cfg`; `resume=True` continues from `output_dir`'s latest checkpoint exactly."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if not cfg.data.train:
        raise ValueError("data.train: give the training manifest (e.g. data.train=DATA/train.jsonl)")
    base_dir = cfg.base_dir()
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"base_model: {base_dir} is not a Hugging Face model folder (no config.json)")
    run_dir = Path(cfg.output_dir)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ValueError(f"output_dir {run_dir} already holds checkpoints; pass --resume or choose another output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    if cfg.data.hard_negatives > 0 and is_shard_spec(cfg.data.train):
        raise ValueError("data.hard_negatives needs a .jsonl manifest (webdataset shards carry no negative captions)")
    if cfg.data.hard_negatives > 0 and cfg.grad_cache.chunk_size > 0:
        raise ValueError("data.hard_negatives is not supported with grad_cache.chunk_size > 0; set one of them to 0")
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg), cpu=not torch.cuda.is_available())
    _seed_everything(cfg.seed)
    val_records = load_records(cfg.data.val, strict=cfg.data.strict)[: cfg.eval.max_images] if cfg.data.val else []
    shards = None  # webdataset shards stream instead of a manifest's seeded order (docs/distributed.md)
    if is_shard_spec(cfg.data.train):
        saved = load_trainer_state(ckpt).get("data", {}).get("shards") if ckpt is not None else None
        shards = ShardBatches(
            cfg.data.train,
            cfg.data.contrastive_batch_size,
            cfg.data.ntp_batch_size,
            cfg.data.caption_choice,
            cfg.seed,
            accelerator.process_index,
            accelerator.num_processes,
            cfg.data.num_workers,
            saved,
        )
    else:
        records = load_records(cfg.data.train, strict=cfg.data.strict)
        order = BatchOrder(
            len(records),
            cfg.data.contrastive_batch_size,
            cfg.seed,
            accelerator.process_index,
            accelerator.num_processes,
        )
        collate = BatchCollator(
            records,
            cfg.data.ntp_batch_size,
            cfg.data.caption_choice,
            cfg.seed,
            cfg.data.strict,
            cfg.data.hard_negatives,
        )
        if cfg.data.hard_negatives > 0 and not any(r.negative_captions for r in records):
            log.warning(
                "data.hard_negatives=%d but no record of %s has negative_captions: training without hard negatives",
                cfg.data.hard_negatives,
                cfg.data.train,
            )
    vladva = VladVA.from_pretrained(base_dir, config=cfg.model)
    n_trainable = vladva.prepare_for_training()
    n_total = sum(p.numel() for p in vladva.parameters())
    accelerator.print(f"trainable parameters: {n_trainable:,} of {n_total:,} ({100 * n_trainable / n_total:.2f}%)")
    # Global negatives: every process scores its queries against all processes' candidates.
    global_negatives = accelerator.num_processes > 1 and cfg.distributed.global_negatives
    gather = gather_with_grad if global_negatives else None
    module = TrainingModule(
        vladva,
        ContrastiveLoss(cfg.loss.contrastive, gather=gather),
        cfg.loss.ntp_weight,
        hard_negatives=cfg.data.hard_negatives > 0,
    )
    if accelerator.num_processes > 1:
        module.token_share = token_share
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
    optimizer = torch.optim.AdamW(_param_groups(module, cfg), betas=tuple(cfg.optim.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    module, optimizer = accelerator.prepare(module, optimizer)
    inner: TrainingModule = accelerator.unwrap_model(module)

    step = 0
    if ckpt is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_trainer_state(ckpt)
        weights = load_file(ckpt / "vladva_weights.safetensors")
        vladva.load_trained_tensors(weights)
        with torch.no_grad():
            inner.contrastive.logit_scale.copy_(weights["logit_scale"].reshape(()))
        if vladva.peft_model is not None:
            set_peft_model_state_dict(vladva.peft_model, load_file(ckpt / "adapter" / "adapter_model.safetensors"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step = state["step"]
        accelerator.print(f"resumed from {ckpt} at step {step}")

    metrics = MetricsLog(run_dir / "metrics.jsonl", step if ckpt is not None else None, accelerator.is_main_process)
    evals: list[dict] = []

    def evaluate() -> None:
        if not val_records or not accelerator.is_main_process:
            return
        t0 = time.perf_counter()
        result = retrieval_recall(vladva, val_records, cfg.eval.batch_size)
        rec = {"step": step, "eval": result, "eval_seconds": round(time.perf_counter() - t0, 2)}
        evals.append(rec)
        metrics.write(rec)
        accelerator.print(
            f"step {step}: held-out R@1 text->image {result['t2i_r1']:.1f}  image->text {result['i2t_r1']:.1f}"
        )

    def checkpoint() -> Path | None:
        shard_state = shards.state_all_processes() if shards is not None else None  # collective: before the rank check
        if not accelerator.is_main_process:
            return None
        data_state = {"micro_batch": step * cfg.optim.grad_accum}
        data_state.update(
            {"shards": shard_state} if shards is not None else {"batches_per_epoch": order.batches_per_epoch}
        )
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "data": data_state,
        }
        return save_checkpoint(
            run_dir, step, vladva, inner.contrastive.logit_scale, state, cfg, str(base_dir), cfg.checkpoint.keep_last
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
        for micro in range(cfg.optim.grad_accum):
            if shards is not None:
                batch = shards.next_batch()
            else:
                epoch, indices = order.batch(step * cfg.optim.grad_accum + micro)
                batch = collate(epoch, indices)
            skipped_total += len(batch.skipped)
            if len(batch.images) < 2:
                raise ValueError(
                    f"step {step}: fewer than 2 readable images in the batch ({len(batch.skipped)} skipped)"
                )
            if cfg.grad_cache.chunk_size > 0:  # chunked forward/backward outside DDP's reducer
                out = grad_cache_step(
                    inner,
                    batch,
                    cfg.grad_cache.chunk_size,
                    accelerator.backward,
                    1.0 / cfg.optim.grad_accum,
                    accelerator.autocast,
                )
            else:
                with accelerator.autocast():
                    out = module(batch)
                accelerator.backward(out["loss"] / cfg.optim.grad_accum)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.optim.grad_accum
        pause_for_tests(run_dir / "checkpoints", "step", step + 1)  # kill-and-resume tests stop here
        if cfg.grad_cache.chunk_size > 0:
            average_gradients(p for p in module.parameters() if p.requires_grad)
        if accelerator.num_processes > 1:  # log the global batch's losses, not the main process's part
            keys = ["loss", "contrastive", "batch_acc"] + (
                ["ntp"] if cfg.loss.ntp_weight > 0 and cfg.data.ntp_batch_size else []
            )
            sums = mean_over_processes({k: sums.get(k, 0.0) for k in keys})
        grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = {
            "step": step,
            **{k: round(v, 5) for k, v in sums.items()},
            "logit_scale": round(float(inner.contrastive.scale().detach()), 3),
            "grad_norm": round(float(grad_norm), 4),
            "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
            "skipped": skipped_total,
            "negatives": negatives,
            "step_seconds": round(time.perf_counter() - t0, 3),
        }
        if step % cfg.log_every == 0 or step == cfg.optim.max_steps or step == 1:
            metrics.write(last)
        bar.update(1)
        bar.set_postfix(
            {k: f"{last[k]:.3f}" for k in ("loss", "contrastive", "ntp", "batch_acc", "hard_neg_acc") if k in last}
        )
        if cfg.eval.every > 0 and step % cfg.eval.every == 0 and step != cfg.optim.max_steps:
            evaluate()
            module.train()
        if cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0 and step != cfg.optim.max_steps:
            last_ckpt = checkpoint()
    bar.close()
    if step > 0 and (last_ckpt is None or last_ckpt.name != f"step-{step:06d}"):
        evaluate()
        last_ckpt = checkpoint()
    if skipped_total:
        log.warning("skipped %d unreadable samples in total (see the log lines above)", skipped_total)
    module.eval()
    return TrainResult(run_dir, last_ckpt, step, n_trainable, time.perf_counter() - start_time, last, evals)
