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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

# Above this fraction of unknown word pieces a command warns (real tokenizers are at ~0).
UNK_WARN_RATE = 0.01
# Texts tokenized per check: an evenly spaced sample keeps big manifests cheap.
MAX_CHECKED_TEXTS = 5000
# Characters of each text checked: the models read only a caption's first tokens anyway, and a
# huge text is neither tokenized whole nor reported by transformers as "too long".
MAX_CHECKED_CHARS = 1000


def load_tokenizer(name: str | Path):
    """A tokenizer to measure with: `"default"` (the shipped base LVLM's), a folder holding
    `tokenizer.json` (read with the `tokenizers` library, without loading transformers), or
    anything `transformers.AutoTokenizer.from_pretrained` accepts."""
    from vladva.pretrained import resolve_base

    path = resolve_base(name)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path / "tokenizer.json"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def unk_token_id(tokenizer) -> int | None:
    """The id the tokenizer gives words it cannot read, or None when it has none (byte-level BPE)."""
    if hasattr(tokenizer, "encode_batch"):  # a `tokenizers.Tokenizer`
        model = tokenizer.model
        token = getattr(model, "unk_token", None)
        if token:
            return tokenizer.token_to_id(token)
        return getattr(model, "unk_id", None)  # Unigram keeps an id
    return getattr(tokenizer, "unk_token_id", None)


def _ids_and_spans(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]] | None]]:
    """Per text, its token ids without special tokens and each token's character span (None
    where the tokenizer cannot give spans: slow transformers tokenizers)."""
    if hasattr(tokenizer, "encode_batch"):
        return [(e.ids, e.offsets) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    try:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return list(zip(enc["input_ids"], enc["offset_mapping"]))
    except (NotImplementedError, ValueError):
        enc = tokenizer(texts, add_special_tokens=False)
        return [(ids, None) for ids in enc["input_ids"]]


def unknown_tokens(tokenizer, texts: Iterable[str]) -> tuple[float, Counter]:
    """`(rate, lost)`: the share of `texts`' tokens (special tokens not added) that `tokenizer` maps to
    its unknown id, in [0, 1] (0.0 for no tokens or a tokenizer without an unknown token: byte-level
    BPE), and a `Counter` of what was lost: the lower-cased text each unknown token stood for ("digit"
    when "a green digit" became "a green <unk>"; for a slow tokenizer without character spans,
    each word that holds an unknown piece). `tokenizer`: a `transformers` tokenizer or a `tokenizers.Tokenizer`
    (`load_tokenizer`)."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    unk = unk_token_id(tokenizer)
    if unk is None or not texts:
        return 0.0, Counter()
    total, lost = 0, Counter()
    for text, (ids, spans) in zip(texts, _ids_and_spans(tokenizer, texts)):
        total += len(ids)
        if spans is None:  # no character spans: find the words that hold an unknown piece one by one
            n_unknown = sum(token_id == unk for token_id in ids)
            if n_unknown:
                words = [w.lower() for w in text.split()]
                culprits = [w for w, (w_ids, _) in zip(words, _ids_and_spans(tokenizer, words)) if unk in w_ids]
                lost.update(culprits[:n_unknown] or ["<unk>"] * n_unknown)
                if len(culprits) < n_unknown and culprits:
                    lost["<unk>"] += n_unknown - len(culprits)
            continue
        for k, token_id in enumerate(ids):
            if token_id == unk:
                lost[text[spans[k][0] : spans[k][1]].lower()] += 1
    return (sum(lost.values()) / total if total else 0.0), lost


def unknown_token_rate(tokenizer, texts: Sequence[str]) -> tuple[float, list[str]]:
    """`(rate, examples)`: the fraction of the word pieces of `texts` that the tokenizer maps to its
    unknown id (`unknown_tokens`), and the distinct words behind them, most frequent first."""
    rate, lost = unknown_tokens(tokenizer, texts)
    return rate, [w for w, _ in lost.most_common()]


def _sample(texts: Sequence[str], limit: int) -> list[str]:
    """At most `limit` of `texts`, evenly spaced, each cut to its first `MAX_CHECKED_CHARS` characters."""
    step = max(1.0, len(texts) / limit)
    picked = [texts[int(i * step)] for i in range(min(limit, len(texts)))]
    return [t[:MAX_CHECKED_CHARS] if isinstance(t, str) else t for t in picked]


def warn_unknown_tokens(
    tokenizer,
    texts: Sequence[str],
    what: str,
    threshold: float = UNK_WARN_RATE,
    warn: Callable[[str], None] | None = None,
) -> tuple[float, list[str]]:
    """Check `texts` (at most `MAX_CHECKED_TEXTS`, evenly spaced, their first `MAX_CHECKED_CHARS`
    characters) and, when more than `threshold`
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


__all__ = [
    "MAX_CHECKED_TEXTS",
    "UNK_WARN_RATE",
    "load_tokenizer",
    "tokenizer_of",
    "unknown_token_rate",
    "unknown_tokens",
    "warn_unknown_tokens",
]
