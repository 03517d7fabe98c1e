"""Each tower's model inputs, built from images and sentences: the one place that knows the layout.

Image tower: image + image prompt (in the chat template when the processor has one); text tower:
sentence + text prompt; next-token input: the image tower's sequence followed by a long caption,
labelled only on the caption. `TowerInputBuilder` holds no weights (processor, prompts and the
backbone family only), so a training collator can build batches in DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vladva.model.families import BackboneFamily
from vladva.model.pooling import last_token_index
from vladva.model.prompts import PromptConfig, PromptLayout, measure_layout

log = logging.getLogger(__name__)


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

    def __len__(self) -> int:
        return int(self.model_inputs["input_ids"].shape[0])

    @property
    def n_tokens(self) -> int:
        """Real (unpadded) positions in the batch (0 for inputs that are pixels only)."""
        mask = self.model_inputs.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    @property
    def n_label_tokens(self) -> int:
        """Positions the next-token loss averages over (targets shifted by one, not -100)."""
        return int((self.labels[:, 1:] != -100).sum()) if self.labels is not None else 0


class TowerInputBuilder:
    """`image_inputs`, `text_inputs`, `ntp_inputs` for one model: its processor, prompts and family.

    `extra_prompt_tokens`: soft-prompt tokens placed before each prompt (0 without soft prompts)."""

    def __init__(self, processor, family: BackboneFamily, prompts: PromptConfig, extra_prompt_tokens: int = 0):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.family = family
        self.prompts = prompts
        self.extra_prompt_tokens = extra_prompt_tokens
        self._reported_cuts: set[str] = set()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.image_layout = measure_layout(self.tokenizer, self.image_text(), self.prompt_text("image"))
        self.text_layout = measure_layout(self.tokenizer, self.text_text("a"), self.prompt_text("text"))

    # ---- each tower's text -----------------------------------------------------------------------

    def prompt_text(self, tower: str) -> str:
        prompt = self.prompts.image_prompt if tower == "image" else self.prompts.text_prompt
        filler = self.tokenizer.pad_token or self.tokenizer.unk_token
        return filler * self.extra_prompt_tokens + prompt

    def _use_chat(self) -> bool:
        return self.prompts.use_chat_template and bool(getattr(self.processor, "chat_template", None))

    def image_text(self) -> str:
        prompt = self.prompt_text("image")
        if self._use_chat():
            content = [self.family.chat_image_content(), {"type": "text", "text": prompt}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        return self.family.image_token_text(self.processor) + self.prompts.separator + prompt

    def text_text(self, sentence: str) -> str:
        body = sentence + self.prompts.separator + self.prompt_text("text")
        if self._use_chat():
            return self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": body}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
        return body

    def truncate(self, sentence: str, max_tokens: int) -> str:
        """`sentence` stripped and cut after its first `max_tokens` tokens."""
        sentence = sentence.strip()
        # Asking for at most max_tokens + 1 tokens says whether to cut, and keeps transformers from
        # warning that a long sentence "will result in indexing errors": it is cut here, never indexed whole.
        enc = self.tokenizer(
            sentence, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_tokens + 1
        )
        if len(enc["input_ids"]) <= max_tokens:
            return sentence
        self._report_cut("a caption", len(sentence), max_tokens, "model.prompts.max_text_tokens")
        return sentence[: enc["offset_mapping"][max_tokens - 1][1]]

    def _report_cut(self, what: str, chars: int, max_tokens: int, key: str) -> None:
        """Say once per kind of text what vladva does with text over its token limit."""
        if key in self._reported_cuts:
            return
        self._reported_cuts.add(key)
        log.warning(
            "%s of %s characters is longer than %s = %d tokens: vladva cuts it to its first %d tokens "
            "(as documented; later cuts are not reported)",
            what,
            f"{chars:,}",
            key,
            max_tokens,
            max_tokens,
        )

    # ---- batches ---------------------------------------------------------------------------------

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
        side = padding_side or self.prompts.padding_side
        texts = [self.image_text()] * len(images)
        mi = self.family.image_inputs(self.processor, texts, list(images), side)
        starts = self._starts(mi["attention_mask"], self.image_layout)
        self._check_prompt(mi["input_ids"], starts, self.image_layout)
        return TowerInputs(mi, starts)

    def text_inputs(self, texts: Sequence[str], padding_side: str | None = None) -> TowerInputs:
        """Token ids for the text tower; each sentence is cut to `prompts.max_text_tokens` first."""
        side = padding_side or self.prompts.padding_side
        full = [self.text_text(self.truncate(t, self.prompts.max_text_tokens)) for t in texts]
        enc = self.tokenizer(full, return_tensors="pt", padding=True, padding_side=side)
        mi = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        starts = self._starts(mi["attention_mask"], self.text_layout)
        self._check_prompt(mi["input_ids"], starts, self.text_layout)
        return TowerInputs(mi, starts)

    def ntp_inputs(self, images: Sequence, long_captions: Sequence[str]) -> TowerInputs:
        """Image + image prompt followed by the long caption (+ EOS); labels only on caption tokens."""
        eos = self.tokenizer.eos_token_id
        # In a chat template the caption is the assistant's turn, which starts its own line;
        # without one it continues the prompt's line after a space.
        lead = "" if self._use_chat() else " "
        limit = self.prompts.max_long_caption_tokens
        continuations = []
        for cap in long_captions:
            cap_ids = self.tokenizer(
                lead + cap.strip(), add_special_tokens=False, truncation=True, max_length=limit + 1
            )["input_ids"]
            if len(cap_ids) > limit:
                self._report_cut("a long caption", len(cap.strip()), limit, "model.prompts.max_long_caption_tokens")
            continuations.append(cap_ids[:limit] + ([eos] if eos is not None else []))
        return self.continuation_inputs(images, continuations)

    def continuation_inputs(self, images: Sequence, continuations: Sequence[Sequence[int]]) -> TowerInputs:
        """The image tower's sequence of each image followed by its row of `continuations` (token
        ids), right-padded; labels are the continuation tokens (-100 elsewhere). The next-token
        loss trains on it, and generation grows it one token at a time."""
        base = self.image_inputs(images, padding_side="right")
        ids, mask = base.model_inputs["input_ids"], base.model_inputs["attention_mask"]
        rows, labels = [], []
        for i, cont in enumerate(continuations):
            real = ids[i][mask[i].bool()].tolist()
            rows.append(real + list(cont))
            labels.append([-100] * len(real) + list(cont))
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
