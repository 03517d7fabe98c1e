"""`VladVA`: a two-tower image/text embedder over any supported Hugging Face LVLM.

Image tower: image + image prompt through the whole LVLM; text tower: sentence + text prompt
through the language model alone. Each embedding pools the tower's final hidden states (the last
real token, or the mean over real tokens), L2-normalised. Trainable parts (soft prompts, LoRA,
optionally the projector) are saved apart from the base model (`vladva.model.weights`); `merge`
folds LoRA in and writes a standalone folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vladva.embedder import ImageInput, as_image_list, as_text_list
from vladva.model.config import VladVAConfig
from vladva.model.families import BackboneFamily, UnsupportedModelError, family_for
from vladva.model.inputs import TowerInputBuilder, TowerInputs
from vladva.model.lora import apply_lora
from vladva.model.pooling import POOLING, position_ids_from_mask
from vladva.model.prompts import PromptLayout
from vladva.model.quiet import quiet_transformers
from vladva.model.soft_prompt import SoftPrompts
from vladva.model.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainedWeights,
    check_untrusted_folder,
    check_weights_dir,
    folder_meta,
    full_tensor,
    lora_dir,
    read_model_type,
    read_trained_tensors,
    read_vladva_config,
    resolve_weights_dir,
    write_weights_dir,
)

__all__ = ["TowerInputs", "VladVA", "VladVAConfig"]


class VladVA(nn.Module):
    """Implements `vladva.embedder.Embedder`. Build with `VladVA.from_pretrained(base_dir, weights_dir)`."""

    # `format` of the weights folders this class writes and reads (vladva.model.weights), the
    # spec prefix of its model kind, and the name of its training stage in compute records.
    WEIGHTS_FORMAT = "vladva-adapter"
    KIND = "vladva"
    COMPUTE_STAGE = "vladva-finetune"

    def __init__(self, model: nn.Module, processor, config: VladVAConfig | None = None, name: str = "vladva"):
        super().__init__()
        self.config = config or VladVAConfig()
        self.family: BackboneFamily = family_for(model.config.model_type)
        self.model = model  # the HF *ForConditionalGeneration; LoRA layers are injected in place
        self.processor = processor
        self.name = name
        self.peft_model = None
        extra = self.config.soft_prompt.extra_tokens if self.config.soft_prompt.enabled else 0
        self.inputs = TowerInputBuilder(processor, self.family, self.config.prompts, extra)
        self.tokenizer = self.inputs.tokenizer
        self.soft_prompts: SoftPrompts | None = None
        if self.config.soft_prompt.enabled:
            self.soft_prompts = SoftPrompts(self._init_prompt(self.image_layout), self._init_prompt(self.text_layout))
            self._hook = self.soft_prompts.attach(self.model.get_input_embeddings())

    @property
    def image_layout(self) -> PromptLayout:
        return self.inputs.image_layout

    @property
    def text_layout(self) -> PromptLayout:
        return self.inputs.text_layout

    @torch.no_grad()
    def _init_prompt(self, layout: PromptLayout) -> torch.Tensor:
        emb = self.model.get_input_embeddings().weight
        vectors = emb[torch.tensor(layout.prompt_ids, device=emb.device)].float().cpu()
        k = self.config.soft_prompt.extra_tokens
        if k:  # extra tokens start at the mean of the handcrafted prompt's embeddings
            vectors[:k] = vectors[k:].mean(dim=0, keepdim=True)
        return vectors

    # ---- batches (built by `self.inputs`; see vladva.model.inputs) -----------------------------------

    def image_inputs(self, images: Sequence, padding_side: str | None = None) -> TowerInputs:
        """Processor outputs for the image tower; `images` are PIL images."""
        return self.inputs.image_inputs(images, padding_side)

    def text_inputs(self, texts: Sequence[str], padding_side: str | None = None) -> TowerInputs:
        """Token ids for the text tower (sentences cut to `prompts.max_text_tokens`)."""
        return self.inputs.text_inputs(texts, padding_side)

    def ntp_inputs(self, images: Sequence, long_captions: Sequence[str]) -> TowerInputs:
        """Image + image prompt followed by the long caption (+ EOS); labels only on caption tokens."""
        return self.inputs.ntp_inputs(images, long_captions)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # ---- forward ---------------------------------------------------------------------------------

    def _soft(self, tower: str, starts: torch.Tensor):
        if self.soft_prompts is None:
            return contextlib.nullcontext()
        return self.soft_prompts.inject(tower, starts)

    def image_hidden(self, batch: TowerInputs, soft_prompt: bool = True) -> torch.Tensor:
        """`(batch, seq, hidden)` final hidden states of the full LVLM. `soft_prompt=False` leaves
        the prompt positions as the tokens are (for inputs built with another prompt, e.g. a
        captioning instruction)."""
        return self._image_forward(batch, soft_prompt=soft_prompt).last_hidden_state

    def _image_forward(self, batch: TowerInputs, soft_prompt: bool = True, **extra):
        """The image tower's forward through the LVLM core (`extra`: e.g. `output_hidden_states=True`)."""
        kwargs = dict(batch.model_inputs)
        if self.family.explicit_positions:
            kwargs["position_ids"] = position_ids_from_mask(kwargs["attention_mask"])
        with self._soft("image", batch.prompt_starts) if soft_prompt else contextlib.nullcontext():
            return self.family.core(self.model)(**kwargs, **extra)

    def embed_image_inputs(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, hidden)` L2-normalised float32 image embeddings (keeps the graph for training)."""
        return POOLING[self.config.pooling](self.image_hidden(batch), batch.model_inputs["attention_mask"])

    def text_hidden(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, seq, hidden)` final hidden states of the language model alone (text tower)."""
        return self._text_forward(batch).last_hidden_state

    def _text_forward(self, batch: TowerInputs, **extra):
        """The text tower's forward through the language model alone (`extra` as `_image_forward`)."""
        mask = batch.model_inputs["attention_mask"]
        lm = self.family.language_model(self.model)
        with self._soft("text", batch.prompt_starts):
            return lm(
                input_ids=batch.model_inputs["input_ids"],
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
                **extra,
            )

    def embed_text_inputs(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, hidden)` L2-normalised float32 text embeddings through the language model alone."""
        return POOLING[self.config.pooling](self.text_hidden(batch), batch.model_inputs["attention_mask"])

    def embed_image_with_caption(self, batch: TowerInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over `ntp_inputs` (image, image prompt, long caption) -> `(embeddings (batch, dim),
        hidden states (batch, seq, hidden))`. Attention is causal, so the states up to the end of the
        image prompt do not see the caption: the embedding equals the image tower's. The hidden
        states feed the next-token loss (`caption_logits`)."""
        hidden = self.image_hidden(batch)
        end = batch.prompt_starts + self.image_layout.n_prompt + self.image_layout.n_suffix - 1
        if self.config.pooling == "mean":  # the image-tower prefix only: positions up to the prompt's end
            prefix = torch.arange(hidden.shape[1], device=hidden.device)[None, :] <= end[:, None]
            emb = POOLING["mean"](hidden, batch.model_inputs["attention_mask"] * prefix)
        else:
            emb = F.normalize(hidden[torch.arange(hidden.shape[0], device=hidden.device), end].float(), dim=-1)
        return emb, hidden

    def caption_logits(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits at the labelled positions: `(k, vocab)` and their targets `(k,)`, from
        `hidden` `(batch, seq, hidden)` and `labels` `(batch, seq)` (-100 where no loss). Only the
        k caption positions go through the LM head."""
        targets = labels[:, 1:]
        keep = targets != -100
        return self.model.get_output_embeddings()(hidden[:, :-1][keep]), targets[keep]

    # ---- the Embedder API --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32, show_progress: bool = False
    ) -> torch.Tensor:
        """`(n, hidden)` float32 L2-normalised on CPU; `images` are PIL images or paths (str or
        Path). One image or one path is one item: `(1, hidden)`."""
        from vladva.data.images import load_image

        def load(x):
            return x if isinstance(x, Image.Image) else load_image(x)

        return self._encode(
            as_image_list(images),
            batch_size,
            show_progress,
            "images",
            lambda chunk: self.embed_image_inputs(
                self.image_inputs([load(x).convert("RGB") for x in chunk]).to(self.device)
            ),
        )

    @torch.no_grad()
    def encode_texts(
        self, texts: str | Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> torch.Tensor:
        """`(n, hidden)` float32 L2-normalised on CPU. One string is one text: `(1, hidden)`."""
        return self._encode(
            as_text_list(texts),
            batch_size,
            show_progress,
            "texts",
            lambda chunk: self.embed_text_inputs(self.text_inputs(chunk).to(self.device)),
        )

    def _encode(self, items: list, batch_size: int, show_progress: bool, what: str, fn) -> torch.Tensor:
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        out = []
        try:
            starts = range(0, len(items), batch_size)
            for s in tqdm(starts, desc=f"encoding {what}", disable=not show_progress):
                out.append(fn(items[s : s + batch_size]).float().cpu())
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros(0, self.hidden_size)
        return torch.cat(out)

    # ---- the names users bring from sentence-transformers and open_clip (docs/core.md) --------------

    def encode(
        self,
        inputs: str | ImageInput | Sequence[str | ImageInput],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = True,
    ):
        """sentence-transformers' `encode`: texts (str) and images (PIL images, `Path`s) in one list,
        in any mix, embedded in order. A single text or image gives one `(hidden,)` vector, a list
        `(n, hidden)`. Returns a numpy array (default), a tensor (`convert_to_tensor=True`, which
        wins as in sentence-transformers) or a list of 1-D tensors (both False). A `str` is always
        a text: pass image files as `Path`s. Vectors are always L2-normalised (the pooling
        normalises), so `normalize_embeddings` changes nothing. `show_progress_bar=None` shows a
        bar when stderr is a terminal."""
        import sys

        del normalize_embeddings  # accepted for sentence-transformers' callers; see the docstring
        single = isinstance(inputs, (str, Path, Image.Image))
        items = [inputs] if single else list(inputs)
        is_text = [isinstance(x, str) for x in items]
        bad = next((i for i, x in enumerate(items) if not isinstance(x, (str, Path, Image.Image))), None)
        if bad is not None:
            raise TypeError(
                f"encode: item {bad} is a {type(items[bad]).__name__}; expected texts (str) or images "
                "(PIL images or pathlib.Path)"
            )
        progress = sys.stderr.isatty() if show_progress_bar is None else show_progress_bar
        out = torch.zeros(len(items), self.hidden_size)
        text_rows = [i for i, t in enumerate(is_text) if t]
        image_rows = [i for i, t in enumerate(is_text) if not t]
        if text_rows:
            out[text_rows] = self.encode_texts([items[i] for i in text_rows], batch_size, progress)
        if image_rows:
            out[image_rows] = self.encode_images([items[i] for i in image_rows], batch_size, progress)
        if single:
            out = out[0]
        if convert_to_tensor:
            return out
        if convert_to_numpy:
            return out.numpy()
        return list(out) if not single else out

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True, batch_size: int = 64) -> torch.Tensor:
        """open_clip's name for `encode_texts`: raw strings (vladva tokenizes them itself), `(n, hidden)`,
        always L2-normalised."""
        return self.encode_texts(texts, batch_size)

    def encode_image(
        self, images: ImageInput | Sequence[ImageInput], normalize: bool = True, batch_size: int = 32
    ) -> torch.Tensor:
        """open_clip's name for `encode_images`: PIL images or paths (not a preprocessed tensor: the
        model's processor prepares them), `(n, hidden)`, always L2-normalised."""
        return self.encode_images(images, batch_size)

    # ---- stages, for probes (vladva.embedder.StagedEmbedder) -----------------------------------------

    @torch.no_grad()
    def hidden_stages(
        self, images: Sequence | None = None, texts: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """One tower's features at each stage, `(n, dim)` float32 on CPU (not normalised), for
        `images` (PIL images or paths) or `texts`, through the towers' own forward (prompts, soft
        prompts, LoRA). Images first give `vision` (the vision features the projector reads) and
        `projector` (its output), each the mean over the image's tokens. Then, for both towers,
        the language model's states `lm0` (its input embeddings) to `lm<L>` (after the final
        norm: what the embedding pools), each pooled as the embedding is (`config.pooling`), and
        `lm<k>.mean` (the mean over real positions) when the embedding pools the last token; last,
        `embedding`: `lm<L>` L2-normalised, what `encode_images` / `encode_texts` return."""
        if (images is None) == (texts is None):
            raise ValueError("hidden_stages: give images or texts, not both")
        items = list(images if images is not None else texts)
        fn = self._image_stages if images is not None else self._text_stages
        parts: dict[str, list[torch.Tensor]] = {}
        was_training = self.training
        self.eval()
        try:
            for s in range(0, len(items), batch_size):
                for name, value in fn(items[s : s + batch_size]).items():
                    parts.setdefault(name, []).append(value.float().cpu())
        finally:
            self.train(was_training)
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    def _image_stages(self, chunk: list) -> dict[str, torch.Tensor]:
        from vladva.data.images import load_image

        pil = [
            (x if hasattr(x, "convert") and not isinstance(x, (str, Path)) else load_image(x)).convert("RGB")
            for x in chunk
        ]
        batch = self.image_inputs(pil).to(self.device)
        seen: dict[str, torch.Tensor] = {}

        def grab(_module, inputs, output):  # the projector's input and output, whatever the family
            if inputs:
                seen["vision"] = inputs[0]
            seen["projector"] = output if torch.is_tensor(output) else output[0]

        handle = self.family.projector(self.model).register_forward_hook(grab)
        try:
            out = self._image_forward(batch, output_hidden_states=True)
        finally:
            handle.remove()
        stages = {}
        for name, value in seen.items():
            pooled = _mean_per_item(value, len(chunk))
            if pooled is not None:
                stages[name] = pooled
        return stages | self._lm_stages(out.hidden_states, batch.model_inputs["attention_mask"])

    def _text_stages(self, chunk: list[str]) -> dict[str, torch.Tensor]:
        batch = self.text_inputs(chunk).to(self.device)
        out = self._text_forward(batch, output_hidden_states=True)
        return self._lm_stages(out.hidden_states, batch.model_inputs["attention_mask"])

    def _lm_stages(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = POOLING[self.config.pooling]
        stages = {}
        for k, h in enumerate(hidden_states):
            stages[f"lm{k}"] = pool(h, mask, normalize=False)
            if self.config.pooling != "mean":
                stages[f"lm{k}.mean"] = POOLING["mean"](h, mask, normalize=False)
        stages["embedding"] = pool(hidden_states[-1], mask)  # as embed_*_inputs: L2-normalised
        return stages

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @staticmethod
    def similarity(a, b) -> torch.Tensor:
        """Cosine similarity `(n, dim) x (m, dim) -> (n, m)`; tensors or numpy arrays, a 1-D vector
        counts as one row (sentence-transformers' `similarity`)."""
        a = torch.as_tensor(a, dtype=torch.float32)
        b = torch.as_tensor(b, dtype=torch.float32)
        a, b = a.reshape(1, -1) if a.ndim == 1 else a, b.reshape(1, -1) if b.ndim == 1 else b
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    # ---- training set-up ---------------------------------------------------------------------------

    def prepare_for_training(self) -> int:
        """Freeze the base, add LoRA, make soft prompts (and optionally the projector) trainable.
        Returns the trainable parameter count."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.config.lora.enabled and self.peft_model is None:
            with quiet_transformers():
                self.peft_model = apply_lora(self.model, self.family.language_model(self.model), self.config.lora)
        elif self.peft_model is not None:
            for n, p in self.model.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
        if self.config.train_projector:
            for p in self.family.projector(self.model).parameters():
                p.requires_grad_(True)
        if self.config.train_language_model:
            for n, p in self.family.language_model(self.model).named_parameters():
                if "lora_" not in n:
                    p.requires_grad_(True)
        if self.soft_prompts is not None:
            self.soft_prompts.requires_grad_(True)
        return self.num_trainable()

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by kind: `soft_prompt`, `projector`, `lora` (LoRA, and the language
        model's own weights under full fine-tuning); each kind gets its own learning rate."""
        soft = [p for p in (self.soft_prompts.parameters() if self.soft_prompts is not None else []) if p.requires_grad]
        proj_ids = set()
        if self.config.train_projector:
            proj_ids = {id(p) for p in self.family.projector(self.model).parameters()}
        proj = [p for p in self.model.parameters() if p.requires_grad and id(p) in proj_ids]
        lora = [p for p in self.model.parameters() if p.requires_grad and id(p) not in proj_ids]
        return {"soft_prompt": soft, "lora": lora, "projector": proj}

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        """Soft prompts and (if trained) projector / language-model weights, whole, on the CPU: what
        goes into `vladva_weights.safetensors` (LoRA goes into the PEFT folder). With parameters
        sharded over processes (FSDP, ZeRO-3) this gathers them: every process must call it."""
        out: dict[str, torch.Tensor] = {}
        if self.soft_prompts is not None:
            out["soft_prompt.image"] = full_tensor(self.soft_prompts.image).float()
            out["soft_prompt.text"] = full_tensor(self.soft_prompts.text).float()
        if self.config.train_projector:
            for n, p in self.family.projector(self.model).named_parameters():
                out[f"projector.{n}"] = full_tensor(p)
        if self.config.train_language_model:
            for n, p in self.family.language_model(self.model).named_parameters():
                if "lora_" not in n:
                    out[f"language_model.{n}"] = full_tensor(p)
        return out

    def trained_weights(self) -> TrainedWeights:
        """Everything a weights folder stores (`trained_tensors` and the LoRA state), whole, on the
        CPU. With parameters sharded over processes (FSDP, ZeRO-3) this gathers them: every process
        must call it, then one writes (`save_weights(..., weights=...)`)."""
        lora = None
        if self.peft_model is not None:  # parameters, not state_dict(): a sharded state_dict holds shards
            lora = {n: full_tensor(p) for n, p in self.peft_model.named_parameters() if "lora_" in n}
        return TrainedWeights(self.trained_tensors(), lora)

    @torch.no_grad()
    def load_trained_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy saved soft prompts / projector / language-model weights in (other keys are ignored)."""
        if self.soft_prompts is not None:
            for tower in ("image", "text"):
                key = f"soft_prompt.{tower}"
                if key not in tensors:
                    raise KeyError(f"{key} missing from the saved weights")
                target = self.soft_prompts.get(tower)
                if target.shape != tensors[key].shape:
                    raise ValueError(f"{key}: saved shape {tuple(tensors[key].shape)} != model {tuple(target.shape)}")
                target.copy_(tensors[key])
        proj = {k.removeprefix("projector."): v for k, v in tensors.items() if k.startswith("projector.")}
        if proj:
            params = dict(self.family.projector(self.model).named_parameters())
            for n, v in proj.items():
                params[n].copy_(v)
        lm = {k.removeprefix("language_model."): v for k, v in tensors.items() if k.startswith("language_model.")}
        if lm:
            params = dict(self.family.language_model(self.model).named_parameters())
            for n, v in lm.items():
                if n not in params:
                    raise KeyError(f"language_model.{n}: no such language-model weight in this base")
                params[n].copy_(v)

    def load_lora_state(self, folder: Path | str) -> None:
        """Set the (already attached) LoRA weights from a weights folder's PEFT files."""
        from peft import set_peft_model_state_dict

        from vladva.model.weights import read_safetensors

        if self.peft_model is not None:
            set_peft_model_state_dict(self.peft_model, read_safetensors(lora_dir(folder) / "adapter_model.safetensors"))

    # ---- save / load / merge -------------------------------------------------------------------------

    def save_weights(
        self, out_dir: Path | str, base_model: str | None = None, weights: TrainedWeights | None = None
    ) -> Path:
        """Write only what was trained (a weights folder, `vladva.model.weights`): LoRA, soft prompts
        (and projector / LM weights when trained), `vladva_config.json`. `weights`: what
        `trained_weights()` returned (gathered by every process when the model is sharded);
        taken from the model when None."""
        meta = folder_meta(self.WEIGHTS_FORMAT, self.model.config.model_type, base_model, self.config)
        return write_weights_dir(out_dir, meta, weights or self.trained_weights(), self.peft_model)

    def merge(self, out_dir: Path | str) -> Path:
        """Fold LoRA into the weights and write a standalone HF folder that `from_pretrained` loads.
        This object keeps working (it now holds the merged weights)."""
        from vladva.data.files import normal_file_modes, save_safetensors

        out_dir = Path(out_dir)
        if self.peft_model is not None:
            self.model = self.peft_model.merge_and_unload()
            self.peft_model = None
        self.config.lora.enabled = False
        with quiet_transformers():
            self.model.save_pretrained(out_dir)
            self.processor.save_pretrained(out_dir)
        tensors = {k: v for k, v in self.trained_tensors().items() if k.startswith("soft_prompt.")}
        save_safetensors(tensors, out_dir / WEIGHTS_FILE)
        normal_file_modes(out_dir)  # transformers' model.safetensors too
        meta = folder_meta("vladva-merged", self.model.config.model_type, None, self.config)
        meta["vladva"]["train_projector"] = False  # projector and LM weights are in the model files now
        meta["vladva"]["train_language_model"] = False
        (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out_dir

    def save_pretrained(self, out_dir: Path | str) -> Path:
        """The Hugging Face habit: write a standalone folder that `VladVA.from_pretrained(out_dir)`
        reloads alone (LoRA merged into the weights, processor, soft prompts, prompts). Same as
        `merge`; `save_weights` writes only the trained parts instead (small; needs the base)."""
        return self.merge(out_dir)

    @classmethod
    def from_pretrained(
        cls,
        base_dir: Path | str,
        weights_dir: Path | str | None = None,
        config: VladVAConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        trainable: bool = False,
        adapter_dir: Path | str | None = None,
    ) -> VladVA:
        """Load a base LVLM folder (or a merged VladVA folder, or `"default"`: the shipped base) and
        optionally trained weights (`weights_dir`: a checkpoint folder or a training run folder).

        `config` applies only to a plain base (zero-shot or before training); saved folders carry
        their own. `trainable=True` keeps LoRA weights trainable (to continue training).
        `adapter_dir` is the earlier name of `weights_dir`.
        """
        from transformers import AutoConfig, AutoModelForImageTextToText

        from vladva.pretrained import resolve_base

        weights_dir = weights_dir if weights_dir is not None else adapter_dir
        base_dir = resolve_base(base_dir)
        if not (base_dir / "config.json").is_file():
            raise FileNotFoundError(f"{base_dir}: not a Hugging Face model folder (no config.json)")
        # The folder is checked before transformers sees it: an unsupported or custom architecture is
        # refused by name, a config asking for the folder's own code (auto_map) or naming files
        # outside it is refused, and no code from the folder is ever run.
        try:
            family = family_for(read_model_type(base_dir))
        except UnsupportedModelError as e:
            raise UnsupportedModelError(f"{base_dir / 'config.json'}: {e}") from None
        check_untrusted_folder(base_dir)
        AutoConfig.from_pretrained(base_dir, trust_remote_code=False)
        if not any(p.name != WEIGHTS_FILE for p in base_dir.glob("*.safetensors")):  # pickles are never read
            raise FileNotFoundError(
                f"{base_dir}: no *.safetensors weights; vladva loads only safetensors "
                "(convert pickled .bin checkpoints first)"
            )
        with quiet_transformers():
            model = AutoModelForImageTextToText.from_pretrained(
                base_dir, dtype=dtype or torch.float32, trust_remote_code=False, use_safetensors=True
            )
            processor = family.load_processor(base_dir)
        tensors_dir, name = None, f"{cls.KIND}:{base_dir.name}"
        if (base_dir / CONFIG_FILE).is_file():  # a merged folder
            config, _ = read_vladva_config(base_dir)
            tensors_dir = base_dir
        if weights_dir is not None:
            weights_dir = resolve_weights_dir(weights_dir)
            check_untrusted_folder(weights_dir)
            check_weights_dir(weights_dir)  # a missing or truncated file is named before loading
            config, meta = read_vladva_config(weights_dir)
            found = meta.get("format", cls.WEIGHTS_FORMAT)
            if found != cls.WEIGHTS_FORMAT:
                raise ValueError(
                    f"{weights_dir}: holds {found!r} weights, not {cls.WEIGHTS_FORMAT!r} ones "
                    f"({cls.__name__} cannot load them; see vladva.model_kinds for the matching spec)"
                )
            tensors_dir = weights_dir
            name += f"+{weights_dir.name}"
        self = cls(model, processor, config, name=name)
        if weights_dir is not None and self.config.lora.enabled:
            from peft import PeftModel

            with quiet_transformers():
                self.peft_model = PeftModel.from_pretrained(self.model, lora_dir(weights_dir), is_trainable=trainable)
        if tensors_dir is not None and (tensors_dir / WEIGHTS_FILE).is_file():
            self.load_trained_tensors(read_trained_tensors(tensors_dir))
        if device is not None:
            self.to(device)
        self.eval()
        return self


def _mean_per_item(features: torch.Tensor, n: int) -> torch.Tensor | None:
    """`(n, dim)` mean over each item's tokens of `features` laid out item by item, either
    `(n, tokens, dim)` or flattened `(n * tokens, dim)` (or several crops per item); None when the
    rows cannot be split evenly into `n` items."""
    dim = features.shape[-1]
    if features.ndim < 2 or features.numel() % (n * dim):
        return None
    return features.reshape(n, -1, dim).float().mean(dim=1)
