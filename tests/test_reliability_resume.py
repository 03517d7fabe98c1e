"""Kill -9 and resume: `vladva train` killed mid-step or mid-checkpoint-write resumes from the last
complete checkpoint and ends exactly where an uninterrupted run with the same seed ends.

The kill lands deterministically: `VLADVA_TEST_PAUSE_AT=POINT:STEP` (vladva.storage.pause_for_tests)
makes the trainer write `checkpoints/PAUSED-POINT` and sleep at that point; the test then sends
SIGKILL. All runs are separate `vladva train` processes on a tiny random LLaVA (hidden 32, one
layer) and 16 training images, started together so the suite stays fast on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from safetensors.torch import load_file


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


MAX_STEPS, EVERY = 8, 2  # checkpoints at steps 2, 4, 6 and the final 8; held-out eval every 4

# One run killed three times in a row, each `--resume` killed at the next point, then finished.
# data: (pause point, the `latest` checkpoint the kill leaves, which the next `--resume` starts from)
KILL_CASES = [
    Case(
        "mid-checkpoint-write",
        "kill -9 while step 4's checkpoint is half written (adapter saved, trainer state not)",
        "the partial .tmp-step-000004 is never loaded: `--resume` starts from step-000002",
        ("files:4", 2),
    ),
    Case(
        "before-latest-pointer",
        "kill -9 after step 6's folder is renamed into place, before `latest` names it",
        "`latest` is the commit point: `--resume` starts from step-000004",
        ("rename:6", 4),
    ),
    Case(
        "mid-step",
        "kill -9 inside step 7 (gradients computed, optimizer not stepped)",
        "`--resume` starts from step-000006, the last complete checkpoint",
        ("step:7", 6),
    ),
]
RECIPE = """\
base_model: {base}
output_dir: {out}
seed: 3
model:
  lora: {{enabled: true, r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj, down_proj]}}
  soft_prompt: {{enabled: true, extra_tokens: 1}}
data:
  train: {data}/train.jsonl
  val: {data}/val.jsonl
  contrastive_batch_size: 4
  ntp_batch_size: 2
  caption_choice: random
optim: {{max_steps: {max_steps}, warmup_steps: 2, lr_lora: 5.0e-3, lr_soft_prompt: 5.0e-3}}
eval: {{every: 4, at_start: true, max_images: 8, batch_size: 8}}
checkpoint: {{every: {every}, keep_last: 2}}
num_threads: 1
log_every: 1
progress: false
"""


def _vladva() -> list[str]:
    script = Path(sys.executable).parent / "vladva"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from vladva.cli import main; main()"]


def _env(pause: str | None = None) -> dict:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"
    )
    env.pop("VLADVA_TEST_PAUSE_AT", None)
    if pause:
        env["VLADVA_TEST_PAUSE_AT"] = pause
    return env


def _start(recipe: Path, log: Path, *args: str, pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*_vladva(), "train", "--config", str(recipe), *args],
        env=_env(pause),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _comparable(run: Path) -> list[dict]:
    """metrics.jsonl without wall-clock fields."""
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    for r in rows:
        r.pop("step_seconds", None)
        r.pop("eval_seconds", None)
    return rows


def _wait_for_pause(proc: subprocess.Popen, marker: Path, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"trainer exited before {marker.name}:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{marker.name} never reached"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and beside it one run killed at each case's point in turn and resumed."""
    from vladva.testing import build_tiny_llava, write_tiny_manifest

    root = tmp_path_factory.mktemp("resume")
    torch.set_num_threads(1)
    base = build_tiny_llava(root / "base", hidden=32, layers=1)
    data = write_tiny_manifest(root / "data", n_train=16, n_val=8)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(base=base, out=root / "unused", data=data, max_steps=MAX_STEPS, every=EVERY))

    full = _start(recipe, root / "full.log", f"output_dir={root / 'full'}")
    run, ckpts = root / "killed", root / "killed" / "checkpoints"
    state, logs = {}, []
    for i, case in enumerate(KILL_CASES):
        log = root / f"killed-{i}.log"
        proc = _start(recipe, log, f"output_dir={run}", *(["--resume"] if i else []), pause=case.data[0])
        _wait_for_pause(proc, ckpts / f"PAUSED-{case.data[0].split(':')[0]}", log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for marker in ckpts.glob("PAUSED-*"):
            marker.unlink()
        logs.append(log.read_text())
        state[case.id] = {
            "returncode": proc.returncode,
            "latest": (ckpts / "latest").read_text().strip() if (ckpts / "latest").exists() else None,
            "entries": sorted(p.name for p in ckpts.iterdir()),
            "tmp_has_trainer_state": [p.name for p in ckpts.glob(".tmp-*") if (p / "trainer_state.pt").exists()],
        }
    final = _start(recipe, root / "killed-final.log", f"output_dir={run}", "--resume")
    logs.append(_finish(final, root / "killed-final.log"))
    _finish(full, root / "full.log")
    return {"root": root, "recipe": recipe, "full": root / "full", "run": run, "killed": state, "logs": logs}


@pytest.mark.parametrize("i,case", [pytest.param(i, c, id=c.id) for i, c in enumerate(KILL_CASES)])
def test_kill_leaves_only_complete_checkpoints_and_resume_starts_there(runs, i, case):
    pause, resume_step = case.data
    killed = runs["killed"][case.id]
    assert killed["returncode"] == -signal.SIGKILL
    # What the kill left on disk: `latest` names only a complete checkpoint.
    assert killed["latest"] == f"step-{resume_step:06d}"
    if pause.startswith("files"):
        assert ".tmp-step-000004" in killed["entries"] and killed["tmp_has_trainer_state"] == []
    if pause.startswith("rename"):
        assert "step-000006" in killed["entries"]  # complete on disk, but not yet committed by `latest`
    # The next `--resume` started from that last complete checkpoint, never from a partial one.
    started = f"resumed from {runs['run'] / 'checkpoints' / f'step-{resume_step:06d}'} at step {resume_step}"
    assert started in runs["logs"][i + 1], runs["logs"][i + 1][-2000:]
    assert "resumed from" not in runs["logs"][0]


def test_resume_after_three_kills_equals_the_uninterrupted_run(runs):
    """Same losses, accuracies, learning rates, grad norms and held-out recall at every logged step,
    and the same final weights and temperature (to 1e-6) and compute counts, as the uninterrupted run
    with the same seed."""
    run, full = runs["run"], runs["full"]
    got, want = _comparable(run), _comparable(full)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got == want
    final = [r for r in got if "loss" in r][-1]
    assert final["step"] == MAX_STEPS and final["skipped"] == 0
    ck, ref = run / "checkpoints" / f"step-{MAX_STEPS:06d}", full / "checkpoints" / f"step-{MAX_STEPS:06d}"
    for name in ("adapter/adapter_model.safetensors", "vladva_weights.safetensors"):
        a, b = load_file(ck / name), load_file(ref / name)
        assert a.keys() == b.keys() and len(a) > 0
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (name, k, (a[k] - b[k]).abs().max())
    # The learned temperature (the objective's state, in the trainer state) and the compute record too.
    a, b = (torch.load(c / "trainer_state.pt", weights_only=True)["objective"] for c in (ck, ref))
    assert a.keys() == b.keys() == {"losses.contrastive.logit_scale"}
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    (ca,) = json.loads((ck / "compute.json").read_text())["stages"]
    (cb,) = json.loads((ref / "compute.json").read_text())["stages"]
    counts = ("steps", "pairs", "long_captions", "tokens")
    assert [ca[k] for k in counts] == [cb[k] for k in counts] and ca["pairs"] == MAX_STEPS * 4
    # Nothing partial is left behind; `latest` points at the final checkpoint.
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{MAX_STEPS:06d}"
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_training_actually_changed_the_weights(runs):
    """Guards the equality test above against comparing two untrained models: the loss moved and the
    final LoRA weights are far from the step-0 initialisation (lora_B starts at zero)."""
    rows = [r for r in _comparable(runs["full"]) if "loss" in r]
    assert rows[0]["loss"] != rows[-1]["loss"]
    b = [
        v
        for k, v in load_file(
            runs["full"] / "checkpoints" / f"step-{MAX_STEPS:06d}" / "adapter" / "adapter_model.safetensors"
        ).items()
        if "lora_B" in k
    ]
    assert b and max(float(t.abs().max()) for t in b) > 1e-4


def test_resume_refuses_a_corrupt_latest_checkpoint(runs, tmp_path):
    """`--resume` when the checkpoint `latest` names has a truncated safetensors file: exit 2 with
    one error line naming that file (it is never loaded)."""
    run = tmp_path / "run"
    shutil.copytree(runs["full"], run)
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    weights = latest / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    from typer.testing import CliRunner

    from vladva.cli import app

    r = CliRunner().invoke(app, ["train", "--config", str(runs["recipe"]), f"output_dir={run}", "--resume"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert (
        r.stderr.startswith(f"error: {weights}: not a readable safetensors file") and "truncated or corrupt" in r.stderr
    )
