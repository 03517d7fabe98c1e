"""The SmolLM2 base recipe (vladva.toyworld.base.smollm2), its stage loop and the dual encoder, on
SmolLM2's first 2 decoder layers (4 for a teacher) and a tiny shapes data set."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vladva.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _driver():
    spec = importlib.util.spec_from_file_location("train_smollm2_default", ROOT / "scripts/train_smollm2_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _images(shapes_small, n=3):
    from PIL import Image

    return [Image.open(shapes_small / f"images/train/{i:06d}.png").convert("RGB") for i in range(n)]


# --- the stage loop ----------------------------------------------------------------------------

STAGE_SCRIPT = """
import random, sys, torch
from pathlib import Path
from vladva.toyworld.base.stage import StepOutput, run_stage
from vladva.toyworld.base.training import StepBudget

run_dir = Path(sys.argv[1])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

def step(rng: random.Random) -> StepOutput:
    x = torch.tensor([[rng.random() for _ in range(4)] for _ in range(8)])
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(8, 1)  # the torch RNG is part of the state too
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    return StepOutput(loss.item(), examples=8)

compute = run_stage("tiny", model, [(list(model.parameters()), 1e-2)], step, StepBudget(6, 2), torch.device("cpu"),
                    seed=3, weight_decay=0.01, log_every=1, run_dir=run_dir, checkpoint_every=2)
torch.save({"weights": model.state_dict(), "examples": compute.examples, "steps": compute.steps}, run_dir / "final.pt")
"""


def test_a_stage_killed_with_sigkill_resumes_exactly(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    python = sys.executable
    subprocess.run([python, str(script), str(tmp_path / "straight")], env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [python, str(script), str(killed)],
        env=dict(env, VLADVA_TEST_STAGE_PAUSE_AT="tiny:4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "PAUSED").is_file():
        assert proc.poll() is None and time.time() < deadline, "the stage never paused"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.pt").exists() and (killed / "stage_state.pt").is_file()
    subprocess.run([python, str(script), str(killed)], env=env, check=True, capture_output=True)

    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 6 and a["examples"] == b["examples"] == 48
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- stage 0: distillation ---------------------------------------------------------------------


def test_distillation_kl_is_zero_against_itself_and_positive_against_another(smollm2_cache):
    from vladva.assemble.llm import load_llm
    from vladva.toyworld.base.lvlm import collate
    from vladva.toyworld.base.smollm2.heal import chat_tokenizer, distillation_kl, user_turns

    two, tok = load_llm("smollm2", 2)
    four, _ = load_llm("smollm2", 4)
    tok = chat_tokenizer(tok)
    texts = user_turns(tok, ["What is the capital of France?", "Describe a red apple."])
    exs = [{"ids": ids, "labels": ids, "image": None} for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    batch = collate(exs, tok.pad_token_id, None, torch.device("cpu"))
    with torch.no_grad():
        assert float(distillation_kl(two, two, batch)) == pytest.approx(0.0, abs=1e-5)
        assert float(distillation_kl(two, four, batch)) > 0.1


# --- the recipe end to end ---------------------------------------------------------------------


def test_quick_recipe_runs_every_stage_then_ships_a_base_that_rebuilds_identically(
    smollm2_cache, shapes_small, tmp_path, monkeypatch, capsys
):
    from transformers import AutoModelForImageTextToText

    import vladva.model.kinds  # noqa: F401 (registers dual: when the installed metadata predates it)
    import vladva.pretrained as pretrained
    from vladva.model.dual_encoder import DualEncoder
    from vladva.model.vladva import VladVA
    from vladva.model_kinds import load_embedder

    main = _driver()
    out, dest = tmp_path / "run", tmp_path / "shipped"
    args = ["run", "--data", str(shapes_small), "--out", str(out), "--quick", "layers=2", "heal.teacher_layers=4"]
    assert main(args) == 0
    for stage in ("heal", "align", "instruct"):
        (record,) = json.loads((out / stage / "compute.json").read_text())["stages"]
        assert record["steps"] == 2 and record["tokens"] > 0 and record["threads"] == 1, stage
        assert (out / stage / "metrics.jsonl").is_file() and not (out / stage / "stage_state.pt").exists()
    heal = json.loads((out / "heal" / "report.json").read_text())
    for when in ("before", "after"):
        assert set(heal[when]) == {"caption_ce", "teacher_caption_ce", "distill_kl"}
    assert heal["plain_language"][0]["prompt"] and "truncated_after" in heal["plain_language"][0]
    base_report = json.loads((out / "base-lvlm" / "report.json").read_text())
    for key in ("caption_ce", "caption_token_accuracy", "instruction_accuracy", "summary_prompt_zero_shot"):
        assert key in base_report, key
    assert base_report["generated_examples"][0]["generated_short"] is not None and base_report["plain_language"]
    report = json.loads((out / "smollm2_report.json").read_text())
    assert report["vladva"]["compute"]["pairs"] == report["dual"]["compute"]["pairs"] == 8  # same pairs
    assert report["vladva"]["compute"]["long_captions"] == 2 and report["dual"]["compute"]["long_captions"] == 0

    capsys.readouterr()
    assert main(args) == 0  # everything finished: every stage is reused
    log = capsys.readouterr().out
    assert "heal: finished earlier" in log and "reusing the finished run" in log

    assert main(["ship", "--out", str(out), "--dest", str(dest)]) == 0
    files = {p.relative_to(dest).as_posix(): p.stat().st_size for p in dest.rglob("*") if p.is_file()}
    assert {
        "manifest.json",
        "base_parts.safetensors",
        "vladva/vladva_config.json",
        "dual/adapter/adapter_config.json",
    } <= set(files)
    assert sum(files.values()) < 50e6
    assert json.loads((dest / "vladva" / "vladva_config.json").read_text())["base_model"] == "smollm2"

    monkeypatch.setattr(pretrained, "smollm2_parts_dir", lambda: dest)
    built = pretrained.resolve_base("smollm2")
    ids = torch.tensor([[1, 520, 2382, 7842, 2]])
    with torch.no_grad():
        a = AutoModelForImageTextToText.from_pretrained(out / "base-lvlm")(input_ids=ids).logits
        b = AutoModelForImageTextToText.from_pretrained(built)(input_ids=ids).logits
    assert torch.equal(a, b)
    images, texts = _images(shapes_small), ["a red circle", "two blue squares"]
    ours, theirs = (
        VladVA.from_pretrained("smollm2", dest / "vladva"),
        VladVA.from_pretrained(out / "base-lvlm", out / "vladva"),
    )
    assert torch.equal(ours.encode_images(images), theirs.encode_images(images))
    assert torch.equal(ours.encode_texts(texts), theirs.encode_texts(texts))
    dual = load_embedder(f"dual:{dest / 'dual'}")
    assert torch.equal(
        dual.encode_images(images), DualEncoder.from_pretrained(out / "base-lvlm", out / "dual").encode_images(images)
    )


# --- the dual encoder --------------------------------------------------------------------------


def test_dual_encoder_trains_through_the_trainer_and_round_trips(smollm2_llava, shapes_small, tmp_path):
    import vladva.model.kinds  # noqa: F401 (registers dual:)
    from vladva.config import load_config
    from vladva.model.dual_encoder import DualEncoder
    from vladva.model.vladva import VladVA
    from vladva.model_kinds import load_embedder
    from vladva.toyworld.base.smollm2.recipe import CONFIG_DIR
    from vladva.train.config import TrainConfig
    from vladva.train.trainer import train

    run = tmp_path / "dual"
    cfg = load_config(
        TrainConfig,
        CONFIG_DIR / "smollm2_dual.yaml",
        [
            f"base_model={smollm2_llava}",
            f"output_dir={run}",
            f"data.train={shapes_small / 'train.jsonl'}",
            "data.val=null",
            "data.contrastive_batch_size=4",
            "optim.max_steps=1",
            "optim.warmup_steps=0",
            "eval.at_start=false",
            "eval.every=0",
            "progress=false",
            "num_threads=1",
        ],
    )
    result = train(cfg)
    assert result.steps == 1 and result.compute.stage == "dual-encoder" and result.compute.pairs == 4
    assert result.compute.long_captions == 0 and result.final["contrastive"] > 0

    fresh = DualEncoder.from_pretrained(smollm2_llava, config=cfg.model)
    trained = DualEncoder.from_pretrained(smollm2_llava, run)
    assert not torch.equal(fresh.image_head.weight, trained.image_head.weight)
    images, texts = _images(shapes_small), ["a red circle", "two blue squares", "a cross"]
    e_img, e_txt = trained.encode_images(images), trained.encode_texts(texts)
    assert e_img.shape == e_txt.shape == (3, 576) and torch.allclose(e_img.norm(dim=1), torch.ones(3))
    by_spec = load_embedder(f"dual:{run}")  # the base is the one the run recorded
    assert torch.equal(by_spec.encode_images(images), e_img) and torch.equal(by_spec.encode_texts(texts), e_txt)

    # save / load round trip of every trained part (LoRA, head, vision tower)
    trained.prepare_for_training()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    trained.eval()
    e_img, e_txt = trained.encode_images(images), trained.encode_texts(texts)
    trained.save_weights(tmp_path / "w", base_model=str(smollm2_llava))
    back = DualEncoder.from_pretrained(smollm2_llava, tmp_path / "w")
    assert torch.equal(back.encode_images(images), e_img) and torch.equal(back.encode_texts(texts), e_txt)
    with pytest.raises(ValueError, match="dual-encoder"):
        VladVA.from_pretrained(smollm2_llava, run)

    res = CliRunner().invoke(
        app, ["eval", "-m", f"dual:{run}", "--data", str(shapes_small), "-s", "retrieval", "-o", str(tmp_path / "ev")]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "retrieval" in json.dumps(results)
    # the binding diagnostic probes the text tower's LM layers; the image side has only its embedding
    stages = trained.hidden_stages(images=images)
    assert list(stages) == ["embedding"] and torch.equal(stages["embedding"], trained.encode_images(images))
    assert {"lm0", "embedding"} <= set(trained.hidden_stages(texts=texts))
