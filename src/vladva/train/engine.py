"""The training engine: which accelerate engine runs the step (single process, DDP, FSDP2, DeepSpeed
ZeRO-2/3) and what each one needs from the trainer, in one place.

    make_accelerator      the engine the launch config asks for, on GPUs or on CPU (gloo)
    loading_whole         the base model loads whole on every process; `prepare` shards it
    prepare               accelerate's prepare, plus what our loop must tell each engine
    on_whole_model        a computation outside the step (evaluation); every process joins it
                          when the weights are sharded (`shards_parameters`)
    whole_* / load_*      checkpoint state gathered whole (any engine can resume it) and loaded back

Sharded tensors (FSDP2 DTensors, ZeRO-3 partitions) are made whole by
`vladva.model.weights.full_tensor`, a collective: the trainer calls everything here on every
process, and only the main process writes. docs/distributed.md lists what was run and measured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

from vladva.model.weights import full_tensor


def _launched_with(engine: str) -> bool:
    """True when `accelerate launch` was given a config with this engine ("FSDP", "DEEPSPEED")."""
    return os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true"


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def make_accelerator(mixed_precision: str):
    """The `accelerate.Accelerator` for this launch: GPUs when there are any, else CPU processes (gloo).

    On CPU, accelerate 1.15 runs every multi-process launch as DDP (`MULTI_CPU`), even with an FSDP
    or DeepSpeed config, without a word. Both engines work on CPU over gloo, so: FSDP gets the
    launch config's plugin handed to accelerate (whose `prepare` then shards the model as on GPUs);
    DeepSpeed starts as on a device, with gloo for its process group (DeepSpeed's CPU accelerator)."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

    if torch.cuda.is_available():
        return Accelerator(mixed_precision=mixed_precision)
    if _launched_with("DEEPSPEED"):
        return Accelerator(
            mixed_precision=mixed_precision, cpu=False, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")]
        )
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True)
    if _launched_with("FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()  # read from the launch config, as accelerate does
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        accelerator.state.fsdp_plugin = plugin
        # both shared states: every AcceleratorState() built later re-reads PartialState's type
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    return accelerator


def describe(accelerator) -> str:
    """One line for the log, e.g. `FSDP2, 2 process(es) on cpu`: what actually runs."""
    from accelerate.utils import DistributedType

    if _is_fsdp(accelerator):
        name = f"FSDP{accelerator.state.fsdp_plugin.fsdp_version}"
    elif _is_deepspeed(accelerator):
        name = f"DeepSpeed ZeRO-{accelerator.state.deepspeed_plugin.zero_stage}"
    elif accelerator.distributed_type == DistributedType.NO:
        name = "single process"
    else:
        name = "DDP"
    return f"{name}, {accelerator.num_processes} process(es) on {accelerator.device.type}"


@contextlib.contextmanager
def loading_whole(accelerator):
    """Within the block, `from_pretrained` loads every weight whole on each process; `prepare`
    shards them afterwards. Needed for DeepSpeed ZeRO-3: accelerate registers its config with
    transformers whatever `zero3_init_flag` says, and transformers then partitions weights while
    loading, before VladVA reads the prompt embeddings from them."""
    if not _is_deepspeed(accelerator):
        yield
        return
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def prepare(accelerator, module: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batch: int):
    """`accelerator.prepare(module, optimizer)` for a `vladva.train.step.TrainingModule`.

    DeepSpeed sizes its engine from a DataLoader's batch size, and the training loop's loader is
    not prepared by accelerate, so it is told the per-process micro-batch
    (`data.contrastive_batch_size`). Under FSDP2, `TrainingModule.run` becomes a forward method
    (for `on_whole_model`)."""
    if _is_deepspeed(accelerator):
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch
    module, optimizer = accelerator.prepare(module, optimizer)
    if _is_fsdp(accelerator):
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(module, "run")
    return module, optimizer


def shards_parameters(accelerator) -> bool:
    """True when each process holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3): then any
    forward pass gathers weights collectively, and every process must run it."""
    return _is_fsdp(accelerator) or (_is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3)


def on_whole_model(accelerator, module: torch.nn.Module, fn: Callable[[], object]) -> object:
    """`fn()`, a computation with the model outside the training step (evaluation). When
    `shards_parameters`, every process must call it. Under FSDP2 it runs as a forward of the root
    module (`TrainingModule.run`), so the parameters the root owns (embeddings, soft prompts, LM
    head) are gathered too; the layers gather themselves, and ZeRO-3 gathers on access."""
    return module.run(fn) if _is_fsdp(accelerator) else fn()


# ---- checkpoint state ------------------------------------------------------------------------------


def whole_state(state):
    """`state` (nested dicts / lists of tensors and plain values) with every tensor whole and on
    the CPU (`full_tensor`), so one process can save it and any engine can load it. A collective
    when tensors are sharded (FSDP2: the optimizer's moments)."""
    if isinstance(state, dict):
        return {k: whole_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(whole_state(v) for v in state)
    return full_tensor(state) if torch.is_tensor(state) else state


def whole_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s parameters by name, whole (the keys of its `state_dict`; read from the parameters,
    because a ZeRO-3 module's `state_dict` holds empty shards). A collective when sharded."""
    return {name: full_tensor(p) for name, p in module.named_parameters()}


def whole_optimizer_state(accelerator, optimizer: torch.optim.Optimizer) -> dict | None:
    """The optimizer's `state_dict` made whole (`whole_state`), or None under DeepSpeed: its ZeRO
    optimizer keeps the state partitioned over processes in its own format, so such a checkpoint
    holds complete weights but cannot be resumed."""
    return None if _is_deepspeed(accelerator) else whole_state(optimizer.state_dict())


def load_optimizer_state(accelerator, optimizer: torch.optim.Optimizer, state: dict | None) -> None:
    """`optimizer.load_state_dict(state)` for a `whole_optimizer_state` saved by any engine but
    DeepSpeed. Where a parameter is sharded (FSDP2), its per-parameter tensors (Adam's moments)
    are cut to this process's shard. Moments saved for a parameter of the same size but another
    shape (the temperature, a scalar in checkpoints written before it became `(1,)`) are reshaped."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if state is None or _is_deepspeed(accelerator):
        raise ValueError(
            "--resume is not supported with DeepSpeed: its optimizer state is partitioned over processes and "
            "not in the checkpoint. Resume with DDP or FSDP (the checkpoint's weights are complete), or start over"
        )
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            moments = optimizer.state.get(p, {})
            for key, value in moments.items():
                if key == "step" or not torch.is_tensor(value) or isinstance(value, DTensor):
                    continue
                if value.shape != p.shape and value.numel() == p.numel():
                    value = moments[key] = value.reshape(p.shape)
                if isinstance(p, DTensor) and value.shape == p.shape:
                    # every process read the whole tensor from the file: each keeps its own slice
                    moments[key] = distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None)
