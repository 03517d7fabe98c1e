"""vladva: discriminative fine-tuning of generative vision-language models (VladVA).

The user-facing library lives in `vladva.model` (the two-tower embedder, also importable as
`from vladva import VladVA`); training in `vladva.train`, data in `vladva.data`, the embedded
default base models in `vladva.toyworld.base`, evaluation in `vladva.eval` and serving in
`vladva.serve`. `import vladva` stays light: `VladVA` (and torch with it) is imported on first use.
"""

from pathlib import Path

__version__ = "0.1.0"

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
"""Shipped checkpoints of the embedded default (see docs/pretraining.md)."""

_LAZY = {"VladVA": "vladva.model", "VladVAConfig": "vladva.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vladva' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["PRETRAINED_DIR", "VladVA", "VladVAConfig", "__version__"]
