"""A word-level tokenizer for the embedded default models, trained on the training texts.

Words and punctuation are separate tokens and text is lower-cased, so the shapes world's
vocabulary (about a hundred words) maps one word to one token: token accuracy is word accuracy,
and "in one word" means one next token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMAGE)  # ids 0..4 in this order

IMAGE_SUMMARY_PROMPT = "Summary above image in one word:"
TEXT_SUMMARY_PROMPT = "Summary above sentence in one word:"
LONG_CAPTION_PROMPT = "Describe the image in detail:"
SHORT_CAPTION_PROMPT = "Describe the image in a few words:"
# Always in the vocabulary, whatever the training texts say.
FIXED_PROMPTS: tuple[str, ...] = (IMAGE_SUMMARY_PROMPT, TEXT_SUMMARY_PROMPT, LONG_CAPTION_PROMPT, SHORT_CAPTION_PROMPT)


@dataclass
class TokenizerConfig:
    """How the word-level tokenizer is built.

    `padding_side`: "left" suits batched generation; the embedding code must pick each row's
    last real token either way. `min_frequency`: rarer words become <unk>.
    """

    padding_side: str = "left"
    min_frequency: int = 1
    lowercase: bool = True

    def validate(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"tokenizer.padding_side must be 'left' or 'right', got {self.padding_side!r}")


def train_word_tokenizer(texts: Iterable[str], cfg: TokenizerConfig | None = None, add_eos: bool = False):
    """Train a word-level `tokenizers.Tokenizer` on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Encoding prepends <s>; with `add_eos` it also appends </s> (the CLIP text tower pools there).
    Special tokens get ids 0..4: <pad>, <unk>, <s>, </s>, <image>.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    cfg = cfg or TokenizerConfig()
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    if cfg.lowercase:
        tok.normalizer = normalizers.Lowercase()
    # Whitespace splits on \w+|[^\w\s]+: words and runs of punctuation become separate tokens.
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=cfg.min_frequency)
    tok.train_from_iterator(_chain(list(FIXED_PROMPTS), texts), trainer=trainer)
    return wrap_tokenizer(tok, cfg.padding_side, add_eos=add_eos)


def _chain(first: list[str], rest: Iterable[str]):
    yield from first
    yield from rest


def wrap_tokenizer(tok, padding_side: str = "left", add_eos: bool = False):
    """`tokenizers.Tokenizer` -> `PreTrainedTokenizerFast` with vladva's special tokens and template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _clone(tok)
    single = f"{BOS} $A" + (f" {EOS}" if add_eos else "")
    special = [(BOS, tok.token_to_id(BOS))] + ([(EOS, tok.token_to_id(EOS))] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=single, pair=f"{single} $B", special_tokens=special)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        padding_side=padding_side,
        clean_up_tokenization_spaces=True,
        model_max_length=1024,
    )
    return fast


def _clone(tok):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tok.to_str())
