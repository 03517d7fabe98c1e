"""`VladVA`: a two-tower image/text embedder over any supported Hugging Face LVLM.

Image tower: image + image prompt through the whole LVLM; text tower: sentence + text prompt
through the language model alone. Each embedding is the final hidden state of the row's last
real token, L2-normalised. Trainable parts (soft prompts, LoRA, optionally the projector) are
saved apart from the base model; `merge` folds LoRA in and writes a standalone folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vladva.config import build_config, config_to_dict
from vladva.model.adapters import BackboneAdapter, UnsupportedModelError, adapter_for
from vladva.model.lora import LoraSettings, apply_lora
from vladva.model.pooling import POOLING, last_token_index, position_ids_from_mask
from vladva.model.prompts import PromptConfig, PromptLayout, measure_layout
from vladva.model.soft_prompt import SoftPromptConfig, SoftPrompts

CONFIG_FILE = "vladva_config.json"
WEIGHTS_FILE = "vladva_weights.safetensors"
ADAPTER_SUBDIR = "adapter"
LATEST_FILE = "latest"


@dataclass
class VladVAConfig:
    """What turns a base LVLM into the embedder: prompts, soft prompts, LoRA, trainable projector."""

    prompts: PromptConfig = field(default_factory=PromptConfig)
    soft_prompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_projector: bool = False
    # Also train every weight of the language model (full fine-tuning, not parameter-efficient;
    # usually with lora.enabled=false). Its weights are saved with the adapter. A measurement aid:
    # does a small LM need more than LoRA to learn something (docs/results.md)?
    train_language_model: bool = False
    # How a tower's final hidden states become its embedding: "last" (the summary token after the
    # prompt, the paper's choice) or "mean" (mean over every real position: image or sentence
    # tokens and the prompt). A small LM's summary token can read its sentence as a bag of words
    # while its per-token states still bind attributes (benchmarks/binding_probe.py, docs/results.md).
    pooling: str = "last"

    def validate(self) -> None:
        if self.pooling not in POOLING:
            raise ValueError(f"model.pooling must be one of {sorted(POOLING)}, got {self.pooling!r}")


@dataclass
class TowerInputs:
    """One tower's batch: the model's keyword inputs, where each row's prompt starts, NTP labels."""

    model_inputs: dict[str, torch.Tensor]
    prompt_starts: torch.Tensor  # (batch,) first prompt position per row
    labels: torch.Tensor | None = None  # (batch, seq), -100 where no loss

    def to(self, device) -> TowerInputs:
        mi = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.model_inputs.items()}
        lab = self.labels.to(device) if self.labels is not None else None
        return TowerInputs(mi, self.prompt_starts.to(device), lab)


def resolve_adapter_dir(path: Path | str) -> Path:
    """A checkpoint folder, or a run/checkpoints folder whose `latest` file names one."""
    path = Path(path)
    for cand in (path, path / "checkpoints"):
        if (cand / CONFIG_FILE).is_file():
            return cand
        if (cand / LATEST_FILE).is_file():
            target = cand / (cand / LATEST_FILE).read_text(encoding="utf-8").strip()
            if (target / CONFIG_FILE).is_file():
                return target
            raise FileNotFoundError(f"{cand / LATEST_FILE} points to {target}, which is not a vladva checkpoint")
    raise FileNotFoundError(f"{path}: not a vladva adapter folder (no {CONFIG_FILE} and no '{LATEST_FILE}' pointer)")


def read_vladva_config(folder: Path) -> tuple[VladVAConfig, dict]:
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return build_config(VladVAConfig, meta.get("vladva", {}), str(path), prefix="vladva."), meta


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """`load_file` with an error naming the file when it is missing, truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt") from None


def check_adapter_dir(folder: Path) -> None:
    """Raise a clear error naming the file when a saved adapter folder (or checkpoint) lacks a file
    or holds a truncated / corrupt safetensors file. Reads only headers and slices; cheap."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: incomplete vladva checkpoint, {name} is missing")
    files = [folder / WEIGHTS_FILE]
    if read_vladva_config(folder)[0].lora.enabled:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (folder / ADAPTER_SUBDIR / name).is_file():
                raise FileNotFoundError(f"{folder}: incomplete vladva checkpoint, {ADAPTER_SUBDIR}/{name} is missing")
        files.append(folder / ADAPTER_SUBDIR / "adapter_model.safetensors")
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for key in f:
                    f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt") from None


def read_model_type(base_dir: Path) -> str:
    """The `model_type` of a HF folder's config.json, read as plain JSON (no code is imported)."""
    path = Path(base_dir) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{path}: no 'model_type' string; not a Hugging Face model config")
    return data["model_type"]


class VladVA(nn.Module):
    """Implements `vladva.embedder.Embedder`. Build with `VladVA.from_pretrained(base_dir, adapter_dir)`."""

    def __init__(self, model: nn.Module, processor, config: VladVAConfig | None = None, name: str = "vladva"):
        super().__init__()
        self.config = config or VladVAConfig()
        self.adapter: BackboneAdapter = adapter_for(model.config.model_type)
        self.model = model  # the HF *ForConditionalGeneration; LoRA layers are injected in place
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.peft_model = None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.image_layout = measure_layout(self.tokenizer, self._image_text(), self._prompt_text("image"))
        self.text_layout = measure_layout(self.tokenizer, self._text_text("a"), self._prompt_text("text"))
        self.soft_prompts: SoftPrompts | None = None
        if self.config.soft_prompt.enabled:
            self.soft_prompts = SoftPrompts(self._init_prompt(self.image_layout), self._init_prompt(self.text_layout))
            self._hook = self.soft_prompts.attach(self.model.get_input_embeddings())

    # ---- building each tower's text -------------------------------------------------------------

    def _prompt_text(self, tower: str) -> str:
        p = self.config.prompts
        prompt = p.image_prompt if tower == "image" else p.text_prompt
        k = self.config.soft_prompt.extra_tokens if self.config.soft_prompt.enabled else 0
        filler = self.tokenizer.pad_token or self.tokenizer.unk_token
        return filler * k + prompt

    def _use_chat(self) -> bool:
        return self.config.prompts.use_chat_template and bool(getattr(self.processor, "chat_template", None))

    def _image_text(self) -> str:
        prompt = self._prompt_text("image")
        if self._use_chat():
            content = [self.adapter.chat_image_content(), {"type": "text", "text": prompt}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        return self.adapter.image_token_text(self.processor) + self.config.prompts.separator + prompt

    def _text_text(self, sentence: str) -> str:
        body = sentence + self.config.prompts.separator + self._prompt_text("text")
        if self._use_chat():
            return self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": body}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
        return body

    def _truncate(self, sentence: str, max_tokens: int) -> str:
        sentence = sentence.strip()
        enc = self.tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= max_tokens:
            return sentence
        return sentence[: enc["offset_mapping"][max_tokens - 1][1]]

    @torch.no_grad()
    def _init_prompt(self, layout: PromptLayout) -> torch.Tensor:
        emb = self.model.get_input_embeddings().weight
        vectors = emb[torch.tensor(layout.prompt_ids, device=emb.device)].float().cpu()
        k = self.config.soft_prompt.extra_tokens
        if k:  # extra tokens start at the mean of the handcrafted prompt's embeddings
            vectors[:k] = vectors[k:].mean(dim=0, keepdim=True)
        return vectors

    # ---- batches ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def _starts(self, attention_mask: torch.Tensor, layout: PromptLayout) -> torch.Tensor:
        return last_token_index(attention_mask) - layout.n_suffix - layout.n_prompt + 1

    def _check_prompt(self, input_ids: torch.Tensor, starts: torch.Tensor, layout: PromptLayout) -> None:
        cols = starts[:, None] + torch.arange(layout.n_prompt, device=starts.device)[None, :]
        if (starts < 0).any() or not torch.equal(
            input_ids.gather(1, cols.clamp(min=0)),
            torch.tensor(layout.prompt_ids, device=input_ids.device).expand_as(cols),
        ):
            raise RuntimeError(
                f"prompt tokens not where expected in the batch (prompt {layout.prompt_text!r}); "
                "the processor changes the text after the content"
            )

    def image_inputs(self, images: Sequence, padding_side: str | None = None) -> TowerInputs:
        """Processor outputs for the image tower; `images` are PIL images."""
        side = padding_side or self.config.prompts.padding_side
        texts = [self._image_text()] * len(images)
        mi = self.adapter.image_inputs(self.processor, texts, list(images), side)
        starts = self._starts(mi["attention_mask"], self.image_layout)
        self._check_prompt(mi["input_ids"], starts, self.image_layout)
        return TowerInputs(mi, starts)

    def text_inputs(self, texts: Sequence[str], padding_side: str | None = None) -> TowerInputs:
        side = padding_side or self.config.prompts.padding_side
        p = self.config.prompts
        full = [self._text_text(self._truncate(t, p.max_text_tokens)) for t in texts]
        enc = self.tokenizer(full, return_tensors="pt", padding=True, padding_side=side)
        mi = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        starts = self._starts(mi["attention_mask"], self.text_layout)
        self._check_prompt(mi["input_ids"], starts, self.text_layout)
        return TowerInputs(mi, starts)

    def ntp_inputs(self, images: Sequence, long_captions: Sequence[str]) -> TowerInputs:
        """Image + image prompt followed by the long caption (+ EOS); labels only on caption tokens."""
        base = self.image_inputs(images, padding_side="right")
        ids, mask = base.model_inputs["input_ids"], base.model_inputs["attention_mask"]
        eos = self.tokenizer.eos_token_id
        rows, labels = [], []
        for i, cap in enumerate(long_captions):
            real = ids[i][mask[i].bool()].tolist()
            cap_ids = self.tokenizer(" " + cap.strip(), add_special_tokens=False)["input_ids"]
            cap_ids = cap_ids[: self.config.prompts.max_long_caption_tokens] + ([eos] if eos is not None else [])
            rows.append(real + cap_ids)
            labels.append([-100] * len(real) + cap_ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        mi = dict(base.model_inputs, input_ids=input_ids, attention_mask=attn)
        for key, value in base.model_inputs.items():  # per-token extras (e.g. mm_token_type_ids): zeros for the caption
            if key not in ("input_ids", "attention_mask") and torch.is_tensor(value) and value.shape == ids.shape:
                grown = value.new_zeros(input_ids.shape)
                for i in range(len(rows)):
                    real = value[i][mask[i].bool()]
                    grown[i, : len(real)] = real
                mi[key] = grown
        return TowerInputs(mi, base.prompt_starts, lab)

    # ---- forward ---------------------------------------------------------------------------------

    def _soft(self, tower: str, starts: torch.Tensor):
        if self.soft_prompts is None:
            return contextlib.nullcontext()
        return self.soft_prompts.inject(tower, starts)

    def image_hidden(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, seq, hidden)` final hidden states of the full LVLM."""
        kwargs = dict(batch.model_inputs)
        if self.adapter.explicit_positions:
            kwargs["position_ids"] = position_ids_from_mask(kwargs["attention_mask"])
        with self._soft("image", batch.prompt_starts):
            return self.adapter.core(self.model)(**kwargs).last_hidden_state

    def embed_image_inputs(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, hidden)` L2-normalised float32 image embeddings (keeps the graph for training)."""
        return POOLING[self.config.pooling](self.image_hidden(batch), batch.model_inputs["attention_mask"])

    def text_hidden(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, seq, hidden)` final hidden states of the language model alone (text tower)."""
        mask = batch.model_inputs["attention_mask"]
        lm = self.adapter.language_model(self.model)
        with self._soft("text", batch.prompt_starts):
            return lm(
                input_ids=batch.model_inputs["input_ids"],
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
            ).last_hidden_state

    def embed_text_inputs(self, batch: TowerInputs) -> torch.Tensor:
        """`(batch, hidden)` L2-normalised float32 text embeddings through the language model alone."""
        return POOLING[self.config.pooling](self.text_hidden(batch), batch.model_inputs["attention_mask"])

    def next_token_loss(self, batch: TowerInputs) -> torch.Tensor:
        """Mean cross-entropy over caption tokens (labels != -100) given image + image prompt."""
        return self.embed_image_and_next_token_loss(batch)[1]

    def embed_image_and_next_token_loss(self, batch: TowerInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over `ntp_inputs` gives both the image embeddings `(batch, hidden)` and the
        next-token loss: attention is causal, so the hidden state at the end of the image prompt
        does not see the caption that follows and equals the image tower's embedding."""
        hidden = self.image_hidden(batch)
        end = batch.prompt_starts + self.image_layout.n_prompt + self.image_layout.n_suffix - 1
        if self.config.pooling == "mean":  # the image-tower prefix only: positions up to the prompt's end
            prefix = torch.arange(hidden.shape[1], device=hidden.device)[None, :] <= end[:, None]
            emb = POOLING["mean"](hidden, batch.model_inputs["attention_mask"] * prefix)
        else:
            emb = F.normalize(hidden[torch.arange(hidden.shape[0], device=hidden.device), end].float(), dim=-1)
        targets = batch.labels[:, 1:]
        keep = targets != -100
        logits = self.model.get_output_embeddings()(hidden[:, :-1][keep])
        return emb, F.cross_entropy(logits.float(), targets[keep])

    # ---- the Embedder API --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: Sequence, batch_size: int = 32, show_progress: bool = False) -> torch.Tensor:
        """`(len(images), hidden)` float32 L2-normalised on CPU; `images` are PIL images or paths."""
        from vladva.data.images import load_image

        def load(x):
            return x if hasattr(x, "convert") and not isinstance(x, (str, Path)) else load_image(x)

        return self._encode(
            list(images),
            batch_size,
            show_progress,
            "images",
            lambda chunk: self.embed_image_inputs(
                self.image_inputs([load(x).convert("RGB") for x in chunk]).to(self.device)
            ),
        )

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """`(len(texts), hidden)` float32 L2-normalised on CPU."""
        return self._encode(
            list(texts),
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

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity `(n, dim) x (m, dim) -> (n, m)` of L2-normalised embeddings."""
        return a @ b.T

    # ---- training set-up ---------------------------------------------------------------------------

    def prepare_for_training(self) -> int:
        """Freeze the base, add LoRA, make soft prompts (and optionally the projector) trainable.
        Returns the trainable parameter count."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.config.lora.enabled and self.peft_model is None:
            self.peft_model = apply_lora(self.model, self.adapter.language_model(self.model), self.config.lora)
        elif self.peft_model is not None:
            for n, p in self.model.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
        if self.config.train_projector:
            for p in self.adapter.projector(self.model).parameters():
                p.requires_grad_(True)
        if self.config.train_language_model:
            for n, p in self.adapter.language_model(self.model).named_parameters():
                if "lora_" not in n:
                    p.requires_grad_(True)
        if self.soft_prompts is not None:
            self.soft_prompts.requires_grad_(True)
        return self.num_trainable()

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        """Soft prompts and (if trained) projector weights: what goes into `vladva_weights.safetensors`."""
        out: dict[str, torch.Tensor] = {}
        if self.soft_prompts is not None:
            out["soft_prompt.image"] = self.soft_prompts.image.detach().float().cpu().contiguous()
            out["soft_prompt.text"] = self.soft_prompts.text.detach().float().cpu().contiguous()
        if self.config.train_projector:
            for n, p in self.adapter.projector(self.model).named_parameters():
                out[f"projector.{n}"] = p.detach().cpu().contiguous()
        if self.config.train_language_model:
            for n, p in self.adapter.language_model(self.model).named_parameters():
                if "lora_" not in n:
                    out[f"language_model.{n}"] = p.detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load_trained_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
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
            params = dict(self.adapter.projector(self.model).named_parameters())
            for n, v in proj.items():
                params[n].copy_(v)
        lm = {k.removeprefix("language_model."): v for k, v in tensors.items() if k.startswith("language_model.")}
        if lm:
            params = dict(self.adapter.language_model(self.model).named_parameters())
            for n, v in lm.items():
                if n not in params:
                    raise KeyError(f"language_model.{n}: no such language-model weight in this base")
                params[n].copy_(v)

    # ---- save / load / merge -------------------------------------------------------------------------

    def _meta(self, base_model: str | None, kind: str) -> dict:
        return {
            "format": kind,
            "version": 1,
            "model_type": self.model.config.model_type,
            "base_model": base_model,
            "vladva": config_to_dict(self.config),
        }

    def save_adapter(self, out_dir: Path | str, base_model: str | None = None, extra: dict | None = None) -> Path:
        """Write only what was trained: `adapter/` (PEFT LoRA), `vladva_weights.safetensors`, `vladva_config.json`."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.peft_model is not None:
            self.peft_model.save_pretrained(out_dir / ADAPTER_SUBDIR)
        tensors = self.trained_tensors()
        tensors.update(extra or {})
        save_file(tensors, out_dir / WEIGHTS_FILE)
        (out_dir / CONFIG_FILE).write_text(
            json.dumps(self._meta(base_model, "vladva-adapter"), indent=2), encoding="utf-8"
        )
        return out_dir

    def merge(self, out_dir: Path | str) -> Path:
        """Fold LoRA into the weights and write a standalone HF folder that `from_pretrained` loads.
        This object keeps working (it now holds the merged weights)."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        if self.peft_model is not None:
            self.model = self.peft_model.merge_and_unload()
            self.peft_model = None
        self.config.lora.enabled = False
        self.model.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
        tensors = {k: v for k, v in self.trained_tensors().items() if k.startswith("soft_prompt.")}
        save_file(tensors, out_dir / WEIGHTS_FILE)
        meta = self._meta(None, "vladva-merged")
        meta["vladva"]["train_projector"] = False  # projector and LM weights are in the model files now
        meta["vladva"]["train_language_model"] = False
        (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out_dir

    @classmethod
    def from_pretrained(
        cls,
        base_dir: Path | str,
        adapter_dir: Path | str | None = None,
        config: VladVAConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        trainable: bool = False,
    ) -> VladVA:
        """Load a base LVLM folder (or a merged VladVA folder) and optionally a trained adapter.

        `config` applies only to a plain base (zero-shot or before training); saved folders carry
        their own. `trainable=True` keeps LoRA weights trainable (to continue training).
        """
        from transformers import AutoConfig, AutoModelForImageTextToText

        base_dir = Path(base_dir)
        if not (base_dir / "config.json").is_file():
            raise FileNotFoundError(f"{base_dir}: not a Hugging Face model folder (no config.json)")
        # The model_type is checked before transformers sees the folder: an unsupported or custom
        # (auto_map) architecture is refused by name, and no code from the folder is ever run.
        try:
            adapter = adapter_for(read_model_type(base_dir))
        except UnsupportedModelError as e:
            raise UnsupportedModelError(f"{base_dir / 'config.json'}: {e}") from None
        AutoConfig.from_pretrained(base_dir, trust_remote_code=False)
        if not any(base_dir.glob("*.safetensors")):  # pickled .bin weights are never read
            raise FileNotFoundError(
                f"{base_dir}: no *.safetensors weights; vladva loads only safetensors "
                "(convert pickled .bin checkpoints first)"
            )
        model = AutoModelForImageTextToText.from_pretrained(
            base_dir, dtype=dtype or torch.float32, trust_remote_code=False, use_safetensors=True
        )
        processor = adapter.load_processor(base_dir)
        weights_dir, name = None, f"vladva:{base_dir.name}"
        if (base_dir / CONFIG_FILE).is_file():  # a merged folder
            config, _ = read_vladva_config(base_dir)
            weights_dir = base_dir
        if adapter_dir is not None:
            adapter_dir = resolve_adapter_dir(adapter_dir)
            check_adapter_dir(adapter_dir)  # a missing or truncated file is named before loading
            config, _ = read_vladva_config(adapter_dir)
            weights_dir = adapter_dir
            name += f"+{adapter_dir.name}"
        self = cls(model, processor, config, name=name)
        if adapter_dir is not None and self.config.lora.enabled:
            from peft import PeftModel

            self.peft_model = PeftModel.from_pretrained(
                self.model, adapter_dir / ADAPTER_SUBDIR, is_trainable=trainable
            )
        if weights_dir is not None and (weights_dir / WEIGHTS_FILE).is_file():
            self.load_trained_tensors(read_safetensors(weights_dir / WEIGHTS_FILE))
        if device is not None:
            self.to(device)
        self.eval()
        return self
