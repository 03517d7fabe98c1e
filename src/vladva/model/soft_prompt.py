"""Soft prompts: the summary prompt's token embeddings made trainable, one set per tower.

They are injected by a forward hook on the model's input-embedding layer, which overwrites the
prompt positions of the current batch. That works for every backbone (the image features are
scattered into other positions afterwards) and leaves the Hugging Face forward untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SoftPromptConfig:
    enabled: bool = True
    # Extra trainable tokens placed before the handcrafted prompt (initialised to its mean embedding).
    extra_tokens: int = 0

    def validate(self) -> None:
        if self.extra_tokens < 0:
            raise ValueError(f"soft_prompt.extra_tokens must be >= 0, got {self.extra_tokens}")


class SoftPrompts(nn.Module):
    """`image`: `(n_image_tokens, hidden)`, `text`: `(n_text_tokens, hidden)` trainable embeddings.

    The vectors are read in this module's own `forward` (called by the hook), not in the hook
    itself: engines that gather sharded parameters around a module's forward (DeepSpeed ZeRO-3)
    then see them used."""

    def __init__(self, image: torch.Tensor, text: torch.Tensor):
        super().__init__()
        self.image = nn.Parameter(image.detach().clone().float())
        self.text = nn.Parameter(text.detach().clone().float())
        # prompt lengths as plain ints: a sharded parameter's own shape may be its shard's
        self.lengths = {"image": image.shape[0], "text": text.shape[0]}
        self._active: tuple[str, torch.Tensor, torch.Tensor] | None = None
        self._fired = 0

    def get(self, tower: str) -> nn.Parameter:
        return self.image if tower == "image" else self.text

    def attach(self, embedding: nn.Module):
        """Register the injection hook on `embedding` (the model's input embeddings)."""
        return embedding.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self._active is None:
            return output
        _, rows, cols = self._active
        if output.dim() != 3 or int(rows.max()) >= output.shape[0] or int(cols.max()) >= output.shape[1]:
            return output
        self._fired += 1
        return self(output)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`embeddings` `(batch, seq, hidden)` with the active tower's prompt written at its positions."""
        tower, rows, cols = self._active
        vectors = self.get(tower)
        out = embeddings.clone()
        out[rows, cols] = vectors.repeat(rows.shape[0] // self.lengths[tower], 1).to(out.dtype)
        return out

    @contextlib.contextmanager
    def inject(self, tower: str, starts: torch.Tensor):
        """Within the block, embedding lookups put this tower's prompt at `starts[i]...` of row i."""
        n = self.lengths[tower]
        rows = torch.arange(starts.shape[0], device=starts.device).repeat_interleave(n)
        cols = (starts[:, None] + torch.arange(n, device=starts.device)[None, :]).reshape(-1)
        self._active = (tower, rows, cols)
        self._fired = 0
        try:
            yield
        finally:
            self._active = None
        if self._fired == 0:
            raise RuntimeError("soft prompt was not injected: the model never called its input embeddings")
