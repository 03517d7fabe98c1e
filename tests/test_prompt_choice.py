"""Prompt choice validated: Spearman's rank correlation on hand-made ranks, and `vladva
score-prompts` on a manifest sets each candidate's signals against its measured zero-shot R@1."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vladva.model.prompt_selection import average_ranks, spearman
from vladva.testing import build_tiny_llava, write_tiny_manifest

torch.set_num_threads(1)


def test_spearman_on_hand_made_values():
    assert average_ranks([10, 30, 20, 20]) == [1.0, 4.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [2, 1, 3]) == pytest.approx(0.5)  # 1 - 6 * 2 / (3 * 8)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_score_prompts_ranks_candidates_against_measured_retrieval(tmp_path):
    from vladva.cli import app

    base = build_tiny_llava(tmp_path / "base")
    data = write_tiny_manifest(tmp_path / "data", n_train=2, n_val=6)
    cands = tmp_path / "c.tsv"
    cands.write_text(
        "Summary above image in one word:\tSummary above sentence in one word:\n"
        "describe the image in one word:\tdescribe the sentence in one word:\n"
        "what colour is the image ?\twhat colour is the sentence ?\n"
    )
    out = tmp_path / "scores.json"
    args = ["score-prompts", "--model", str(base), "--candidates", str(cands), "--images", str(data / "val.jsonl")]
    res = CliRunner().invoke(app, [*args, "--limit", "5", "--rank-by", "mean_R@1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text())
    rows = scores["rows"]
    assert scores["images"] == 5 and scores["texts"] == 10 and len(rows) == 3  # 2 captions per record
    assert [r["mean_R@1"] for r in rows] == sorted((r["mean_R@1"] for r in rows), reverse=True)
    assert sorted(r["r1_rank"] for r in rows) == [1, 2, 3] and rows[0]["r1_rank"] == 1
    assert all(r["mean_R@1"] == pytest.approx((r["t2i_R@1"] + r["i2t_R@1"]) / 2, abs=0.01) for r in rows)
    assert set(scores["correlations"]["entropy"]) == {"t2i_R@1", "i2t_R@1", "mean_R@1"}
    md = out.with_suffix(".md").read_text()
    assert "Spearman rank correlation" in md and "`describe the image in one word:`" in md
    assert "R@1 rank" in res.output
    res = CliRunner().invoke(app, [*args, "--rank-by", "nonsense"])
    assert res.exit_code == 2 and "rank_by must be one of" in res.output
