"""vladva: discriminative fine-tuning of generative vision-language models (VladVA).

The user-facing library lives in `vladva.model` (the two-tower embedder); training in
`vladva.train`, data in `vladva.data`, the embedded default base models in `vladva.toyworld.base`,
evaluation in `vladva.eval` and serving in `vladva.serve`.
"""

from pathlib import Path

__version__ = "0.1.0"

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
"""Shipped checkpoints of the embedded default (see docs/pretraining.md)."""
