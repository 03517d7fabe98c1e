"""Can the model read the user's words? The unknown-token rate of texts against a tokenizer.

A word-level tokenizer (the embedded default base knows only the 82 words of the synthetic shapes
world) maps every other word to `<unk>`: "a green digit eight" becomes `a green <unk> <unk>`, and
the embedding silently ignores "digit eight". Subword and byte-level tokenizers (LLaVA, Qwen2-VL,
SmolVLM) have no or almost no unknown pieces. Every command that reads texts for a model
(`check-manifest --model`, `train`, `eval`, `embed`, `index`, `search`, `serve`) calls
`warn_unknown_tokens`, which says so above `UNK_WARN_RATE`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence

# Above this fraction of unknown word pieces a command warns (real tokenizers are at ~0).
UNK_WARN_RATE = 0.01
# Texts tokenized per check: an evenly spaced sample keeps big manifests cheap.
MAX_CHECKED_TEXTS = 5000


def unknown_token_rate(tokenizer, texts: Sequence[str]) -> tuple[float, list[str]]:
    """`(rate, examples)`: the fraction of the word pieces of `texts` (special tokens not added)
    that the tokenizer maps to its unknown id, and the distinct words behind them, most frequent
    first. `(0.0, [])` for a tokenizer without an unknown token (byte-level BPE) or no pieces."""
    unk = getattr(tokenizer, "unk_token_id", None)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if unk is None or not texts:
        return 0.0, []
    try:
        enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):  # a slow tokenizer: no offsets
        enc = tokenizer(list(texts), add_special_tokens=False)
        offsets = None
    total, unknown, words = 0, 0, Counter()
    for i, ids in enumerate(enc["input_ids"]):
        total += len(ids)
        for j, token in enumerate(ids):
            if token != unk:
                continue
            unknown += 1
            if offsets is not None:
                start, end = offsets[i][j]
                words[texts[i][start:end]] += 1
    if offsets is None and unknown:  # name the words by tokenizing each one alone
        for word in {w for t in texts for w in t.split()}:
            if unk in tokenizer(word, add_special_tokens=False)["input_ids"]:
                words[word] += 1
    return (unknown / total if total else 0.0), [w for w, _ in words.most_common()]


def _sample(texts: Sequence[str], limit: int) -> list[str]:
    if len(texts) <= limit:
        return list(texts)
    step = len(texts) / limit
    return [texts[int(i * step)] for i in range(limit)]


def warn_unknown_tokens(
    tokenizer,
    texts: Sequence[str],
    what: str,
    threshold: float = UNK_WARN_RATE,
    warn: Callable[[str], None] | None = None,
) -> tuple[float, list[str]]:
    """Check `texts` (at most `MAX_CHECKED_TEXTS`, evenly spaced) and, when more than `threshold`
    of their word pieces are unknown to `tokenizer`, print one warning naming `what` (e.g. "the
    training captions of train.jsonl"), the rate, example words and what to do. `warn` receives
    the message (default: stderr). A `None` tokenizer (a model without one) checks nothing.
    Returns `(rate, examples)`."""
    if tokenizer is None:
        return 0.0, []
    rate, examples = unknown_token_rate(tokenizer, _sample(texts, MAX_CHECKED_TEXTS))
    if rate > threshold:
        shown = ", ".join(repr(w) for w in examples[:8]) + (", ..." if len(examples) > 8 else "")
        message = (
            f"warning: {100 * rate:.1f}% of the word pieces of {what} are unknown to the model's tokenizer "
            f"(they become {getattr(tokenizer, 'unk_token', '<unk>')} and the model cannot read them), e.g. "
            f"{shown}. The embedded default base reads only the shapes world's words (README, 'Your own data'); "
            "for your own vocabulary use a base LVLM with a real tokenizer (LLaVA, Qwen2-VL, SmolVLM)."
        )
        (warn or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
    return rate, examples


def tokenizer_of(model) -> object | None:
    """The tokenizer a model (a `VladVA`, the CLIP-style baseline, ...) reads texts with, or None."""
    return getattr(model, "tokenizer", None)


__all__ = ["MAX_CHECKED_TEXTS", "UNK_WARN_RATE", "tokenizer_of", "unknown_token_rate", "warn_unknown_tokens"]
