"""How much of a text set a model's tokenizer can read: the unknown-token rate.

A word-level tokenizer (the embedded default base has one of 82 words) maps every word outside
its vocabulary to one unknown token, so "a green digit eight" reaches the model as
"a green <unk> <unk>" and a search for it matches colour only, silently. `unknown_token_rate`
measures that, so a command can warn before it trains, evaluates or indexes on such texts.
Byte-level tokenizers (GPT-2, Llama, SmolLM2) never produce an unknown token: their rate is 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path


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


def unknown_token_rate(tokenizer, texts: Iterable[str], max_examples: int = 10) -> tuple[float, list[tuple[str, int]]]:
    """The share of `texts`' tokens that `tokenizer` maps to its unknown id, and what was lost.

    Args:
        tokenizer: a `transformers` tokenizer or a `tokenizers.Tokenizer` (see `load_tokenizer`).
        texts: the texts a command will read.
        max_examples: how many lost words to return.

    Returns:
        `(rate, examples)`: `rate` in [0, 1] (unknown tokens / all tokens, special tokens not
        counted; 0.0 for no tokens or a tokenizer without an unknown token); `examples`: up to
        `max_examples` `(word, count)` pairs, most frequent first, each the lower-cased text an
        unknown token stood for ("digit" when "a green digit" became "a green <unk>"; for a
        slow tokenizer without character spans, the unknown token itself).
    """
    texts = list(texts)
    unk = unk_token_id(tokenizer)
    if unk is None or not texts:
        return 0.0, []
    total, lost = 0, Counter()
    for text, (ids, spans) in zip(texts, _ids_and_spans(tokenizer, texts)):
        total += len(ids)
        for k, token_id in enumerate(ids):
            if token_id == unk:
                lost[text[spans[k][0] : spans[k][1]].lower() if spans else "<unk>"] += 1
    rate = sum(lost.values()) / total if total else 0.0
    return rate, lost.most_common(max_examples)
