"""`vladva demo --quick` end to end: data, pretraining, fine-tuning, three-model evaluation, report, index."""

import json

import pytest
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
        assert set(m["metrics"]) == in_vocabulary | paraphrase | {"binding"}
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
    from vladva.serve.index import EmbeddingIndex

    entries = EmbeddingIndex.load(out / "index").entries
    assert len(entries) == 16 and all(e.captions and e.record_id is not None for e in entries)
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


@pytest.mark.timeout(1200)  # three quick demos with 2-thread training: slow on a loaded 2-core machine
def test_demo_reproduces_and_reports_the_seed_spread(tmp_path):
    """`vladva demo --quick --seeds 2`: a second fine-tune with seed 1 and `eval/seeds.md` / `.json`
    with every summary figure as mean ± std; then a fresh run in another process (another
    PYTHONHASHSEED) prints the same figures and logs the same training losses, bit for bit."""
    import os
    import subprocess
    import sys

    first = tmp_path / "first"
    r = CliRunner().invoke(app, ["demo", "--quick", "--seeds", "2", "--no-index", "--out", str(first)])
    assert r.exit_code == 0, r.output
    assert "seed 0, 2 torch threads, deterministic algorithms" in r.output
    spread = json.loads((first / "eval" / "seeds.json").read_text())
    assert spread["seeds"] == [0, 1] and spread["threads"] == 2
    assert set(spread["models"]) == {"zero-shot base", "CLIP-style", "VladVA"}
    vladva = spread["models"]["VladVA"]
    assert "SC swap_att" in vladva and all(len(f["values"]) == 2 for f in vladva.values())
    # Not trained by the demo, evaluated on all items: the same figures for both seeds.
    assert all(f["std"] == 0 for f in spread["models"]["CLIP-style"].values())
    assert "± " in (first / "eval" / "seeds.md").read_text()
    assert (first / "vladva-seed1" / "checkpoints" / "latest").is_file()
    results = json.loads((first / "eval" / "results.json").read_text())
    assert results["runs"][0]["torch_threads"] == 2

    second = tmp_path / "second"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    cmd = [
        sys.executable,
        "-c",
        "from vladva.cli import main; main()",
        "demo",
        "--quick",
        "--no-index",
        "--out",
        str(second),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((second / "eval" / "results.json").read_text())
    assert [m["metrics"] for m in again["models"]] == [m["metrics"] for m in results["models"]]

    def losses(run):
        rows = [json.loads(ln) for ln in (run / "vladva" / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]

    assert losses(second) == losses(first)
