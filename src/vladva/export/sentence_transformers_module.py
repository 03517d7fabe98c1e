"""A sentence-transformers input module over `VladVA`, so an exported folder loads with
sentence-transformers and `.encode` gives VladVA's embeddings.

The folder is a merged VladVA folder (loadable by `VladVA.from_pretrained`) plus sentence-
transformers' `modules.json` / `config_sentence_transformers.json`; the module is saved in the
root, so both libraries read the same files. Needs the optional `sentence-transformers` package
(`pip install 'vladva[export]'`).

sentence-transformers 6 imports a module class outside its own namespace only when the user
passes its `trust_remote_code` flag; vladva never passes it. For this folder the flag imports
this class from the installed vladva package: `modules.json` names a dotted path of more than
two parts, which sentence-transformers never reads from the model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modality import infer_modality
from sentence_transformers.base.modules.input_module import InputModule

from vladva.model.vladva import VladVA

# Keys of the features dict that are ours, not the model's keyword inputs.
TOWER_KEY, STARTS_KEY = "vladva_tower", "vladva_prompt_starts"


class VladVAModule(InputModule):
    """Both VladVA towers as one sentence-transformers module: `preprocess` builds one tower's
    batch (all texts or all images), `forward` adds `sentence_embedding` `(batch, dim)`, float32,
    L2-normalised, equal to `VladVA.encode_texts` / `encode_images`."""

    save_in_root = True

    def __init__(self, vladva: VladVA):
        super().__init__()
        self.vladva = vladva

    @property
    def modalities(self) -> list[str]:
        return ["text", "image"]

    @property
    def tokenizer(self):
        return self.vladva.tokenizer

    @property
    def processor(self):
        return self.vladva.processor

    @property
    def max_seq_length(self) -> int:
        """Texts are cut to this many tokens before the text prompt is added."""
        return self.vladva.config.prompts.max_text_tokens

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.vladva.config.prompts.max_text_tokens = int(value)

    def get_embedding_dimension(self) -> int:
        return self.vladva.hidden_size

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Texts (str) or images (PIL images, image paths or `{"image": ...}`) -> the tower's model
        inputs plus where each row's summary prompt starts. `prompt` is prepended to texts."""
        kinds = {infer_modality(x, supported_modalities=self.modalities) for x in inputs}
        if kinds == {"text"}:
            texts = [prompt + t for t in inputs] if prompt else list(inputs)
            batch, tower = self.vladva.text_inputs(texts), "text"
        elif kinds == {"image"}:
            batch, tower = self.vladva.image_inputs([_as_pil(x) for x in inputs]), "image"
        else:
            raise ValueError(
                f"VladVA encodes one modality per call (texts or images); this batch holds {sorted(map(str, kinds))}"
            )
        return {**batch.model_inputs, STARTS_KEY: batch.prompt_starts, TOWER_KEY: tower}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        from vladva.model.inputs import TowerInputs

        tower = features[TOWER_KEY]
        model_inputs = {k: v for k, v in features.items() if k not in (TOWER_KEY, STARTS_KEY)}
        batch = TowerInputs(model_inputs, features[STARTS_KEY])
        embed = self.vladva.embed_image_inputs if tower == "image" else self.vladva.embed_text_inputs
        features["sentence_embedding"] = embed(batch)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the merged VladVA folder (weights, processor, soft prompts, vladva_config.json)."""
        self.vladva.merge(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token=None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        model_kwargs: dict | None = None,
        **kwargs,
    ) -> VladVAModule:
        path = cls.load_dir_path(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        dtype = (model_kwargs or {}).get("dtype") or (model_kwargs or {}).get("torch_dtype")
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        return cls(VladVA.from_pretrained(path, dtype=dtype))


def _as_pil(x):
    from vladva.data.images import load_image

    if isinstance(x, dict):
        x = x["image"]
    if isinstance(x, (str, Path)):
        x = load_image(x)
    return x.convert("RGB")
