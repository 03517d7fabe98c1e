"""`vladva ablate`: the grid file and its plan, statistics a person can check, the smoke grid end to
end on a tiny random LLaVA (train, evaluate, generation, tables, plots, reuse on a rerun), and
`vladva report` on the result."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vladva.ablation.grid import load_grid, plan_grid, unique_runs
from vladva.cli import app
from vladva.config import ConfigError
from vladva.eval.report import ablation_stats, derived_metrics, difference, read_ablations

CONFIGS = Path(__file__).resolve().parent.parent / "src" / "vladva" / "configs"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random LLaVA and quick shapes data (train/val manifests and every benchmark)."""
    from vladva.demo import QUICK_DATA
    from vladva.testing import build_tiny_llava
    from vladva.toyworld.shapes import ShapesDataConfig, generate_shapes_dataset

    root = tmp_path_factory.mktemp("ablation")
    base = build_tiny_llava(root / "base")
    generate_shapes_dataset(root / "data", ShapesDataConfig(seed=0, **QUICK_DATA), progress=False)
    return base, root / "data"


def test_shipped_grid_plans_every_block_with_three_seeds_and_shares_equal_cells(tmp_path):
    grid = load_grid(CONFIGS / "ablations.yaml")
    assert [b.name for b in grid.blocks] == [
        "table4",
        "losses",
        "captions",
        "capacity",
        "temperature",
        "hard-negatives",
        "pooling",
    ]
    table4 = grid.blocks[0]
    assert [c.name for c in table4.cells] == ["zero-shot", "soft-prompt", "lora", "both", "both-ntp"]
    assert table4.generation and table4.cells[0].zero_shot and len(grid.seeds) >= 3
    plan = {p.cell.name: p for p in plan_grid(grid, tmp_path)}
    # the same recipe under another name in another block trains once
    assert plan["contrastive-only"].runs_of == "both" and plan["contrastive-only"].runs is plan["both"].runs
    assert plan["ntp-1"].runs_of == plan["paper-split"].runs_of == "both-ntp"
    assert plan["both-ntp"].generation and plan["ntp-1"].generation  # its runs are in a generation block
    assert len(plan["zero-shot"].runs) == 1 and plan["zero-shot"].runs[0].seed is None
    cfg = plan["soft-prompt"].runs[1].config
    assert not cfg.model.lora.enabled and cfg.loss.ntp_weight == 0 and cfg.seed == grid.seeds[1]
    assert cfg.output_dir == str(tmp_path / "runs" / "soft-prompt" / f"seed-{grid.seeds[1]}")
    assert cfg.num_threads == 1 and cfg.model.pooling == "last" and cfg.optim.max_steps == 100
    assert plan["contrastive-long"].runs[0].config.data.contrastive_captions == "long"
    assert plan["ntp-4"].runs[0].config.loss.ntp_weight == 4
    assert len(unique_runs(list(plan.values()))) == 1 + 18 * 3


def test_grid_errors_name_the_problem(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "g.yaml"
        path.write_text(text)
        return path

    cells = "blocks: [{name: a, cells: [{name: x}, {name: y, overrides: [optim.max_stepz=3]}]}]\n"
    with pytest.raises(ConfigError, match="at least 3 different seeds"):
        load_grid(write("seeds: [0, 1]\n" + cells))
    with pytest.raises(ConfigError, match="unknown config key 'blocks\\[0\\]\\.cells\\[0\\]\\.nam'"):
        load_grid(write("blocks: [{name: a, cells: [{nam: x}]}]\n"))
    with pytest.raises(ConfigError, match="cell 'x' appears in blocks 'a' and 'b'"):
        load_grid(write("blocks: [{name: a, cells: [{name: x}]}, {name: b, cells: [{name: x}]}]\n"))
    with pytest.raises(ConfigError, match="reference 'z' is not one of its cells"):
        load_grid(write("blocks: [{name: a, reference: z, cells: [{name: x}]}]\n"))
    grid = load_grid(write(cells))
    with pytest.raises(ConfigError, match="cell 'y': .*optim.max_stepz.*did you mean 'optim.max_steps'"):
        plan_grid(grid, tmp_path / "out")


def test_statistics_are_mean_and_sample_std_over_seeds():
    runs = [
        {"metrics": {"retrieval/t2i_R@1": v, "sugarcrepe/swap_obj": s, "sugarcrepe/swap_att": s + 10}}
        for v, s in ((10.0, 40.0), (20.0, 50.0), (30.0, 60.0))
    ]
    stats = ablation_stats(runs)
    assert stats["retrieval/t2i_R@1"] == {"mean": 20.0, "std": 10.0, "n": 3}  # sample std (n - 1)
    assert stats["sugarcrepe/swap"]["mean"] == 55.0  # Table 4's grouping: mean of the swap categories
    single = ablation_stats(runs[:1])
    assert single["retrieval/t2i_R@1"] == {"mean": 10.0, "std": 0.0, "n": 1}  # zero-shot: one run, std 0
    delta, se = difference(stats["retrieval/t2i_R@1"], single["retrieval/t2i_R@1"])
    assert delta == 10.0 and se == pytest.approx(10.0 / math.sqrt(3))
    derived = derived_metrics({"zeroshot/a/top1": 40.0, "zeroshot/b/top1": 60.0, "zeroshot/b/top2": 90.0})
    assert derived == {"zeroshot/mean_top1": 50.0}


def test_smoke_grid_end_to_end_and_rerun_reuses_every_run(tiny, tmp_path):
    base, data = tiny
    out = tmp_path / "ablate"
    args = ["ablate", "--grid", str(CONFIGS / "ablations_smoke.yaml"), "--out", str(out), "--data", str(data)]
    args += ["--set", f"base_model={base}"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "progress: cells 2/2, runs 4/4" in res.output

    ablations = read_ablations(out)
    (block,) = ablations["blocks"]
    zero, trained = block["cells"]
    assert zero["zero_shot"] and len(zero["runs"]) == 1 and zero["seeds"] == [None]
    assert all(s["std"] == 0 and s["n"] == 1 for s in zero["stats"].values())
    assert [r["seed"] for r in trained["runs"]] == [0, 1, 2] and trained["complete"]
    t2i = [r["metrics"]["retrieval/t2i_R@1"] for r in trained["runs"]]
    assert trained["stats"]["retrieval/t2i_R@1"]["mean"] == pytest.approx(sum(t2i) / 3, abs=1e-3)
    assert trained["stats"]["compute/steps"]["mean"] == 2 and trained["stats"]["compute/pairs"]["mean"] == 8
    assert {"sugarcrepe/swap_obj", "winoground/group", "zeroshot/mean_top1"} <= set(trained["stats"])
    gen = trained["runs"][0]["generation"]["summary"]
    assert 0 <= gen["token_accuracy"] <= 100 and len(gen["samples"]) == 1
    assert zero["runs"][0]["generation"]["summary"]["tokens"] == gen["tokens"]  # same held-out captions
    for seed in (0, 1, 2):
        assert (out / "runs" / "both-ntp" / f"seed-{seed}" / "eval" / "results.json").is_file()
    md = (out / "ablations.md").read_text()
    assert "| zero-shot prompts † | 1 |" in md and "| + soft prompt + LoRA + NTP | 3 |" in md
    assert "![Smoke grid (two tiny cells)](ablation-smoke.png)" in md and (out / "ablation-smoke.png").is_file()
    assert "Difference from **zero-shot prompts**" in md and "Greedy captions" in md

    # a rerun trains and evaluates nothing
    ckpt = out / "runs" / "both-ntp" / "seed-1" / "checkpoints"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.rglob("*"))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("(reused)") == 4 and "training" not in res.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.rglob("*")) == before

    # a run whose record is gone is evaluated again from its finished checkpoint, not retrained
    (out / "runs" / "both-ntp" / "seed-2" / "ablation_run.json").unlink()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "reusing the finished run" in res.output and res.output.count("(reused)") == 3

    # `vladva report DIR` rewrites the tables and plots from ablations.json (as the last run left
    # them: the re-evaluated run has its own evaluation CPU time)
    md = (out / "ablations.md").read_text()
    (out / "ablations.md").unlink()
    shutil.rmtree(out / "runs")  # the report needs only ablations.json
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "ablations.md").read_text() == md
    assert json.loads((out / "ablations.json").read_text())["schema"] == "vladva.ablations/1"


def test_plan_flag_lists_runs_without_training(tmp_path):
    res = CliRunner().invoke(app, ["ablate", "--out", str(tmp_path / "x"), "--plan"])
    assert res.exit_code == 0, res.output
    assert "losses/contrastive-only: same runs as both" in res.output and "55 runs in 26 cells" in res.output
    assert not (tmp_path / "x" / "runs").exists()
