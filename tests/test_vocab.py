"""Words a model cannot read are reported, never lost silently (issue 15, item 1): the unknown-token
rate against a tokenizer, and its warning in `check-manifest --model`, `train`, `eval`, `embed`,
`index`, `search` and `serve`."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from typer.testing import CliRunner

from vladva.cli import app
from vladva.data.manifest import Record, write_manifest
from vladva.data.vocab import (
    UNK_WARN_RATE,
    load_tokenizer,
    unk_token_id,
    unknown_token_rate,
    unknown_tokens,
    warn_unknown_tokens,
)
from vladva.toyworld.toy_embedder import TOY_SPEC, ColourHistogramEmbedder

UNKNOWN = "a green digit eight"  # 'digit' and 'eight' are not among the shipped base's 82 words


@pytest.fixture(scope="module")
def tokenizer():
    """The shipped base's word-level tokenizer (a few kB, no weights)."""
    from transformers import AutoTokenizer

    from vladva.pretrained import shipped_base_dir

    return AutoTokenizer.from_pretrained(shipped_base_dir())


@pytest.fixture()
def digits_manifest(tmp_path):
    """Two images whose captions use words outside the shipped vocabulary."""
    for name, colour in (("eight", "green"), ("seven", "red")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{name}.png")
    records = [
        Record("8", tmp_path / "eight.png", [UNKNOWN], "The image shows a green digit eight."),
        Record("7", tmp_path / "seven.png", ["a red digit seven"]),
    ]
    write_manifest(tmp_path / "digits.jsonl", records)
    return tmp_path / "digits.jsonl"


def test_rate_counts_the_word_pieces_mapped_to_unknown(tokenizer):
    assert len(tokenizer) == 82  # the number the README gives
    rate, words = unknown_token_rate(tokenizer, [UNKNOWN, "a red circle"])
    assert rate == pytest.approx(2 / 7) and words == ["digit", "eight"]
    assert unknown_token_rate(tokenizer, ["a small red circle left of a blue square"]) == (0.0, [])
    assert unknown_token_rate(tokenizer, []) == (0.0, [])


def test_tokenizers_without_an_unknown_token_or_offsets():
    """Byte-level BPE has no unknown token: nothing is lost. A slow tokenizer without offsets still
    names the words, found by tokenizing each word alone."""

    class ByteLevel:
        unk_token_id = None

    assert unknown_token_rate(ByteLevel(), ["anything at all"]) == (0.0, [])

    class Slow:
        unk_token_id = 0
        vocab: ClassVar[dict[str, int]] = {"a": 1, "red": 2, "circle": 3}

        def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False):
            if return_offsets_mapping:
                raise NotImplementedError("return_offset_mapping is not available for slow tokenizers")
            one = isinstance(texts, str)
            ids = [[self.vocab.get(w, 0) for w in t.split()] for t in ([texts] if one else texts)]
            return {"input_ids": ids[0] if one else ids}

    rate, words = unknown_token_rate(Slow(), ["a red square", "a red circle"])
    assert rate == pytest.approx(1 / 6) and words == ["square"]


def test_warning_names_what_the_rate_the_words_and_what_to_do(tokenizer):
    said = []
    rate, _ = warn_unknown_tokens(tokenizer, [UNKNOWN], "the captions of m.jsonl", warn=said.append)
    assert rate == 0.5 and len(said) == 1
    message = said[0]
    assert "50.0% of the word pieces of the captions of m.jsonl" in message and "'digit', 'eight'" in message
    assert "real tokenizer" in message and "Your own data" in message
    said.clear()
    warn_unknown_tokens(tokenizer, ["a red circle"] * 200 + [UNKNOWN], "x", warn=said.append)  # 2/602 < 1%
    assert UNK_WARN_RATE == 0.01 and said == []
    assert warn_unknown_tokens(None, [UNKNOWN], "x", warn=said.append) == (0.0, []) and said == []


def test_check_manifest_against_a_model(digits_manifest):
    runner = CliRunner()
    r = runner.invoke(app, ["check-manifest", str(digits_manifest), "--model", "default"])
    assert r.exit_code == 0, r.output  # a warning, not a broken manifest
    assert "unknown to the model's tokenizer" in r.stderr and "'digit'" in r.stderr
    assert "% of caption word pieces unknown to the model" in r.stdout
    r = runner.invoke(app, ["check-manifest", str(digits_manifest), "--model", "default", "--json"])
    found = json.loads(r.stdout)[0]
    assert found["unknown_token_rate"] > 0.2 and found["unknown_words"][:2] == ["digit", "eight"]
    r = runner.invoke(app, ["check-manifest", str(digits_manifest)])  # without --model: no tokenizer check
    assert r.exit_code == 0 and "unknown" not in r.output
    r = runner.invoke(app, ["check-manifest", str(digits_manifest), "--model", "nosuch:x"])
    assert r.exit_code == 2 and "expected one of" in r.stderr and "default" in r.stderr


def test_embed_warns_before_encoding(tmp_path):
    (tmp_path / "texts.txt").write_text("a red digit seven\na blue circle\n")
    r = CliRunner().invoke(
        app, ["embed", "--model", "default", "--texts", str(tmp_path / "texts.txt"), "--out", str(tmp_path / "t.npy")]
    )
    assert r.exit_code == 0, r.output
    assert "of the sentences of" in r.stderr and "'digit', 'seven'" in r.stderr


def test_train_warns_before_training(digits_manifest, monkeypatch, capsys):
    """The check runs right after the base loads (stopped there: the warning is what is tested)."""
    from vladva.config import load_config
    from vladva.model.vladva import VladVA
    from vladva.train.config import TrainConfig
    from vladva.train.trainer import train

    class Stop(Exception):
        pass

    def stop(self):
        raise Stop

    monkeypatch.setattr(VladVA, "prepare_for_training", stop)
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.train={digits_manifest}", "data.val=null", f"output_dir={digits_manifest.parent / 'run'}"],
    )
    with pytest.raises(Stop):
        train(cfg)
    err = capsys.readouterr().err
    assert f"the captions of {digits_manifest}" in err and "'digit'" in err


def test_eval_records_the_rate_and_warns(tmp_path, tokenizer, capsys):
    from vladva.eval.models import LoadedModel
    from vladva.eval.report import as_report, summary_rows
    from vladva.eval.runner import EvalConfig, run_evaluation

    (tmp_path / "images").mkdir()
    images = []
    for i, (colour, caption) in enumerate((("green", UNKNOWN), ("red", "a red circle"))):
        Image.new("RGB", (32, 32), colour).save(tmp_path / "images" / f"{i}.png")
        images.append(
            {"imgid": i, "filepath": "images", "filename": f"{i}.png", "split": "test", "sentences": [{"raw": caption}]}
        )
    (tmp_path / "dataset_digits.json").write_text(json.dumps({"dataset": "digits", "images": images}))
    embedder = ColourHistogramEmbedder()
    embedder.tokenizer = tokenizer
    model = LoadedModel("toy", TOY_SPEC, embedder, "toy-vocab-test")
    cfg = EvalConfig(paths={"retrieval_json": str(tmp_path / "dataset_digits.json")}, use_cache=False)
    results = run_evaluation([model], cfg, log=lambda *_: None)
    entry = results["models"][0]
    assert entry["unknown_token_rate"] == pytest.approx(2 / 7, abs=1e-4) and entry["unknown_words"] == [
        "digit",
        "eight",
    ]
    assert "the texts 'toy' read in this evaluation" in capsys.readouterr().err
    header, rows = summary_rows(as_report(results))
    assert rows[0][header.index("unknown words %")] == "28.6"


def test_index_search_and_serve_warn(digits_manifest, tokenizer, tmp_path, monkeypatch):
    """The captions an index stores and a query's words are checked against the model's tokenizer."""
    import uvicorn

    monkeypatch.setattr(ColourHistogramEmbedder, "tokenizer", tokenizer, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    runner = CliRunner()
    out = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--model", TOY_SPEC, "--images", str(digits_manifest), "--out", str(out)])
    assert r.exit_code == 0 and "the captions of" in r.stderr and "'digit'" in r.stderr, r.output
    r = runner.invoke(app, ["search", "--index", str(out), "a red digit seven", "--json"])
    assert r.exit_code == 0 and "the query 'a red digit seven'" in r.stderr and "'digit', 'seven'" in r.stderr
    assert json.loads(r.stdout)["results"]  # the search still runs: a warning, not an error
    r = runner.invoke(app, ["search", "--index", str(out), "a red circle", "--json"])
    assert r.exit_code == 0 and "unknown" not in r.stderr
    r = runner.invoke(app, ["serve", "--index", str(out)])
    assert r.exit_code == 0 and f"the captions stored in {out}" in r.stderr


# ---- the rate itself, on hand-made tokenizers and on the shipped base's -------------------------


def _word_level(words: list[str]) -> Tokenizer:
    vocab = {"<unk>": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_word_level_counts_unknown_tokens_and_names_the_words_lost():
    tok = _word_level(["a", "green", "red"])
    # 7 tokens, 3 unknown: "digit" twice (once capitalised), "eight" once.
    rate, lost = unknown_tokens(tok, ["a green digit eight", "a red Digit"])
    assert rate == pytest.approx(3 / 7)
    assert lost.most_common() == [("digit", 2), ("eight", 1)]
    assert unknown_token_rate(tok, ["a green digit eight", "a red Digit"]) == (pytest.approx(3 / 7), ["digit", "eight"])
    assert unknown_token_rate(tok, ["a red", "green"]) == (0.0, [])
    assert unknown_token_rate(tok, []) == (0.0, [])


def test_a_transformers_tokenizer_gives_the_same_answer():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_word_level(["a", "green", "red"]), unk_token="<unk>", bos_token="<s>"
    )
    assert unk_token_id(tok) == 0
    assert unknown_token_rate(tok, ["a green digit eight", "a red Digit"]) == (3 / 7, ["digit", "eight"])


def test_a_tokenizer_without_an_unknown_token_loses_nothing():
    tok = Tokenizer(models.BPE({"a": 0, "b": 1}, [], unk_token=None))
    assert unk_token_id(tok) is None
    assert unknown_token_rate(tok, ["ab ba"]) == (0.0, [])


def test_the_shipped_base_reads_its_own_words_only():
    tok = load_tokenizer("default")
    assert unknown_token_rate(tok, ["a red circle left of a blue square"]) == (0.0, [])
    rate, lost = unknown_token_rate(tok, ["a green digit eight"])
    assert rate == 0.5 and lost == ["digit", "eight"]
    rate, lost = unknown_tokens(tok, ["beneath the azure box rests a crimson disc"])
    assert rate == pytest.approx(6 / 8) and dict(lost) == dict.fromkeys(
        ("beneath", "azure", "box", "rests", "crimson", "disc"), 1
    )
