"""`vladva demo --quick` end to end: data, pretraining, fine-tuning, three-model evaluation, report, index."""

import json

from typer.testing import CliRunner

from vladva.cli import app


def test_demo_quick_end_to_end_and_rerun_reuses(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--from-scratch", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    results = json.loads((out / "eval" / "results.json").read_text())
    names = [m["name"] for m in results["models"]]
    assert names == ["zero-shot base", "CLIP-style", "VladVA"]
    for m in results["models"]:
        in_vocabulary = {"retrieval", "sugarcrepe", "sugarcrepe_pp", "winoground", "aro", "zeroshot"}
        paraphrase = {"paraphrase_retrieval", "paraphrase_sugarcrepe", "paraphrase_winoground"}
        assert set(m["metrics"]) == in_vocabulary | paraphrase
        assert set(m["metrics"]["sugarcrepe"]) == {
            "replace_obj",
            "replace_att",
            "replace_rel",
            "swap_obj",
            "swap_att",
            "add_obj",
            "add_att",
        }
        assert all(0.0 <= acc <= 100.0 for acc in m["metrics"]["sugarcrepe"].values())
    table = (out / "eval" / "results.md").read_text()
    assert "VladVA" in table and "CLIP-style" in table
    assert (out / "eval" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "index" / "index.json").is_file()
    # The index is built from the retrieval Karpathy JSON, so the search page can show each image's captions.
    entries = json.loads((out / "index" / "ids.json").read_text())["entries"]
    assert len(entries) == 16 and all(e["captions"] and e["record_id"] is not None for e in entries)
    # The fine-tuned checkpoint records its compute (vladva.train.compute) so the report can show it:
    # 3 steps of 4 pairs each.
    vladva = results["models"][2]["train_compute"]["files"]
    stages = [s for f in vladva.values() for s in f.get("stages", [])]
    assert any(s["stage"] == "vladva-finetune" and s["steps"] == 3 and s["pairs"] == 3 * 4 for s in stages)

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "data:" in second.output and "(reused)" in second.output
    assert "reusing the finished run" in second.output
    assert "index: reusing" in second.output
