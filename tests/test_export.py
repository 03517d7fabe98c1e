"""`vladva export`: hf and sentence-transformers folders reload to the unmerged model's embeddings;
the model card shows exactly the supplied evaluation rows (or says none); bad requests are refused."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vladva.cli import app
from vladva.export import CardInfo, ExportRequest, export_model, render_model_card, select_evaluation
from vladva.model import VladVA
from vladva.testing import build_tiny_llava
from vladva.train.compute import StageCompute, write_compute

torch.set_num_threads(2)

TEXTS = ["a red circle", "a small blue square left of a large green triangle", "two objects"]
MODULE_TYPE = "vladva.export.sentence_transformers_module.VladVAModule"


def _images():
    return [
        Image.new("RGB", (32, 32), (220, 30, 30)),
        Image.new("RGB", (48, 32), (30, 30, 220)),
        Image.new("RGB", (32, 32), (30, 200, 60)),
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LLaVA base and a run folder whose latest checkpoint has LoRA and soft prompts moved
    away from their initial values (as training would), plus the unmerged model's embeddings."""
    root = tmp_path_factory.mktemp("export")
    base = build_tiny_llava(root / "base")
    # the base's own pretraining record: long captions, no contrastive pair
    write_compute(base / "compute.json", [StageCompute("lvlm", steps=10, long_captions=160, tokens=5000)])
    m = VladVA.from_pretrained(base)
    m.prepare_for_training()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    run = root / "run"
    ckpt = m.save_weights(run / "checkpoints" / "step-000003", base_model=str(base))
    (run / "checkpoints" / "latest").write_text("step-000003\n")
    (ckpt / "config.yaml").write_text(
        "seed: 7\noptim:\n  max_steps: 3\n  lr_lora: 0.0005\ndata:\n  contrastive_batch_size: 4\n"
    )
    # the compute record as the trainer writes it into each checkpoint
    stage = StageCompute("vladva-finetune", steps=3, pairs=12, tokens=600, seconds=1.5, extra={"trainable_params": 999})
    write_compute(ckpt / "compute.json", [stage])
    ref = VladVA.from_pretrained(base, run)
    imgs = _images()
    want = {"texts": ref.encode_texts(TEXTS), "images": ref.encode_images(imgs)}
    base_texts = VladVA.from_pretrained(base).encode_texts(TEXTS)
    results = root / "eval" / "results.json"
    results.parent.mkdir()
    results.write_text(
        json.dumps(
            {
                "created": "2026-01-02T03:04:05+00:00",
                "git_commit": "0123456789abcdef",
                "seed": 0,
                "models": [
                    {
                        "name": "tiny-vladva",
                        "spec": f"vladva:{base}:{run}",
                        "metrics": {"retrieval": {"t2i_R@1": 37.5, "i2t_R@1": 62.5}},
                    },
                    {
                        "name": "tiny-clip",
                        "spec": "clip:/nowhere",
                        "metrics": {"retrieval": {"t2i_R@1": 12.5, "i2t_R@1": 25.0}},
                    },
                ],
            }
        )
    )
    return {
        "root": root,
        "base": base,
        "run": run,
        "ckpt": ckpt,
        "want": want,
        "base_texts": base_texts,
        "images": imgs,
        "results": results,
    }


@pytest.fixture(scope="module")
def hf_export(trained):
    return export_model(
        ExportRequest(
            base=trained["base"], weights=trained["run"], out=trained["root"] / "hf", results=trained["results"]
        ),
        log=lambda *_: None,
    )


@pytest.fixture(scope="module")
def st_export(trained):
    out = trained["root"] / "st"
    res = CliRunner().invoke(
        app,
        [
            "export",
            str(out),
            "--model",
            str(trained["base"]),
            "--weights",
            str(trained["run"]),
            "--format",
            "sentence-transformers",
            "--name",
            "tiny st",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote sentence-transformers export" in res.output
    return out


def _close(a, b) -> bool:
    return a.shape == b.shape and torch.allclose(torch.as_tensor(a), b, atol=1e-5, rtol=0)


def test_hf_export_reloads_to_the_same_embeddings(trained, hf_export):
    files = sorted(p.name for p in hf_export.iterdir())
    assert {"README.md", "config.json", "model.safetensors", "vladva_config.json", "vladva_weights.safetensors"} <= set(
        files
    )
    assert "adapter" not in files and not list(hf_export.parent.glob(".hf.partial-*"))
    assert json.loads((hf_export / "vladva_config.json").read_text())["format"] == "vladva-merged"
    m = VladVA.from_pretrained(hf_export)
    assert m.peft_model is None
    assert _close(m.encode_texts(TEXTS), trained["want"]["texts"])
    assert _close(m.encode_images(trained["images"]), trained["want"]["images"])
    # the trained LoRA is in the exported weights: the base alone embeds differently
    assert (trained["base_texts"] - trained["want"]["texts"]).abs().max() > 1e-3


def test_sentence_transformers_export_reloads_to_the_same_embeddings(trained, st_export, tmp_path):
    from sentence_transformers import SentenceTransformer

    modules = json.loads((st_export / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    st = SentenceTransformer(str(st_export), trust_remote_code=True, device="cpu")
    assert st.get_embedding_dimension() == 64 and st.similarity_fn_name == "cosine"
    assert _close(st.encode(TEXTS), trained["want"]["texts"])
    assert _close(st.encode(trained["images"]), trained["want"]["images"])
    trained["images"][1].save(tmp_path / "blue.png")  # an image path is an image, as in sentence-transformers
    assert _close(st.encode([str(tmp_path / "blue.png")]), trained["want"]["images"][1:2])
    # the same folder is a merged VladVA folder
    assert _close(VladVA.from_pretrained(st_export).encode_texts(TEXTS), trained["want"]["texts"])


def test_sentence_transformers_asks_for_the_flag(st_export):
    """sentence-transformers 6 imports a class outside its namespace only with trust_remote_code."""
    from sentence_transformers import SentenceTransformer

    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(st_export), device="cpu")


def test_card_shows_this_models_evaluation_rows_and_training(trained, hf_export):
    card = (hf_export / "README.md").read_text()
    assert "| metric | tiny-vladva |" in card and "| T→I R@1 | 37.5 |" in card and "| I→T R@1 | 62.5 |" in card
    assert "tiny-clip" not in card and "12.5" not in card  # another model's row is left out
    assert "commit 0123456789" in card and "No evaluation was supplied" not in card
    assert "| image prompt | Summary above image in one word: |" in card and "| embedding dimension | 64 |" in card
    assert "| steps | 3 |" in card and "| seed | 7 |" in card
    assert (
        "Compute: 3 steps, 12 image-caption pairs, 0 long captions, 1.5 s wall clock on cpu, 1 threads, "
        "999 trainable parameters." in card
    )
    # the training record: every stage that made the model, the base's before the fine-tune's, and totals
    assert "| stage | folder | steps | pairs | long captions | tokens | device, wall |" in card
    assert "| lvlm | base | 10 | 0 | 160 | 5,000 | cpu, 0.0 s |" in card
    assert "| vladva-finetune | step-000003 | 3 | 12 | 0 | 600 | cpu, 1.5 s |" in card
    assert "| **total** |  |  | **12** | **160** | **5,600** |  |" in card
    assert f'VladVA.from_pretrained("{hf_export}")' in card and "SentenceTransformer" not in card


def test_card_without_results_says_so(st_export):
    card = (st_export / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n") and "# tiny st" in card
    assert "No evaluation was supplied" in card and "| metric |" not in card
    assert f'SentenceTransformer("{st_export}", trust_remote_code=True)' in card and MODULE_TYPE in card


def test_results_rows_by_name_or_refused(trained, tmp_path):
    report = select_evaluation(trained["results"], trained["base"], trained["ckpt"], ("tiny-clip", "tiny-vladva"))
    assert [m["name"] for m in report["models"]] == ["tiny-clip", "tiny-vladva"]
    info = CardInfo(
        name="x",
        location="x",
        export_format="hf",
        model_type="llava",
        embedding_dim=64,
        vladva_config={},
        base_model=None,
        adapter=None,
        evaluation=report,
        results_path="r.json",
    )
    assert "| T→I R@1 | 12.5 | 37.5 |" in render_model_card(info)
    with pytest.raises(ValueError, match="no model named 'nope'; it holds 'tiny-vladva', 'tiny-clip'"):
        select_evaluation(trained["results"], trained["base"], trained["ckpt"], ("nope",))
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"models": [json.loads(trained["results"].read_text())["models"][1]]}))
    with pytest.raises(ValueError, match="no row evaluates this model.*--results-model"):
        select_evaluation(other, trained["base"], trained["ckpt"])


def test_merged_folder_exports_without_adapter(trained, hf_export):
    out = trained["root"] / "again"
    res = CliRunner().invoke(app, ["export", "--out", str(out), "--model", str(hf_export)])
    assert res.exit_code == 0, res.output
    assert _close(VladVA.from_pretrained(out).encode_texts(TEXTS), trained["want"]["texts"])
    assert "none (exported from a merged folder)" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "case", ["non-empty out", "missing weights", "not weights", "plain base", "bad format", "unknown results row"]
)
def test_bad_requests_are_refused_before_writing(trained, tmp_path, case):
    out = tmp_path / "out"
    args = ["export", str(out), "--model", str(trained["base"]), "--weights", str(trained["run"])]
    want = {
        "non-empty out": f"--out {out} exists and is not an empty folder",
        "missing weights": f"--weights {tmp_path / 'nope'}: no such folder",
        "not weights": f"{trained['base']}: not a vladva weights folder",
        "plain base": f"--model {trained['base']}: not a merged VladVA folder",
        "bad format": "--format 'onnx': expected one of hf, sentence-transformers",
        "unknown results row": f"{trained['results']}: no model named 'nope'",
    }[case]
    if case == "non-empty out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "missing weights":
        args[-1] = str(tmp_path / "nope")
    elif case == "not weights":
        args[-1] = str(trained["base"])
    elif case == "plain base":
        args = args[:-2]
    elif case == "bad format":
        args += ["--format", "onnx"]
    else:
        args += ["--results", str(trained["results"]), "--results-model", "nope"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert f"error: {want}" in res.output
    if case == "non-empty out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if case == "non-empty out" else [])


def test_qwen2_vl_sentence_transformers_round_trip(tmp_path):
    """Qwen2-VL's image batches carry extra tensors (image_grid_thw, dynamic resolution)."""
    from sentence_transformers import SentenceTransformer

    from vladva.testing import build_tiny_qwen2_vl

    base = build_tiny_qwen2_vl(tmp_path / "qwen")
    m = VladVA.from_pretrained(base)
    m.prepare_for_training()
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    adapter = m.save_weights(tmp_path / "adapter", base_model=str(base))
    ref = VladVA.from_pretrained(base, adapter)
    out = export_model(
        ExportRequest(base=base, weights=adapter, out=tmp_path / "st", format="sentence-transformers"),
        log=lambda *_: None,
    )
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    assert _close(st.encode(TEXTS), ref.encode_texts(TEXTS))
    assert _close(st.encode(_images()), ref.encode_images(_images()))
