"""Export a trained VladVA as a standalone folder: `hf` (merged weights + model card) or
`sentence-transformers` (the same, loadable by `SentenceTransformer`). See docs/export.md."""

from vladva.export.card import CardInfo, render_model_card, select_evaluation
from vladva.export.writer import FORMATS, ExportError, ExportRequest, export_model

__all__ = [
    "FORMATS",
    "CardInfo",
    "ExportError",
    "ExportRequest",
    "export_model",
    "render_model_card",
    "select_evaluation",
]
