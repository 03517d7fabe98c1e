"""The ablation grid file and its plan: which training runs a grid asks for, and where each goes.

A grid (YAML, read with the strict keys of `vladva.config`) names a base recipe, the data folder,
recipe overrides shared by every run, the seeds, the evaluation subset and blocks of cells; a
cell is a name plus recipe overrides (the `key=value` strings `vladva train` takes), or a
zero-shot cell (the base evaluated as it is, no training, no seeds). Example:

    recipe: default                 # the packaged configs/default.yaml, or a YAML path
    data: data/shapes               # `vladva data shapes` layout: train.jsonl, val.jsonl, benchmarks
    seeds: [0, 1, 2]
    overrides: [optim.max_steps=100, model.pooling=last]
    eval: {suites: [retrieval, sugarcrepe, winoground, zeroshot], limit: 200}
    blocks:
      - name: table4
        title: Soft prompt and LoRA
        reference: zero-shot
        cells:
          - {name: zero-shot, label: zero-shot prompts, zero_shot: true}
          - {name: soft-prompt, label: + soft prompt, overrides: [model.lora.enabled=false]}

Every (cell, seed) trains into `OUT/runs/<cell>/seed-<s>/`; a cell whose resolved recipe equals
an earlier cell's (the same run under another name in another block) reuses that cell's runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vladva.config import ConfigError, build_config, config_to_dict, load_config, read_config_file
from vladva.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class GridCell:
    # Unique in the grid: the run folder OUT/runs/<name>/ (lower case, digits, - _ .).
    name: str = ""
    # The row's text in tables (default: the name).
    label: str = ""
    # Recipe overrides for this cell, applied after the grid's.
    overrides: list[str] = field(default_factory=list)
    # Evaluate the base as it is with the recipe's model settings: no training, one evaluation.
    zero_shot: bool = False

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"cell name {self.name!r} must be lower case letters, digits, '-', '_' or '.'")

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class GridBlock:
    name: str = ""
    title: str = ""
    # What the block asks, one or two sentences (shown above its table).
    note: str = ""
    # The cell the others are compared with (differences table); default: the first cell.
    reference: str = ""
    # Also measure generation (caption token accuracy, greedy captions) for each cell.
    generation: bool = False
    cells: list[GridCell] = field(default_factory=list)

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"block name {self.name!r} must be lower case letters, digits, '-', '_' or '.'")
        if not self.cells:
            raise ValueError(f"block {self.name!r} has no cells")
        if self.reference and self.reference not in [c.name for c in self.cells]:
            raise ValueError(f"block {self.name!r}: reference {self.reference!r} is not one of its cells")


@dataclass
class GridEval:
    """How each run is evaluated (`vladva.eval.runner.EvalConfig` on the grid's data folder). The
    subset (`limit`, `seed`) is the same for every run, so cells are compared on the same items."""

    suites: list[str] = field(default_factory=lambda: ["retrieval", "sugarcrepe", "winoground", "zeroshot"])
    # > 0: a seeded subset of that many items per benchmark (retrieval: images, with their captions).
    limit: int = 0
    seed: int = 0
    batch_size: int = 64

    def validate(self) -> None:
        if self.limit < 0 or self.batch_size < 1:
            raise ValueError("eval.limit must be >= 0 and eval.batch_size >= 1")


@dataclass
class GridGeneration:
    """Generation kept (blocks with `generation: true`): on the first `images` validation records."""

    images: int = 50
    # Greedy captions kept per run (the first validation images).
    samples: int = 2
    max_new_tokens: int = 64
    # The base's own captioning instruction ("" : measure only with the summary prompt).
    caption_prompt: str = ""

    def validate(self) -> None:
        if self.images < 1 or self.samples < 0 or self.max_new_tokens < 1:
            raise ValueError("generation.images must be >= 1, samples >= 0 and max_new_tokens >= 1")


@dataclass
class AblationGrid:
    # The base recipe: "default" (the packaged configs/default.yaml) or a YAML path (relative
    # paths: from the grid file's folder, then the current folder).
    recipe: str = "default"
    # A folder in the `vladva data shapes` layout: train.jsonl, val.jsonl and benchmark folders.
    data: str = "data/shapes"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Recipe overrides for every run, before each cell's own.
    overrides: list[str] = field(default_factory=list)
    # CPU threads per run (torch).
    num_threads: int = 1
    eval: GridEval = field(default_factory=GridEval)
    generation: GridGeneration = field(default_factory=GridGeneration)
    blocks: list[GridBlock] = field(default_factory=list)

    def validate(self) -> None:
        if len(set(self.seeds)) < 3 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be at least 3 different seeds (mean ± std over seeds), got {self.seeds}")
        if not self.blocks:
            raise ValueError("a grid needs at least one block of cells")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"two blocks share a name: {names}")
        seen: dict[str, str] = {}
        for b in self.blocks:
            for c in b.cells:
                if c.name in seen:
                    raise ValueError(
                        f"cell {c.name!r} appears in blocks {seen[c.name]!r} and {b.name!r}; names are unique"
                    )
                seen[c.name] = b.name

    def cells(self) -> list[tuple[GridBlock, GridCell]]:
        return [(b, c) for b in self.blocks for c in b.cells]


def load_grid(path: Path | str, overrides: dict | None = None) -> AblationGrid:
    """Read a grid file (strict keys, errors name the file); `overrides` is a partial mapping
    applied on top (the CLI's flags)."""
    path = Path(path)
    grid = build_config(AblationGrid, read_config_file(path), str(path))
    if overrides:
        grid = build_config(AblationGrid, overrides, "command line", base=grid)
    grid.recipe = str(resolve_recipe(grid.recipe, path.parent))
    return grid


def resolve_recipe(recipe: str, grid_dir: Path) -> Path:
    if recipe == "default":
        return CONFIGS / "default.yaml"
    for candidate in (grid_dir / recipe, Path(recipe), CONFIGS / recipe):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"recipe {recipe!r}: no such file (looked next to the grid, here and in {CONFIGS})")


# ----------------------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    """One training run (or the zero-shot evaluation of a zero-shot cell, `seed` None)."""

    cell: str
    seed: int | None
    config: TrainConfig
    run_dir: Path


@dataclass
class PlannedCell:
    block: GridBlock
    cell: GridCell
    runs: list[PlannedRun]
    # The earlier cell whose runs this one reuses (same resolved recipe), or None.
    runs_of: str | None = None
    # Any block holding this cell's runs asks for generation.
    generation: bool = False


def run_config(grid: AblationGrid, cell: GridCell, seed: int, run_dir: Path, extra: list[str] = ()) -> TrainConfig:
    """The resolved recipe of one run: base recipe, the data folder, the grid's overrides, `extra`
    (the command line's), the cell's, then seed, output folder, threads (not overridable)."""
    data = Path(grid.data)
    overrides = [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}"]
    overrides += [*grid.overrides, *extra, *cell.overrides]
    overrides += [f"seed={seed}", f"output_dir={run_dir}", f"num_threads={grid.num_threads}", "progress=false"]
    try:
        return load_config(TrainConfig, grid.recipe, overrides)
    except ConfigError as e:
        raise ConfigError(f"cell {cell.name!r}: {e}") from None


def _recipe_key(cfg: TrainConfig, zero_shot: bool) -> str:
    d = config_to_dict(cfg)
    d.pop("output_dir")
    if zero_shot:  # an untrained base depends on the base and the model settings only
        d = {"base_model": d["base_model"], "model": d["model"]}
    return repr(sorted(d.items()))


def plan_grid(grid: AblationGrid, out_dir: Path | str, extra_overrides: list[str] = ()) -> list[PlannedCell]:
    """Every cell with its runs in grid order; cells equal to an earlier one share its runs."""
    out_dir = Path(out_dir)
    owners: dict[tuple[bool, str], PlannedCell] = {}
    plan = []
    for block, cell in grid.cells():
        seeds = [grid.seeds[0]] if cell.zero_shot else grid.seeds
        runs = []
        for seed in seeds:
            run_dir = out_dir / "runs" / cell.name / ("" if cell.zero_shot else f"seed-{seed}")
            cfg = run_config(grid, cell, seed, run_dir, list(extra_overrides))
            runs.append(PlannedRun(cell.name, None if cell.zero_shot else seed, cfg, run_dir))
        key = (cell.zero_shot, _recipe_key(runs[0].config, cell.zero_shot))
        owner = owners.get(key)
        planned = PlannedCell(block, cell, owner.runs if owner else runs, owner.cell.name if owner else None)
        if owner is None:
            owners[key] = planned
        plan.append(planned)
    for p in plan:  # a run set measures generation when any block holding it asks
        p.generation = any(q.block.generation for q in plan if q.runs is p.runs)
    return plan


def unique_runs(plan: list[PlannedCell]) -> list[tuple[PlannedCell, PlannedRun]]:
    """The runs to execute (each once), in grid order, with the cell that owns them."""
    return [(p, r) for p in plan if p.runs_of is None for r in p.runs]
