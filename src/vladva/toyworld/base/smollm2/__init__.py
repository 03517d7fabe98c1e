"""The SmolLM2 base: a truncated SmolLM2-135M-Instruct assembled as LLaVA with the shipped vision
tower and trained on the shapes world (heal -> align -> instruct), then VladVA and the dual-encoder
baseline on it. docs/smollm2.md; driver: scripts/train_smollm2_default.py."""

from vladva.toyworld.base.smollm2.config import STAGES, Smollm2RecipeConfig
from vladva.toyworld.base.smollm2.recipe import load_smollm2_config, run_smollm2, ship_smollm2

__all__ = ["STAGES", "Smollm2RecipeConfig", "load_smollm2_config", "run_smollm2", "ship_smollm2"]
