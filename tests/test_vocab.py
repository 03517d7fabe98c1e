"""`vladva.data.vocab.unknown_token_rate` on hand-made tokenizers and on the shipped base's."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from vladva.data.vocab import load_tokenizer, unk_token_id, unknown_token_rate


def _word_level(words: list[str]) -> Tokenizer:
    vocab = {"<unk>": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_word_level_counts_unknown_tokens_and_names_the_words_lost():
    tok = _word_level(["a", "green", "red"])
    # 7 tokens, 3 unknown: "digit" twice (once capitalised), "eight" once.
    rate, lost = unknown_token_rate(tok, ["a green digit eight", "a red Digit"])
    assert rate == pytest.approx(3 / 7)
    assert lost == [("digit", 2), ("eight", 1)]
    assert unknown_token_rate(tok, ["a red", "green"]) == (0.0, [])
    assert unknown_token_rate(tok, []) == (0.0, [])
    assert unknown_token_rate(tok, ["x y z"], max_examples=1)[1] == [("x", 1)]


def test_a_transformers_tokenizer_gives_the_same_answer():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_word_level(["a", "green", "red"]), unk_token="<unk>", bos_token="<s>"
    )
    assert unk_token_id(tok) == 0
    assert unknown_token_rate(tok, ["a green digit eight", "a red Digit"]) == (3 / 7, [("digit", 2), ("eight", 1)])


def test_a_tokenizer_without_an_unknown_token_loses_nothing():
    tok = Tokenizer(models.BPE({"a": 0, "b": 1}, [], unk_token=None))
    assert unk_token_id(tok) is None
    assert unknown_token_rate(tok, ["ab ba"]) == (0.0, [])


def test_the_shipped_base_reads_its_own_words_only():
    tok = load_tokenizer("default")
    assert unknown_token_rate(tok, ["a red circle left of a blue square"]) == (0.0, [])
    rate, lost = unknown_token_rate(tok, ["a green digit eight"])
    assert rate == 0.5 and lost == [("digit", 1), ("eight", 1)]
    rate, lost = unknown_token_rate(tok, ["beneath the azure box rests a crimson disc"])
    assert rate == pytest.approx(6 / 8) and dict(lost) == dict.fromkeys(
        ("beneath", "azure", "box", "rests", "crimson", "disc"), 1
    )
