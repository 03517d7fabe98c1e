"""`export_model`: a trained VladVA -> a standalone folder (`hf` or `sentence-transformers`) with a model card.

Both formats are the merged folder `VladVA.merge` writes (LoRA folded into the weights, processor,
soft prompts in `vladva_weights.safetensors`, prompts in `vladva_config.json`), so
`VladVA.from_pretrained(OUT)` loads either; `sentence-transformers` adds `modules.json` and
`config_sentence_transformers.json`. The folder is written beside OUT and renamed into place at the
end, so a failed or killed export leaves no half-written OUT; a full disk is a `DiskFullError`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vladva.storage import fsync_tree, writing

FORMATS = ("hf", "sentence-transformers")
DTYPES = ("float32", "bfloat16", "float16")


class ExportError(ValueError):
    """An export request that cannot be carried out; the message says what to change."""


@dataclass
class ExportRequest:
    """What to export and where. `base` is a base LVLM folder (with `weights`) or a merged VladVA folder."""

    base: Path
    out: Path
    weights: Path | None = None
    format: str = "hf"
    results: Path | None = None  # a `vladva eval` results.json (or its folder) for the card's table
    results_models: tuple[str, ...] = ()  # rows of `results` to show; default: the rows of this model
    name: str | None = None  # the card's title; default: OUT's folder name
    dtype: str = "float32"  # dtype of the written weights

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"--format {self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.dtype not in DTYPES:
            raise ExportError(f"--dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ExportError(f"--out {self.out} exists and is not an empty folder; choose a new folder")
        if self.results is not None and not self.results.exists():
            raise ExportError(f"--results {self.results}: file not found")


def _source(req: ExportRequest) -> tuple[Path | None, dict, str | None]:
    """The resolved weights (checkpoint) folder, the vladva_config.json that describes the model, and the
    base model's name as recorded there."""
    from vladva.model.weights import CONFIG_FILE, read_vladva_config, resolve_weights_dir

    if req.weights is not None:
        if not req.weights.exists():
            raise ExportError(f"--weights {req.weights}: no such folder (give a run folder or a checkpoint folder)")
        weights_dir = resolve_weights_dir(req.weights)
        _, meta = read_vladva_config(weights_dir)
        return weights_dir, meta, str(req.base)
    if not (req.base / CONFIG_FILE).is_file():
        raise ExportError(
            f"--model {req.base}: not a merged VladVA folder (no {CONFIG_FILE}); give the trained "
            "--weights (a run or checkpoint folder) with the base model"
        )
    _, meta = read_vladva_config(req.base)
    return None, meta, meta.get("base_model") or str(req.base)


def _train_compute(base_name: str | None, weights_dir: Path | None) -> dict:
    """The compute records of the base (when its folder is here) and of the trained weights."""
    from vladva.eval.models import read_train_compute
    from vladva.pretrained import resolve_base

    folders = [resolve_base(base_name)] if base_name else []
    return read_train_compute([f for f in folders if f.is_dir()] + ([weights_dir] if weights_dir else []))


def export_model(req: ExportRequest, log=print) -> Path:
    """Write the export folder `req.out` and return it. Everything the user can get wrong (paths,
    results rows, format) is checked before the model is loaded."""
    import torch

    from vladva.data.files import normal_file_modes
    from vladva.eval.runner import environment
    from vladva.export.card import CardInfo, read_training_record, render_model_card, select_evaluation
    from vladva.model import VladVA

    req.validate()
    weights_dir, meta, base_name = _source(req)
    evaluation = None
    if req.results is not None:
        evaluation = select_evaluation(req.results, req.base, weights_dir, req.results_models)
    elif req.results_models:
        raise ExportError("--results-model needs --results")
    training_config, compute = read_training_record(weights_dir)
    train_compute = _train_compute(base_name, weights_dir)
    if req.format == "sentence-transformers":
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            raise ExportError(
                "--format sentence-transformers needs the sentence-transformers package: pip install 'vladva[export]'"
            ) from None

    log(f"loading {req.base}" + (f" + {weights_dir}" if weights_dir else ""))
    model = VladVA.from_pretrained(req.base, weights_dir, dtype=getattr(torch, req.dtype))
    req.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = req.out.parent / f".{req.out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    nothing = f"nothing was written to {req.out} (the partial copy was removed); free some space and export again"
    try:
        with writing(f"the export {req.out.name}", req.out.parent, nothing):
            if req.format == "hf":
                model.merge(tmp)
            else:
                from sentence_transformers import SentenceTransformer

                from vladva.export.sentence_transformers_module import VladVAModule

                st = SentenceTransformer(modules=[VladVAModule(model)], device="cpu", similarity_fn_name="cosine")
                st.save(str(tmp), create_model_card=False)
            info = CardInfo(
                name=req.name or req.out.name,
                location=str(req.out),
                export_format=req.format,
                model_type=model.model.config.model_type,
                embedding_dim=model.hidden_size,
                vladva_config=meta.get("vladva", {}),
                base_model=base_name,
                adapter=str(weights_dir) if weights_dir else None,
                training_config=training_config,
                compute=compute,
                train_compute=train_compute,
                evaluation=evaluation,
                results_path=str(req.results) if req.results else None,
                environment=environment(),
                num_parameters=sum(p.numel() for p in model.model.parameters()),
            )
            (tmp / "README.md").write_text(render_model_card(info), encoding="utf-8")
            normal_file_modes(tmp)  # safetensors writes 0600; an export is meant to be shared
            if req.out.exists():
                req.out.rmdir()  # validated empty above
            fsync_tree(tmp)
            tmp.rename(req.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return req.out
