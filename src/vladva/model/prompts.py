"""The summary prompts and where their tokens sit in each tower's input sequence.

Image tower: `<image>{separator}{image_prompt}`; text tower: `{sentence}{separator}{text_prompt}`,
wrapped in the model's chat template when its processor has one (then the template's assistant
header follows the prompt). The soft prompt replaces the prompt tokens' embeddings, so we must
know, for every row, which positions hold them: since everything after the content is the same
for every row, they are counted back from the row's last real token (`PromptLayout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PromptConfig:
    """How each tower's text is built (defaults: E5-V's prompts)."""

    image_prompt: str = "Summary above image in one word:"
    text_prompt: str = "Summary above sentence in one word:"
    separator: str = "\n"
    # Use the processor's chat template (user turn + generation prompt) when it has one.
    use_chat_template: bool = True
    padding_side: str = "right"
    # Sentences are cut to this many tokens (the prompt is never cut).
    max_text_tokens: int = 77
    # Long captions for the next-token loss are cut to this many tokens.
    max_long_caption_tokens: int = 256

    def validate(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"prompts.padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if not self.image_prompt.strip() or not self.text_prompt.strip():
            raise ValueError("prompts.image_prompt and prompts.text_prompt must not be empty")
        if self.max_text_tokens < 1 or self.max_long_caption_tokens < 1:
            raise ValueError("prompts.max_text_tokens and prompts.max_long_caption_tokens must be >= 1")


@dataclass
class PromptLayout:
    """Token layout of the part of a tower's sequence that follows the content.

    `prompt_ids`: the prompt's token ids as they appear in context; `n_suffix`: tokens after the
    prompt (chat-template tail, appended special tokens). Row i's prompt occupies positions
    `last_i - n_suffix - len(prompt_ids) + 1 ... last_i - n_suffix`.
    """

    prompt_ids: list[int]
    n_suffix: int
    prompt_text: str = ""
    tail_ids: list[int] = field(default_factory=list)

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)


def measure_layout(tokenizer, full_text: str, prompt_text: str) -> PromptLayout:
    """Find the prompt's tokens inside `full_text` (the last occurrence) from character offsets."""
    start = full_text.rfind(prompt_text)
    if start < 0:
        raise ValueError(f"prompt {prompt_text!r} not found in the built sequence {full_text!r}")
    end = start + len(prompt_text)
    enc = tokenizer(full_text, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    prompt_ids, n_suffix, seen_prompt = [], 0, False
    for tid, (a, b) in zip(ids, offsets):
        if b <= a:  # special token added by the post-processor: before or after the prompt
            if seen_prompt:
                n_suffix += 1
            continue
        if a >= end:
            n_suffix += 1
        elif b > start:
            if n_suffix:
                raise ValueError(f"prompt tokens of {prompt_text!r} are not contiguous in {full_text!r}")
            prompt_ids.append(tid)
            seen_prompt = True
    if not prompt_ids:
        raise ValueError(f"prompt {prompt_text!r} produced no tokens")
    tail = ids[len(ids) - n_suffix :] if n_suffix else []
    return PromptLayout(prompt_ids, n_suffix, prompt_text, list(tail))
