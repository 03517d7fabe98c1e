"""Multi-process training on CPU (gloo): global negatives with gradient through the gather.

Two processes holding halves of a batch must produce the loss and parameter gradients of one
process holding the whole batch (DDP step and GradCache step), and `vladva train` under
`accelerate launch --num_processes 2` must log the single-process run's loss and gradient norm,
with DDP, FSDP2 and (when installed) DeepSpeed ZeRO-2 / ZeRO-3, and save its checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vladva.train.distributed import gather_with_grad, negatives_per_query, rank_and_world

REPO = Path(__file__).resolve().parent.parent

# Shared by the spawned workers and the in-process reference, so both build exactly the same thing.
WORKER = textwrap.dedent('''
    import json, sys
    import torch

    def build(base, data):
        from vladva.model.vladva import VladVA, VladVAConfig
        from vladva.train.batches import ManifestSamples, load_records
        from vladva.train.config import LossConfig
        from vladva.train.step import StepObjective, TrainingModule
        from vladva.train.distributed import gather_with_grad

        torch.manual_seed(0)
        vladva = VladVA.from_pretrained(base, config=VladVAConfig())
        vladva.prepare_for_training()
        with torch.no_grad():  # LoRA B starts at zero: make it non-zero so every LoRA matrix gets a gradient
            for n, p in vladva.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        module = TrainingModule(vladva, StepObjective(LossConfig(), gather=gather_with_grad)).train()
        records = load_records(data + "/train.jsonl", strict=True)
        samples = [ManifestSamples(records, strict=True)[(0, i)] for i in range(8)]
        for i, s in enumerate(samples):
            # long captions of different lengths on rows 0, 1, 3, 4: the processes hold unequal token counts
            s.long_caption = records[i].long_caption + " ." * i if i in (0, 1, 3, 4) else None
        return module, samples

    def batch(module, samples, rows, chunk_size=0):
        """The `StepBatch` of `samples[rows]`: every long caption trained, split in chunks for GradCache."""
        from vladva.train.batches import StepCollator
        collator = StepCollator(module.vladva.inputs, 8, "first", 0, chunk_size=chunk_size)
        return collator([samples[i] for i in rows])

    ROWS = {0: [0, 1, 2], 1: [3, 4, 5, 6, 7]}  # uneven halves: padding in the gather

    def step(module, samples, rows, mode, ddp=False):
        from vladva.train.step import grad_cache_step
        from vladva.train.distributed import average_gradients, is_distributed, token_share
        if is_distributed():
            module.objective.token_share = token_share
        if mode == "grad_cache":
            out = grad_cache_step(module, batch(module, samples, rows, chunk_size=2), lambda loss: loss.backward())
            average_gradients(p for p in module.parameters() if p.requires_grad)
        else:
            runner = torch.nn.parallel.DistributedDataParallel(module) if ddp else module
            out = runner(batch(module, samples, rows))
            out["loss"].backward()
        grads = {n: p.grad.tolist() for n, p in module.named_parameters() if p.requires_grad}
        return {"contrastive": float(out["contrastive"].detach()), "ntp": float(out["ntp"].detach()), "grads": grads}

    if __name__ == "__main__":
        import torch.distributed as dist
        torch.set_num_threads(1)
        base, data, out_path, mode = sys.argv[1:5]
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        module, samples = build(base, data)
        result = step(module, samples, ROWS[rank], mode, ddp=True)
        gathered = [None, None]
        dist.all_gather_object(gathered, result)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(gathered, f)
        dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vladva.testing import build_tiny_llava, write_tiny_manifest

    root = tmp_path_factory.mktemp("dist")
    base = build_tiny_llava(root / "llava", seed=0)
    data = write_tiny_manifest(root / "data", n_train=16, n_val=4, seed=0)
    script = root / "worker.py"
    script.write_text(WORKER)
    spec = importlib.util.spec_from_file_location("dist_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return base, data, script, worker


def _env() -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO / "src"),
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(script: Path, *args: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]


def test_single_process_gather_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    assert rank_and_world() == (0, 1)
    assert negatives_per_query(8) == 7


def test_metrics_a_process_lacks_are_averaged_over_the_processes_that_have_them(tmp_path):
    """Per-kind hard-negative accuracy: a process whose batch drew no negative of a kind has no
    value for it; the logged value is the mean over the processes that do."""
    script = tmp_path / "metrics.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch.distributed as dist
            from vladva.train.distributed import mean_over_processes_where_present
            dist.init_process_group("gloo")
            rank = dist.get_rank()
            mine = {"hard_neg_acc": rank * 0.5, "hard_neg_acc/swap_att": 1.0}
            mine |= {"hard_neg_acc/replace_rel": 0.25} if rank == 1 else {"hard_neg_acc/swap_obj": 0.0}
            got = mean_over_processes_where_present(mine)
            if rank == 0:
                open(sys.argv[1], "w").write(json.dumps(got))
            dist.destroy_process_group()
            """
        )
    )
    _run_two(script, str(tmp_path / "out.json"))
    got = json.loads((tmp_path / "out.json").read_text())
    assert got == {
        "hard_neg_acc": 0.25,  # both processes: (0 + 0.5) / 2
        "hard_neg_acc/replace_rel": 0.25,  # rank 1 alone
        "hard_neg_acc/swap_att": 1.0,
        "hard_neg_acc/swap_obj": 0.0,  # rank 0 alone
    }


@pytest.mark.parametrize("mode", ["ddp", "grad_cache"])
def test_two_processes_match_one_process_on_the_global_batch(setup, tmp_path, mode):
    base, data, script, worker = setup
    out = tmp_path / "result.json"
    _run_two(script, str(base), str(data), str(out), mode)
    ranks = json.loads(out.read_text())

    module, samples = worker.build(str(base), str(data))
    ref = worker.step(module, samples, list(range(8)), "plain")  # one process, all 8 pairs, all 4 long captions

    for r in ranks:  # each process computes the global contrastive loss over all 8 pairs
        assert r["contrastive"] == pytest.approx(ref["contrastive"], rel=1e-5)
    # each process's NTP is re-weighted by its share of the caption tokens: their mean is the global token-mean
    assert (ranks[0]["ntp"] + ranks[1]["ntp"]) / 2 == pytest.approx(ref["ntp"], rel=1e-5)
    assert len(ref["grads"]) > 10  # soft prompts, every LoRA A and B, the temperature
    for name, want in ref["grads"].items():
        want = torch.tensor(want)
        for r in ranks:  # after averaging, both processes hold the single-process gradient
            torch.testing.assert_close(
                torch.tensor(r["grads"][name]),
                want,
                rtol=2e-4,
                atol=1e-6,
                msg=lambda m, name=name: f"{mode} {name}: {m}",
            )
    assert abs(ref["grads"]["objective.losses.contrastive.logit_scale"][0]) > 1e-4


def test_local_negatives_alone_give_a_different_gradient(setup):
    """Control: without the gather, the halves' losses are not the global loss."""
    base, data, _script, worker = setup
    module, samples = worker.build(str(base), str(data))
    ref = worker.step(module, samples, list(range(8)), "plain")
    local_module, _ = worker.build(str(base), str(data))
    local = worker.step(local_module, samples, worker.ROWS[0], "plain")
    assert local["contrastive"] != pytest.approx(ref["contrastive"], rel=1e-3)


def _train_cmd(prefix: list[str], base: Path, data: str, out: Path, batch: int, *extra: str) -> list[str]:
    vladva = str(Path(sys.executable).parent / "vladva")
    return [
        *prefix,
        vladva,
        "train",
        f"base_model={base}",
        f"data.train={data}",
        "data.val=null",
        f"output_dir={out}",
        f"data.contrastive_batch_size={batch}",
        f"data.ntp_batch_size={batch}",
        "data.caption_choice=first",
        "optim.max_steps=2",
        "optim.warmup_steps=0",
        "eval.at_start=false",
        "eval.every=0",
        "checkpoint.every=1",
        "progress=false",
        "num_threads=1",
        "log_every=1",
        *extra,
    ]


def _launch(config: Path, *extra: str) -> list[str]:
    """`accelerate launch` on 2 CPU processes (gloo). No --cpu: it forces accelerate's single-process launcher."""
    return [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
        *extra,
    ]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _metrics(run: Path) -> list[dict]:
    """The training steps' lines of `metrics.jsonl` (not the evaluations')."""
    return [r for r in _records(run) if "loss" in r]


def _evals(run: Path) -> list[dict]:
    return [r for r in _records(run) if "eval" in r]


# Evaluation inside the run too: under a sharding engine every process must join its forward passes.
WITH_EVAL = ("data.val={val}", "eval.at_start=true", "eval.every=1")


@pytest.fixture(scope="module")
def one_process_run(setup, tmp_path_factory) -> Path:
    """`vladva train` in one process with 8 pairs per step, evaluated on the 4 held-out images: the
    reference for every 2-process run (2 x 4 pairs)."""
    base, data, _, _ = setup
    out = tmp_path_factory.mktemp("one") / "run"
    extra = [e.format(val=data / "val.jsonl") for e in WITH_EVAL]
    _run(_train_cmd([], base, str(data / "train.jsonl"), out, 8, *extra))
    return out


def _assert_same_training(one: Path, got: Path, name: str) -> None:
    """The single-process run's losses, gradient norm and temperature at every logged step."""
    want, have = _metrics(one), _metrics(got)
    assert [m["step"] for m in have] == [m["step"] for m in want] == [1, 2]
    for a, b in zip(want, have):
        for key in ("contrastive", "ntp", "loss", "grad_norm", "logit_scale"):
            assert b[key] == pytest.approx(a[key], rel=2e-4, abs=1e-4), (name, a["step"], key)
        assert b["negatives"] == a["negatives"] == 7


def _assert_same_checkpoint(base: Path, data: Path, one: Path, got: Path) -> None:
    """Both runs' final checkpoints, loaded by `VladVA.from_pretrained`, embed alike: a sharded run
    saved whole tensors (a shard would not load, or embed differently)."""
    from PIL import Image

    from vladva.data.manifest import read_manifest
    from vladva.model import VladVA

    records, _ = read_manifest(data / "val.jsonl", strict=True)
    images = [Image.open(r.image).convert("RGB") for r in records]
    texts = [c for r in records for c in r.captions]
    ckpt = "checkpoints/step-000002"
    a, b = (VladVA.from_pretrained(base, run / ckpt) for run in (one, got))
    for x, y in ((a.encode_images(images), b.encode_images(images)), (a.encode_texts(texts), b.encode_texts(texts))):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-4)
    base_model = VladVA.from_pretrained(base)  # control: training moved the embeddings by more than that
    assert (base_model.encode_images(images) - a.encode_images(images)).abs().max() > 1e-3


@pytest.mark.slow
def test_vladva_train_under_accelerate_launch_matches_one_process(setup, one_process_run, tmp_path):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2` (gloo on CPU),
    2 x 4 pairs per step, logs the losses and gradient norm of one process with 8 pairs, for two
    optimizer steps; GradCache under 2 processes too."""
    base, data, _, _ = setup
    config = REPO / "configs/accelerate/ddp.yaml"
    train = str(data / "train.jsonl")
    logs = {
        "two": _run(_train_cmd(_launch(config), base, train, tmp_path / "two", 4)),
        "two_gc": _run(_train_cmd(_launch(config), base, train, tmp_path / "two_gc", 4, "grad_cache.chunk_size=3")),
    }
    assert "engine: DDP, 2 process(es) on cpu" in logs["two"]
    assert "2 process(es) x 4 pairs; each query is scored against 8 candidates (7 negatives, global)" in logs["two"]
    for name in logs:
        _assert_same_training(one_process_run, tmp_path / name, name)


@pytest.mark.slow
def test_vladva_train_under_fsdp_matches_one_process(setup, one_process_run, tmp_path):
    """The shipped `configs/accelerate/fsdp.yaml` (FSDP2, one shard unit per decoder / vision layer,
    the rest in the root unit) on 2 CPU processes: the single-process run's losses, gradient norm,
    temperature and held-out recall; a checkpoint of whole tensors; and `--resume` from step 1
    (optimizer moments re-sharded) ends at the same step-2 checkpoint."""
    from vladva.train.checkpoint import write_latest

    base, data, _, _ = setup
    config = REPO / "configs/accelerate/fsdp.yaml"
    extra = [e.format(val=data / "val.jsonl") for e in WITH_EVAL]
    run = tmp_path / "fsdp"
    log = _run(_train_cmd(_launch(config), base, str(data / "train.jsonl"), run, 4, *extra))
    # accelerate alone would have run DDP here (it applies FSDP only on GPUs); the log says what ran
    assert "engine: FSDP2, 2 process(es) on cpu" in log
    _assert_same_training(one_process_run, run, "fsdp")
    assert [e["eval"] for e in _evals(run)] == [e["eval"] for e in _evals(one_process_run)]
    assert len(_evals(run)) == 3  # at start, after step 1, at the end
    _assert_same_checkpoint(base, data, one_process_run, run)

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints/step-000002")
    write_latest(resumed / "checkpoints", "step-000001")
    log = _run(_train_cmd(_launch(config), base, str(data / "train.jsonl"), resumed, 4, "--resume"))
    assert "resumed from" in log
    _assert_same_training(one_process_run, resumed, "fsdp resumed")
    _assert_same_checkpoint(base, data, one_process_run, resumed)


DEEPSPEED_ZERO3_ALL_SHARDED = {  # ZeRO-3 keeps parameters under 1e5 elements whole by default: all of the tiny model's
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": 1,
    "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed (docs/distributed.md)"
)
@pytest.mark.parametrize("stage", [2, 3])
def test_vladva_train_under_deepspeed_matches_one_process(setup, one_process_run, tmp_path, stage):
    """DeepSpeed on 2 CPU processes (its CPU accelerator, gloo): ZeRO-2 with the shipped config, ZeRO-3
    with every parameter partitioned. The single-process run's losses, gradient norm, temperature
    and held-out recall, and a checkpoint of whole tensors."""
    base, data, _, _ = setup
    config = REPO / "configs/accelerate/deepspeed_zero2.yaml"
    if stage == 3:
        (tmp_path / "zero3.json").write_text(json.dumps(DEEPSPEED_ZERO3_ALL_SHARDED))
        config = tmp_path / "zero3.yaml"
        config.write_text(
            "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\nnum_machines: 1\nmachine_rank: 0\n"
            "num_processes: 2\nrdzv_backend: static\nsame_network: true\nuse_cpu: false\n"
            f"deepspeed_config:\n  deepspeed_config_file: {tmp_path / 'zero3.json'}\n  zero3_init_flag: false\n"
        )
    extra = [e.format(val=data / "val.jsonl") for e in WITH_EVAL]
    run = tmp_path / "ds"
    log = _run(_train_cmd(_launch(config), base, str(data / "train.jsonl"), run, 4, *extra))
    assert f"engine: DeepSpeed ZeRO-{stage}, 2 process(es) on cpu" in log
    _assert_same_training(one_process_run, run, f"zero{stage}")
    assert [e["eval"] for e in _evals(run)] == [e["eval"] for e in _evals(one_process_run)]
    _assert_same_checkpoint(base, data, one_process_run, run)


def test_optimizer_state_loads_across_engines_and_versions():
    """`load_optimizer_state`: a checkpoint whose temperature moments are scalars (written before the
    temperature became `(1,)`, which FSDP2 requires) still resumes; DeepSpeed's partitioned state is
    refused with a message."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from vladva.train.engine import load_optimizer_state, whole_optimizer_state
    from vladva.train.losses import ContrastiveLoss

    loss = ContrastiveLoss()
    opt = torch.optim.AdamW(loss.parameters(), lr=0.1)
    loss.logit_scale.grad = torch.ones(1)
    opt.step()
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    state = whole_optimizer_state(ddp, opt)
    state["state"][0] = {k: v.reshape(()) for k, v in state["state"][0].items()}  # the old layout
    loss.load_state_dict({"logit_scale": loss.logit_scale.detach().reshape(())})  # old objective state too
    fresh = torch.optim.AdamW(loss.parameters(), lr=0.1)
    load_optimizer_state(ddp, fresh, state)
    assert fresh.state[loss.logit_scale]["exp_avg"].shape == (1,)
    fresh.step()  # Adam updates in place: a scalar moment would fail against the (1,) gradient
    deepspeed = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    assert whole_optimizer_state(deepspeed, opt) is None
    with pytest.raises(ValueError, match="--resume is not supported with DeepSpeed"):
        load_optimizer_state(deepspeed, fresh, None)


@pytest.mark.slow
def test_two_processes_on_shards_resume_exactly(setup, tmp_path):
    """2 processes stream webdataset shards; stopping after step 2 and resuming gives the
    uninterrupted run's losses at steps 3-4 (the checkpoint holds both processes' shard positions)."""
    from vladva.data.shards import write_shards

    base, data, _, _ = setup
    write_shards(data / "train.jsonl", tmp_path / "shards", shard_size=3)  # 6 shards for 2 processes
    config = REPO / "configs/accelerate/ddp.yaml"

    def run(out: Path, steps: int, *extra: str) -> None:
        cmd = _train_cmd(_launch(config), base, str(tmp_path / "shards"), out, 3, "optim.schedule=constant", *extra)
        _run([c.replace("optim.max_steps=2", f"optim.max_steps={steps}") for c in cmd])

    run(tmp_path / "whole", 4)
    run(tmp_path / "split", 2)
    state = torch.load(tmp_path / "split/checkpoints/step-000002/trainer_state.pt", weights_only=False)
    assert sorted(state["data"]["shards"]["positions"]) == ["0", "1"]  # one split per process
    run(tmp_path / "split", 4, "--resume")
    whole, split = _metrics(tmp_path / "whole"), _metrics(tmp_path / "split")
    assert [m["step"] for m in split] == [1, 2, 3, 4]
    for a, b in zip(whole, split):
        for key in ("contrastive", "ntp", "loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
