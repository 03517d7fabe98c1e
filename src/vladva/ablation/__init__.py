"""`vladva ablate`: the paper's ablations in miniature, one grid of training runs with seeds.

`vladva.ablation.grid` reads a grid file and plans its runs; `vladva.ablation.runner` trains each
run through the one trainer (`vladva.train.trainer.train_or_reuse`), evaluates it with the one
runner (`vladva.eval.runner.run_evaluation`) and hands the records to the one report module
(`vladva.eval.report.write_ablation_report`). See docs/ablations.md.
"""

from vladva.ablation.grid import AblationGrid, GridBlock, GridCell, load_grid, plan_grid
from vladva.ablation.runner import run_ablation

__all__ = ["AblationGrid", "GridBlock", "GridCell", "load_grid", "plan_grid", "run_ablation"]
