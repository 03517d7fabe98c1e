"""Training on tiny data: losses fall, checkpoints resume exactly, the CLI runs end to end."""

from __future__ import annotations

import functools
import json
import operator
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vladva.config import ConfigError, load_config
from vladva.testing import build_tiny_llava, write_tiny_manifest
from vladva.train.batches import BatchOrder, StepCollator, collate_records, load_records
from vladva.train.config import TrainConfig
from vladva.train.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_manifest(tmp_path_factory.mktemp("data"), n_train=16, n_val=8)


def config(base, data, out, *extra) -> TrainConfig:
    return load_config(
        TrainConfig,
        None,
        [
            f"base_model={base}",
            f"data.train={data / 'train.jsonl'}",
            f"data.val={data / 'val.jsonl'}",
            f"output_dir={out}",
            "data.contrastive_batch_size=8",
            "data.ntp_batch_size=4",
            "eval.every=0",
            "eval.at_start=false",
            "checkpoint.every=0",
            "log_every=1",
            "progress=false",
            "num_threads=1",
            *extra,
        ],
    )


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_batch_order_is_deterministic_and_sharded():
    order = BatchOrder(n=10, batch_size=2, seed=3)
    assert order.batches_per_epoch == 5
    epoch0 = [order.batch(i)[1] for i in range(5)]
    assert sorted(functools.reduce(operator.iadd, epoch0, [])) == list(range(10))  # an epoch covers every record once
    assert order.batch(5)[0] == 1 and order.batch(7) == BatchOrder(10, 2, 3).batch(7)
    r0, r1 = BatchOrder(10, 2, 3, rank=0, world=2), BatchOrder(10, 2, 3, rank=1, world=2)
    both = r0.batch(1)[1] + r1.batch(1)[1]
    assert len(set(both)) == 4 and set(both) == set(BatchOrder(10, 4, 3).batch(1)[1])


def test_collator_skips_unreadable_images_and_strict_raises(base, data, tmp_path, caplog):
    from vladva.data.images import ImageLoadError
    from vladva.model.vladva import VladVA

    records = load_records(data / "train.jsonl", strict=True)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    records[1].image = broken
    collator = StepCollator(VladVA.from_pretrained(base).inputs, 2, "first", 0)
    batch = collate_records(collator, records, [0, 1, 2], strict=False)
    assert len(batch) == 2 and batch.captions == [records[0].captions[0], records[2].captions[0]]
    assert batch.image_ids.tolist() == [0, 2] and batch.ntp_rows == [0, 1]
    assert len(batch.skipped) == 1 and "broken.png" in batch.skipped[0] and "broken.png" in caplog.text
    # the tensors cover the readable images only: both in one next-token pass, the two captions
    (chunk,) = batch.image_chunks
    assert chunk.rows == [0, 1] and len(chunk.ntp) == 2 and chunk.image is None
    assert [len(t) for t in batch.text_chunks] == [2]
    with pytest.raises(ImageLoadError, match="broken.png"):
        collate_records(collator, records, [0, 1, 2], strict=True)


def test_caption_length_options_choose_each_terms_caption(base, data):
    """`data.contrastive_captions` / `data.ntp_captions`: the default is the paper's split (short
    captions contrastive, long ones next-token); long, short and both (seeded 50/50) as asked."""
    from vladva.model.vladva import VladVA

    records = load_records(data / "train.jsonl", strict=True)
    builder = VladVA.from_pretrained(base).inputs
    rows = list(range(8))

    def batch(**options):
        return collate_records(StepCollator(builder, 4, "random", 0, **options), records, rows)

    default = batch()
    assert all(c in records[i].captions for c, i in zip(default.captions, rows))
    assert default.ntp_rows == [0, 1, 2, 3] and default.long_captions == 4
    assert batch(contrastive_captions="short", ntp_captions="long").captions == default.captions
    long = batch(contrastive_captions="long")
    assert long.captions == [records[i].long_caption for i in rows] and long.long_captions == 8 + 4
    mixed = batch(contrastive_captions="both")
    kinds = [c == records[i].long_caption for c, i in zip(mixed.captions, rows)]
    assert any(kinds) and not all(kinds) and mixed.long_captions == sum(kinds) + 4
    assert mixed.captions == batch(contrastive_captions="both").captions  # seeded: the same draw again

    def targets(b) -> list[bool]:
        """Per next-token row: its target is the record's long caption (else one of its short ones)."""
        tok = builder.tokenizer

        def ids(text: str) -> list[int]:
            return tok(" " + text.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

        out = []
        for row, i in zip(b.image_chunks[0].ntp.labels, b.ntp_rows):
            got = row[row != -100].tolist()
            out.append(got == ids(records[i].long_caption))
            assert out[-1] or got in [ids(c) for c in records[i].captions]
        return out

    short_ntp = batch(ntp_captions="short")
    assert short_ntp.captions == default.captions and short_ntp.long_captions == 0
    assert not any(targets(short_ntp)) and all(targets(default))
    both_ntp = batch(ntp_captions="both")
    kinds = targets(both_ntp)
    assert both_ntp.long_captions == sum(kinds) and both_ntp.captions == default.captions
    with pytest.raises(ValueError, match="contrastive_captions must be one of short, long, both"):
        StepCollator(builder, 4, contrastive_captions="longest")
    with pytest.raises(ConfigError, match="data.ntp_captions must be long, short or both"):
        load_config(TrainConfig, None, ["data.ntp_captions=medium"])


def test_contrastive_on_long_captions_trains_and_counts_them(base, data, tmp_path):
    result = train(config(base, data, tmp_path / "run", "optim.max_steps=2", "data.contrastive_captions=long"))
    stage = json.loads((result.checkpoint / "compute.json").read_text())["stages"][0]
    assert stage["pairs"] == 16 and stage["long_captions"] == 2 * (8 + 4)  # 8 contrastive + 4 next-token per step


def test_short_run_lowers_both_losses_and_raises_batch_accuracy(base, data, tmp_path):
    cfg = config(
        base,
        data,
        tmp_path / "run",
        "optim.max_steps=30",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "optim.lr_lora=5e-3",
        "optim.lr_soft_prompt=1e-2",
        "optim.lr_temperature=0",
    )
    result = train(cfg)
    rows = [r for r in metrics(tmp_path / "run") if "loss" in r]
    assert len(rows) == 30 and result.steps == 30

    def mean(key, part):
        return float(np.mean([r[key] for r in part]))

    first, last = rows[:5], rows[-5:]
    assert mean("contrastive", last) < mean("contrastive", first) - 0.2
    assert mean("ntp", last) < mean("ntp", first) - 0.1
    assert mean("batch_acc", last) > mean("batch_acc", first)
    # LoRA r16 per Llama layer (hidden 64, MLP 128): 4 x (16*64 + 64*16) + 3 x (16*64 + 128*16) = 17,408;
    # soft prompts: 7 tokens x 64 dims for each tower
    assert result.trainable_params == 2 * 17_408 + 2 * 7 * 64


def test_resume_continues_exactly(base, data, tmp_path):
    extra = (
        "optim.max_steps=6",
        "checkpoint.every=3",
        "checkpoint.keep_last=5",
        "model.lora.dropout=0.1",
        "eval.every=3",
    )
    full = train(config(base, data, tmp_path / "full", *extra))
    # crash simulation: a second run whose last checkpoint is step 3 (step 6 never written)
    train(config(base, data, tmp_path / "cut", *extra))
    ckpts = tmp_path / "cut" / "checkpoints"
    shutil.rmtree(ckpts / "step-000006")
    (ckpts / "latest").write_text("step-000003\n")
    resumed = train(config(base, data, tmp_path / "cut", *extra), resume=True)
    assert resumed.steps == 6
    a, b = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("step_seconds", "eval_seconds")} for r in rows]
    assert strip(a) == strip(b)  # same losses at every step, and no duplicated lines for steps 4-6
    from safetensors.torch import load_file

    wa = load_file(full.checkpoint / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed.checkpoint / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # no half-written checkpoint folders are left behind
    assert not list(ckpts.glob(".tmp-*"))
    # the compute record continues too: same steps, pairs and tokens as the uninterrupted run
    (ca,) = json.loads((full.checkpoint / "compute.json").read_text())["stages"]
    (cb,) = json.loads((resumed.checkpoint / "compute.json").read_text())["stages"]
    assert [ca[k] for k in ("steps", "pairs", "long_captions", "tokens")] == [
        cb[k] for k in ("steps", "pairs", "long_captions", "tokens")
    ]
    assert ca["steps"] == 6 and ca["pairs"] == 6 * 8
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(config(base, data, tmp_path / "cut", *extra))


def test_checkpoint_layout_and_pruning(base, data, tmp_path):
    result = train(
        config(base, data, tmp_path / "run", "optim.max_steps=4", "checkpoint.every=1", "checkpoint.keep_last=2")
    )
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-000003", "step-000004"]
    assert (ckpts / "latest").read_text().strip() == "step-000004" == result.checkpoint.name
    assert sorted(p.name for p in result.checkpoint.iterdir()) == [
        "adapter",
        "compute.json",
        "config.yaml",
        "trainer_state.pt",
        "vladva_config.json",
        "vladva_weights.safetensors",
    ]
    from safetensors.torch import load_file

    w = load_file(result.checkpoint / "vladva_weights.safetensors")
    assert set(w) == {"soft_prompt.image", "soft_prompt.text"}  # the temperature is the trainer's state
    assert w["soft_prompt.image"].shape == (7, 64)
    state = torch.load(result.checkpoint / "trainer_state.pt", weights_only=True)
    assert set(state["objective"]) == {"losses.contrastive.logit_scale"}
    assert state["objective"]["losses.contrastive.logit_scale"].item() == pytest.approx(
        np.log(result.final["logit_scale"]), abs=1e-3
    )


def test_each_checkpoint_records_its_compute(base, data, tmp_path):
    """compute.json in every checkpoint: the steps so far, and pairs = steps x contrastive batch size."""
    result = train(
        config(base, data, tmp_path / "run", "optim.max_steps=3", "checkpoint.every=2", "checkpoint.keep_last=0")
    )
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002", "step-000003"]
    for step in (2, 3):
        record = json.loads((ckpts / f"step-{step:06d}" / "compute.json").read_text())
        (stage,) = record["stages"]
        assert stage["stage"] == "vladva-finetune" and stage["steps"] == step
        assert stage["pairs"] == step * 8 and stage["long_captions"] == step * 4  # 8 pairs, 4 long captions
        assert stage["tokens"] > 0 and stage["seconds"] >= 0 and stage["device"] == "cpu"
    assert result.compute.steps == 3 and result.compute.pairs == 24


def test_bad_samples_are_counted(base, data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "images" / "train" / "000003.png").write_bytes(b"")
    # one batch of 16 = every record, so the empty image is drawn at each of the 2 steps
    train(config(base, copy, tmp_path / "run", "optim.max_steps=2", "data.contrastive_batch_size=16"))
    last = [r for r in metrics(tmp_path / "run") if "loss" in r][-1]
    assert last["skipped"] == 2
    with pytest.raises(ValueError, match="000003.png: image file is empty"):
        train(
            config(
                base,
                copy,
                tmp_path / "strict",
                "optim.max_steps=2",
                "data.strict=true",
                "data.contrastive_batch_size=16",
            )
        )


def test_cli_train_embed_merge_end_to_end(base, data, tmp_path):
    from safetensors.torch import load_file

    from vladva.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    args = [
        "train",
        f"base_model={base}",
        f"data.train={data / 'train.jsonl'}",
        f"data.val={data / 'val.jsonl'}",
        f"output_dir={run}",
        "optim.max_steps=3",
        "data.contrastive_batch_size=8",
        "data.ntp_batch_size=4",
        "eval.every=0",
        "progress=false",
        "num_threads=1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trained 3 steps" in res.output and "held-out R@1" in res.output
    evals = [r for r in metrics(run) if "eval" in r]
    assert [r["step"] for r in evals] == [0, 3] and evals[0]["eval"]["n_images"] == 8
    # the run's compute is printed and recorded; the curves are drawn; `vladva report RUN` redraws them
    ckpt = run / "checkpoints" / "step-000003"
    assert "compute: 3 steps, 24 image-caption pairs, 12 long captions" in res.output
    assert f"CPU-minutes; recorded in {ckpt / 'compute.json'}" in res.output and (ckpt / "compute.json").is_file()
    assert f"training curves: {run / 'training_curves.png'}" in res.output
    (run / "training_curves.png").unlink()
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0 and (run / "training_curves.png").stat().st_size > 10_000, res.output
    from vladva.eval.models import read_train_compute

    assert read_train_compute([run])["cpu_minutes"] > 0  # what `vladva eval -m vladva:BASE:RUN` reports

    res = runner.invoke(
        app,
        [
            "embed",
            "--model",
            str(base),
            "--weights",
            str(run),
            "--images",
            str(data / "images" / "val"),
            "--out",
            str(tmp_path / "img.safetensors"),
        ],
    )
    assert res.exit_code == 0, res.output
    emb = load_file(tmp_path / "img.safetensors")["embeddings"]
    assert emb.shape == (8, 64) and torch.allclose(emb.norm(dim=1), torch.ones(8), atol=1e-5)

    (tmp_path / "texts.txt").write_text("a red circle\na blue square\n")  # row i = line i (blank lines are refused)
    res = runner.invoke(
        app,
        [
            "embed",
            "--model",
            str(base),
            "--weights",
            str(run),
            "--texts",
            str(tmp_path / "texts.txt"),
            "--out",
            str(tmp_path / "txt.npy"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "txt.npy").shape == (2, 64)
    assert (tmp_path / "txt.items.txt").read_text() == "a red circle\na blue square\n"

    res = runner.invoke(app, ["merge", "--model", str(base), "--weights", str(run), "--out", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "embed",
            "--model",
            str(tmp_path / "merged"),
            "--images",
            str(data / "val.jsonl"),
            "--out",
            str(tmp_path / "merged.safetensors"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert torch.allclose(load_file(tmp_path / "merged.safetensors")["embeddings"], emb, atol=1e-5)


def test_cli_errors_are_one_line(base, tmp_path):
    from vladva.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "optim.max_stepz=3"])
    assert res.exit_code == 2 and "unknown config key 'optim.max_stepz'; did you mean 'optim.max_steps'?" in res.output
    res = runner.invoke(app, ["train", f"base_model={base}", "data.train=", f"output_dir={tmp_path}"])
    assert res.exit_code == 2 and "data.train" in res.output
    res = runner.invoke(app, ["embed", "--model", str(base), "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "exactly one of --images or --texts" in res.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "paligemma"}')
    (tmp_path / "t.txt").write_text("a\n")
    res = runner.invoke(
        app,
        [
            "embed",
            "--model",
            str(tmp_path / "other"),
            "--texts",
            str(tmp_path / "t.txt"),
            "--out",
            str(tmp_path / "x.npy"),
        ],
    )
    assert res.exit_code == 2 and "unsupported model_type 'paligemma'" in res.output


def test_cli_score_prompts(base, data, tmp_path):
    from vladva.cli import app

    runner = CliRunner()
    cands = tmp_path / "c.tsv"
    cands.write_text(
        "Summary above image in one word:\tSummary above sentence in one word:\n"
        "what colour is the image ?\twhat colour is the sentence ?\n"
    )
    res = runner.invoke(
        app,
        [
            "score-prompts",
            "--model",
            str(base),
            "--candidates",
            str(cands),
            "--images",
            str(data / "val.jsonl"),
            "--limit",
            "4",
            "--out",
            str(tmp_path / "s.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert len(rows) == 2 and all("mean_R@1" in r and "r1_rank" in r for r in rows)
    assert {r["image_prompt"] for r in rows} == {
        "Summary above image in one word:",
        "what colour is the image ?",
    }
    cands.write_text("no tab here\n")
    res = runner.invoke(
        app, ["score-prompts", "--model", str(base), "--candidates", str(cands), "--images", str(data / "val.jsonl")]
    )
    assert res.exit_code == 2 and "c.tsv:1: expected IMAGE PROMPT<TAB>TEXT PROMPT" in res.output
