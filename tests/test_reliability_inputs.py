"""Bad inputs: images, captions, manifest lines, config keys and values, and bad samples in training.

Every case names what goes in (`what`) and what a user sees (`expect`); the case tables are read
by `scripts/make_reliability_doc.py` to write the behaviour table in docs/reliability.md, so the
docs say exactly what these tests assert.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vladva.config import ConfigError, load_config
from vladva.data.images import MAX_PIXELS, ImageLoadError, load_image
from vladva.data.manifest import ManifestError, iter_manifest, read_manifest
from vladva.train.config import TrainConfig


class Case(NamedTuple):
    id: str
    what: str  # the input, in words
    expect: str  # the behaviour a user sees (an error fragment the test asserts, or a result)
    data: Any = None


# ---- images ---------------------------------------------------------------------------------------


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims `width x height` pixels (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


BAD_IMAGE_CASES = [
    Case("zero-byte", "a 0-byte .png file", "image file is empty (0 bytes)", b""),
    Case("truncated", "the first half of a valid PNG", "not a readable image", good_png()[: len(good_png()) // 2]),
    Case(
        "corrupt-header",
        "a PNG with 20 bytes of its header zeroed",
        "not a readable image",
        good_png()[:8] + b"\x00" * 20 + good_png()[28:],
    ),
    Case("not-an-image", "a text file named .png", "not a readable image", b"hello, I am not an image\n"),
    Case(
        "bomb-100k",
        "a 100 KB-class PNG whose header claims 100000 x 100000 pixels",
        "refused as a decompression bomb",
        png_header_claiming(100_000, 100_000),
    ),
    Case(
        "over-vladva-limit",
        f"a PNG header claiming 9000 x 9000 = 81 Mpx (vladva's limit: {MAX_PIXELS} px)",
        "above the limit of",
        png_header_claiming(9000, 9000),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_IMAGE_CASES])
def test_bad_images_raise_image_load_error_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case.id}.png"
    path.write_bytes(case.data)
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    assert str(e.value).startswith(f"{path}: ") and case.expect in str(e.value)


def test_missing_image_file_names_it(tmp_path):
    """A manifest pointing at a file that does not exist: 'image file not found' with the path."""
    with pytest.raises(ImageLoadError, match=r"nope\.png: image file not found"):
        load_image(tmp_path / "nope.png")


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _palette_with_transparency() -> bytes:
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 255, 0] * 256)  # every index is green; index 0 is transparent
    return _save(p, "PNG", transparency=0)


# (mode, file bytes, expected RGB of every pixel). Alpha is composited on black (scene background).
IMAGE_MODE_CASES = [
    Case(
        "cmyk-jpeg",
        "CMYK JPEG, pure red ink (C=0, M=255, Y=255, K=0)",
        "RGB (255, 0, 0)",
        (_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100), (255, 0, 0)),
    ),
    Case(
        "greyscale-L",
        "8-bit greyscale PNG, value 128",
        "RGB (128, 128, 128)",
        (_save(Image.new("L", (8, 8), 128), "PNG"), (128, 128, 128)),
    ),
    Case(
        "greyscale-16bit",
        "16-bit greyscale PNG, value 30000 of 65535",
        "RGB (117, 117, 117) (scaled, not clipped)",
        (_save(Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16)), "PNG"), (117, 117, 117)),
    ),
    Case(
        "greyscale-alpha-LA",
        "greyscale + alpha PNG, value 200, opaque",
        "RGB (200, 200, 200)",
        (_save(Image.new("LA", (8, 8), (200, 255)), "PNG"), (200, 200, 200)),
    ),
    Case(
        "rgba-half-alpha",
        "RGBA PNG, red at alpha 128",
        "RGB (128, 0, 0) (alpha composited on black)",
        (_save(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"), (128, 0, 0)),
    ),
    Case(
        "palette",
        "palette (P) PNG, blue",
        "RGB (0, 0, 255)",
        (_save(Image.new("RGB", (8, 8), (0, 0, 255)).convert("P"), "PNG"), (0, 0, 255)),
    ),
    Case(
        "palette-transparent",
        "palette PNG whose colour index is transparent",
        "RGB (0, 0, 0) (transparent -> black)",
        (_palette_with_transparency(), (0, 0, 0)),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in IMAGE_MODE_CASES])
def test_image_modes_load_as_rgb(tmp_path, case):
    data, rgb = case.data
    path = tmp_path / "image"
    path.write_bytes(data)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (8, 8)
    px = np.asarray(im).reshape(-1, 3)
    assert np.abs(px.astype(int) - np.array(rgb)).max() <= 1, (case.id, px[0])  # JPEG may be off by one


# ---- manifest lines ------------------------------------------------------------------------------

GOOD = {"image": "a.png", "captions": ["a red circle"]}

MANIFEST_CASES = [
    Case(
        "malformed-json",
        'a line that is not JSON: {"image": "a.png",',
        "Expecting property name enclosed in double quotes",
        b'{"image": "a.png",',
    ),
    Case("not-an-object", "a JSON list instead of an object", "expected a JSON object, got list", b'["a.png"]'),
    Case("missing-image", "no 'image' key", "missing key 'image'", json.dumps({"captions": ["x"]}).encode()),
    Case(
        "missing-captions",
        "no 'captions' (or 'caption') key",
        "missing key 'captions'",
        json.dumps({"image": "a.png"}).encode(),
    ),
    Case(
        "misspelt-key",
        "'captons' instead of 'captions'",
        "unknown key(s) ['captons']",
        json.dumps({"image": "a.png", "captons": ["x"]}).encode(),
    ),
    Case(
        "image-wrong-type",
        "'image' is a number",
        "'image' must be a non-empty string path",
        json.dumps({"image": 7, "captions": ["x"]}).encode(),
    ),
    Case(
        "captions-wrong-type",
        "'captions' is a number",
        "'captions' must be a non-empty list of strings",
        json.dumps({"image": "a.png", "captions": 3}).encode(),
    ),
    Case(
        "caption-item-wrong-type",
        "a caption that is a number",
        "captions[1] must be a string, got int",
        json.dumps({"image": "a.png", "captions": ["x", 5]}).encode(),
    ),
    Case(
        "empty-caption-list",
        "'captions': []",
        "'captions' must be a non-empty list of strings",
        json.dumps({"image": "a.png", "captions": []}).encode(),
    ),
    Case(
        "empty-caption",
        'an empty caption ""',
        "captions[0] is empty",
        json.dumps({"image": "a.png", "captions": [""]}).encode(),
    ),
    Case(
        "whitespace-caption",
        "a whitespace-only caption",
        "captions[0] is empty",
        json.dumps({"image": "a.png", "captions": [" \t\n "]}).encode(),
    ),
    Case(
        "empty-long-caption",
        "a whitespace-only long_caption",
        "long_caption is empty",
        json.dumps({"image": "a.png", "captions": ["x"], "long_caption": "  "}).encode(),
    ),
    Case(
        "non-utf8-caption",
        "a caption with Latin-1 bytes (not UTF-8)",
        "not valid UTF-8",
        b'{"image": "a.png", "captions": ["caf\xe9"]}',
    ),
    Case(
        "lone-surrogate-caption",
        "a caption with a JSON-escaped lone surrogate \\udc80",
        "captions[0] is not valid Unicode",
        b'{"image": "a.png", "captions": ["a \\udc80 b"]}',
    ),
    Case(
        "meta-wrong-type",
        "'meta' is a string",
        "'meta' must be an object",
        json.dumps({"image": "a.png", "captions": ["x"], "meta": "m"}).encode(),
    ),
    Case(
        "deeply-nested", "a line of 100000 nested JSON lists", "JSON nested too deeply", b"[" * 100_000 + b"]" * 100_000
    ),
    Case(
        "absolute-path",
        "an absolute image path /etc/passwd",
        "absolute image path '/etc/passwd' refused",
        json.dumps({"image": "/etc/passwd", "captions": ["x"]}).encode(),
    ),
    Case(
        "dotdot-escape",
        "an image path ../../etc/passwd",
        "escapes the data root",
        json.dumps({"image": "../../etc/passwd", "captions": ["x"]}).encode(),
    ),
    Case(
        "nul-in-path",
        "an image path with a NUL character",
        "contains a NUL character",
        json.dumps({"image": "a\u0000.png", "captions": ["x"]}).encode(),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MANIFEST_CASES])
def test_bad_manifest_line_names_file_and_line(tmp_path, case):
    """Strict reading raises at the bad line (line 3, after two good ones); lenient reading skips and counts it."""
    path = tmp_path / "train.jsonl"
    good = json.dumps(GOOD).encode()
    path.write_bytes(good + b"\n\n" + case.data + b"\n" + good + b"\n")  # blank line 2 is ignored
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert e.value.line == 3 and str(e.value).startswith(f"{path}:3: ") and case.expect in str(e.value), str(e.value)
    records, report = read_manifest(path, strict=False)
    assert len(records) == 2 and report.kept == 2 and [ln for ln, _ in report.skipped] == [3]
    assert report.summary().startswith(f"{path}: 2 records kept, 1 skipped; first: line 3: ")


def test_symlink_pointing_outside_the_root_is_refused(tmp_path):
    """An image path inside the data folder that is a symlink to a file outside it is refused."""
    outside = tmp_path / "secret.png"
    outside.write_bytes(good_png())
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "link.png").symlink_to(outside)
    (root / "images" / "ok.png").write_bytes(good_png())
    path = root / "train.jsonl"
    path.write_text(
        json.dumps({"image": "images/ok.png", "captions": ["x"]})
        + "\n"
        + json.dumps({"image": "images/link.png", "captions": ["x"]})
        + "\n"
    )
    with pytest.raises(ManifestError, match=r"train\.jsonl:2: image path 'images/link.png' escapes the data root"):
        read_manifest(path)
    records, _ = read_manifest(path, allow_outside_root=True)  # an explicit opt-in allows it
    assert [r.image.name for r in records] == ["ok.png", "link.png"]


# Arbitrary bytes, and JSON objects built from manifest keys with arbitrary values (text includes
# lone surrogates: JSON-escaped with ensure_ascii, raw invalid UTF-8 bytes with surrogatepass).
any_text = st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
manifest_objects = st.dictionaries(
    st.sampled_from(["id", "image", "captions", "caption", "long_caption", "meta", "extra"]),
    json_values | st.just("images/a.png") | st.just("../a.png") | st.lists(any_text, max_size=3),
    max_size=5,
)
# Near-valid records, so that many lines parse and the accepted records are checked too.
near_valid = st.fixed_dictionaries(
    {
        "image": st.sampled_from(
            ["images/a.png", "images/b.png", "images/\u00fc b.png", "../a.png", "/abs.png", "a\x00.png"]
        ),
        "captions": st.lists(st.just("a red circle") | any_text, min_size=1, max_size=3),
    },
    optional={
        "id": json_values,
        "long_caption": st.just("the image shows a red circle .") | any_text,
        "meta": st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    },
)
lines = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),
    near_valid.map(lambda o: json.dumps(o).encode()),
    manifest_objects.map(lambda o: json.dumps(o).encode()),
    manifest_objects.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


def _is_blank(line: bytes) -> bool:
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(lines, min_size=1, max_size=6))
def test_fuzz_manifest_parser_only_raises_manifest_error(tmp_path, body):
    """Arbitrary lines: records, or ManifestError naming a line of the file; never another exception."""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(body) + b"\n")
    n_lines = len(body)
    try:
        records = list(iter_manifest(path))
    except ManifestError as e:
        assert 1 <= e.line <= n_lines and str(e).startswith(f"{path}:{e.line}: ")
    else:
        for r in records:
            assert r.captions and all(isinstance(c, str) and c.strip() for c in r.captions)
            r.captions[0].encode("utf-8")  # every kept caption can be tokenised
            assert r.image.resolve().is_relative_to(tmp_path.resolve())
    records, report = read_manifest(path, strict=False)  # lenient: never raises, accounts for every line
    assert report.kept == len(records)
    assert report.kept + len(report.skipped) == sum(1 for b in body if not _is_blank(b))


# ---- config keys and values ---------------------------------------------------------------------

CONFIG_CASES = [
    Case(
        "misspelt-key",
        "optim.lr_lroa=1e-4",
        "unknown config key 'optim.lr_lroa'; did you mean 'optim.lr_lora'?",
        "optim.lr_lroa=1e-4",
    ),
    Case(
        "unknown-section",
        "optimiser.lr=1e-4",
        "unknown config key 'optimiser'; did you mean 'optim'?",
        "optimiser.lr=1e-4",
    ),
    Case(
        "negative-lr",
        "optim.lr_lora=-1e-4",
        "optim.lr_lora must be a finite number >= 0, got -0.0001",
        "optim.lr_lora=-1e-4",
    ),
    Case(
        "nan-lr",
        "optim.lr_soft_prompt=.nan",
        "optim.lr_soft_prompt must be a finite number >= 0, got nan",
        "optim.lr_soft_prompt=.nan",
    ),
    Case(
        "batch-size-0",
        "data.contrastive_batch_size=0",
        "data.contrastive_batch_size must be >= 2, got 0",
        "data.contrastive_batch_size=0",
    ),
    Case(
        "ntp-batch-too-big",
        "data.ntp_batch_size=64 (> contrastive batch 32)",
        "data.ntp_batch_size must be between 0 and data.contrastive_batch_size",
        "data.ntp_batch_size=64",
    ),
    Case("max-steps-0", "optim.max_steps=0", "optim.max_steps must be >= 1, got 0", "optim.max_steps=0"),
    Case("wrong-type", "optim.max_steps=ten", "'optim.max_steps' must be an integer, got 'ten'", "optim.max_steps=ten"),
    Case(
        "bad-beta",
        "optim.betas=[0.9,1.5]",
        "optim.betas must each be in [0, 1), got [0.9, 1.5]",
        "optim.betas=[0.9,1.5]",
    ),
    Case("lora-rank-0", "model.lora.r=0", "model.lora.r must be >= 1, got 0", "model.lora.r=0"),
    Case(
        "bad-padding-side",
        "model.prompts.padding_side=up",
        "model.prompts.padding_side must be 'left' or 'right'",
        "model.prompts.padding_side=up",
    ),
    Case(
        "zero-temperature",
        "loss.contrastive.init_temperature=0",
        "loss.contrastive.init_temperature must be in (0, 1]",
        "loss.contrastive.init_temperature=0",
    ),
    Case(
        "negative-ntp-weight",
        "loss.ntp_weight=-1",
        "loss.ntp_weight must be a finite number >= 0",
        "loss.ntp_weight=-1",
    ),
    Case(
        "negative-keep-last", "checkpoint.keep_last=-1", "checkpoint.keep_last must be >= 0", "checkpoint.keep_last=-1"
    ),
    Case("eval-batch-0", "eval.batch_size=0", "eval.max_images and eval.batch_size must be >= 1", "eval.batch_size=0"),
    Case("not-key-value", "an override without '=' (optim.lr_lora)", "must look like key=value", "optim.lr_lora"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CONFIG_CASES])
def test_bad_config_override_names_the_key(case):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [case.data])
    assert case.expect in str(e.value), str(e.value)


def test_bad_key_in_yaml_names_the_file(tmp_path):
    """A misspelt nested key in a YAML recipe: the error names the file and the dotted key."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim:\n  max_stpes: 10\n")
    with pytest.raises(
        ConfigError, match=rf"^{recipe}: unknown config key 'optim.max_stpes'; did you mean 'optim.max_steps'\?"
    ):
        load_config(TrainConfig, recipe)
    recipe.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{recipe}: not valid YAML"):
        load_config(TrainConfig, recipe)


def test_train_cli_reports_config_errors_in_one_line():
    """`vladva train optim.lr_lora=-1`: exit code 2 and one `error:` line, no traceback."""
    from typer.testing import CliRunner

    from vladva.cli import app

    r = CliRunner().invoke(app, ["train", "optim.lr_lora=-1"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip() == "error: command line: optim.lr_lora must be a finite number >= 0, got -1.0"


# ---- captions through the model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from vladva.testing import build_tiny_llava

    torch.set_num_threads(1)
    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "base", hidden=32, layers=1)


@pytest.fixture(scope="module")
def tiny_model(tiny_base):
    from vladva.model.vladva import VladVA, VladVAConfig

    config = VladVAConfig()
    config.prompts.max_text_tokens = 8
    config.prompts.max_long_caption_tokens = 12
    return VladVA.from_pretrained(tiny_base, config=config)


def test_over_long_caption_is_truncated_to_max_text_tokens(tiny_model):
    """Documented truncation: a caption is cut to model.prompts.max_text_tokens tokens (8 here),
    so a 300-word caption embeds exactly like its first 8 words; the prompt is never cut."""
    words = ("a red circle left of a blue square and a green cross " * 30).split()
    long, head = " ".join(words), " ".join(words[:8])
    emb = tiny_model.encode_texts([long, head, " ".join(words[:7])])
    assert torch.equal(emb[0], emb[1])
    assert not torch.allclose(emb[1], emb[2])  # the 8th word still counts
    mask = tiny_model.text_inputs([long, head]).model_inputs["attention_mask"]
    assert int(mask[0].sum()) == int(mask[1].sum())  # the same number of real tokens


def test_over_long_long_caption_is_truncated_for_the_next_token_loss(tiny_model):
    """A 300-word long caption gets next-token labels on max_long_caption_tokens (12) tokens + EOS."""
    from vladva.train.losses import caption_cross_entropy

    image = Image.new("RGB", (32, 32))
    batch = tiny_model.ntp_inputs([image], ["the image shows a red circle " * 50])
    assert int((batch.labels != -100).sum()) == 12 + 1
    _, hidden = tiny_model.embed_image_with_caption(batch)
    logits, targets = tiny_model.caption_logits(hidden, batch.labels)
    assert len(targets) == 12 + 1 and torch.isfinite(caption_cross_entropy(logits, targets))


def test_training_on_a_100k_character_caption_says_what_vladva_does(tiny_base, tmp_path, caplog):
    """A 100,000-character caption (and long caption) in training: no transformers warning about
    "indexing errors" (the text is cut, never indexed whole); instead one line per kind saying vladva
    cuts it to max_text_tokens (8) / max_long_caption_tokens (12) tokens. Training runs."""
    import shutil

    from transformers import AutoTokenizer

    from vladva.testing import write_tiny_manifest
    from vladva.train.trainer import train

    # The shipped base's tokenizer says 1024 tokens at most; the tiny one says nothing, so set it.
    base = Path(shutil.copytree(tiny_base, tmp_path / "base"))
    tok_cfg = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps(tok_cfg | {"model_max_length": 1024}))
    root = write_tiny_manifest(tmp_path / "data", n_train=4, n_val=0)
    lines = [json.loads(ln) for ln in (root / "train.jsonl").read_text().splitlines()]
    huge = ("a red circle left of a blue square " * 3000)[:100_000]
    lines[0]["captions"] = [huge]
    for line in lines:  # every record: whichever rows get the next-token loss see it
        line["long_caption"] = huge
    (root / "train.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    cfg = _train_cfg(
        root,
        base,
        tmp_path / "run",
        "optim.max_steps=1",
        "data.caption_choice=first",
        "model.prompts.max_text_tokens=8",
        "model.prompts.max_long_caption_tokens=12",
    )
    said: list[str] = []  # transformers logs to its own handler, not to pytest's
    keep = logging.Handler()
    keep.emit = lambda record: said.append(record.getMessage())
    hf_log = logging.getLogger("transformers")
    hf_log.addHandler(keep)
    try:
        AutoTokenizer.from_pretrained(base)(huge)  # guard: tokenizing it whole does warn
        assert any("indexing errors" in m for m in said), said
        said.clear()
        with caplog.at_level(logging.WARNING, logger="vladva"):
            assert train(cfg).steps == 1
    finally:
        hf_log.removeHandler(keep)
    assert not [m for m in said if "indexing errors" in m or "maximum sequence length" in m], said
    assert (
        "a caption of 100,000 characters is longer than model.prompts.max_text_tokens = 8 tokens: "
        "vladva cuts it to its first 8 tokens" in caplog.text
    )
    assert (
        "a long caption of 100,000 characters is longer than model.prompts.max_long_caption_tokens = 12" in caplog.text
    )
    assert caplog.text.count("vladva cuts it") == 2  # once per kind, not once per caption


# ---- text files to embed (`vladva embed --texts`) -----------------------------------------------

TEXT_FILE_CASES = [
    Case(
        "blank-line-inside",
        "3 lines, the 2nd blank: b'a red circle\\n\\na blue square\\n'",
        "texts.txt:2: blank line; each line is one text and one output row",
        b"a red circle\n\na blue square\n",
    ),
    Case(
        "whitespace-line-inside",
        "a line of spaces and a tab between two texts",
        "texts.txt:2: blank line",
        b"a red circle\n \t \na blue square\n",
    ),
    Case(
        "many-blank-lines",
        "7 blank lines between two texts",
        "texts.txt:2: blank line (also lines 3, 4, 5, 6, 7 and 1 more)",
        b"a red circle\n" + b"\n" * 7 + b"a blue square\n",
    ),
    Case(
        "latin-1-byte",
        "line 2 holds a Latin-1 byte (caf\\xe9), not UTF-8",
        "texts.txt:2: not valid UTF-8 (byte 0xe9 at column 12)",
        b"a red circle\na small caf\xe9 square\n",
    ),
    Case(
        "truncated-utf8",
        "line 1 ends inside a 2-byte UTF-8 sequence",
        "texts.txt:1: not valid UTF-8 (byte 0xc3 at column 6)",
        b"a red\xc3\n",
    ),
    Case("only-blank", "a file of blank lines", "texts.txt: no non-empty lines", b"\n  \n\n"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TEXT_FILE_CASES])
def test_embed_texts_refuses_bad_lines_naming_file_and_line(tmp_path, case):
    """`vladva embed --texts FILE`: exit 2 and one `error: --texts FILE:LINE: ...` line, before any model loads."""
    from typer.testing import CliRunner

    from vladva.cli import app

    texts = tmp_path / "texts.txt"
    texts.write_bytes(case.data)
    args = [
        "embed",
        "--model",
        str(tmp_path / "no-model-needed"),
        "--texts",
        str(texts),
        "--out",
        str(tmp_path / "o.npy"),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.stderr.startswith(f"error: --texts {tmp_path}/") and case.expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.npy").exists()


def test_embed_texts_rows_align_with_lines(tiny_base, tmp_path):
    """A text file with a BOM, CRLF line ends and blank lines at its end: one row per line, in
    order, the items metadata equal to the lines, each row equal to embedding that line alone."""
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.data.embeddings import read_embeddings
    from vladva.model.vladva import VladVA

    lines = ["a red circle", "a blue square left of a green cross", "café"]
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n\n")
    out = tmp_path / "texts.safetensors"
    r = CliRunner().invoke(app, ["embed", "--model", str(tiny_base), "--texts", str(texts), "--out", str(out)])
    assert r.exit_code == 0, r.output
    table, items, meta = read_embeddings(out)
    assert items == lines and table.shape[0] == len(lines) and meta["kind"] == "texts"
    one_by_one = VladVA.from_pretrained(tiny_base).encode_texts(lines[1:2])
    assert torch.allclose(table[1], one_by_one[0], atol=1e-5)


# ---- bad samples in training --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirty_data(tmp_path_factory, tiny_base):
    """A tiny manifest (12 records) with one malformed line (line 5) and one corrupt image (record 'train-000002')."""
    from vladva.testing import write_tiny_manifest

    root = write_tiny_manifest(tmp_path_factory.mktemp("dirty"), n_train=12, n_val=4)
    lines = (root / "train.jsonl").read_text().splitlines()
    lines.insert(4, '{"image": "images/train/000004.png", "captions": [""]}')
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "images" / "train" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root, tiny_base


def _train_cfg(root: Path, base: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        None,
        [
            f"base_model={base}",
            f"output_dir={out}",
            f"data.train={root / 'train.jsonl'}",
            "data.contrastive_batch_size=4",
            "data.ntp_batch_size=2",
            "optim.max_steps=3",
            "optim.warmup_steps=0",
            "eval.at_start=false",
            "eval.every=0",
            "checkpoint.every=0",
            "progress=false",
            "num_threads=1",
            "model.lora.r=2",
            "model.lora.target_modules=[q_proj]",
            *extra,
        ],
    )


def test_training_skips_and_counts_bad_samples(dirty_data, tmp_path, caplog):
    """Lenient (default): the bad line and the corrupt image are skipped, logged and counted; training finishes."""
    from vladva.train.trainer import train

    root, base = dirty_data
    with caplog.at_level(logging.WARNING):
        result = train(_train_cfg(root, base, tmp_path / "run"))
    assert result.steps == 3
    log = caplog.text
    assert f"{root / 'train.jsonl'}: 12 records kept, 1 skipped; first: line 5: captions[0] is empty" in log
    assert "000002.png: not a readable image" in log
    # 12 records, batch 4: 3 steps visit every record once, so the corrupt image is skipped exactly once.
    assert result.final["skipped"] == 1
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 1


def test_training_strict_turns_bad_samples_into_errors(dirty_data, tmp_path):
    """data.strict=true: the first bad manifest line is an error naming file:line; with the line
    fixed, the corrupt image is an error naming the image file."""
    from vladva.train.trainer import train

    root, base = dirty_data
    with pytest.raises(ManifestError, match=r"train\.jsonl:5: captions\[0\] is empty"):
        train(_train_cfg(root, base, tmp_path / "run1", "data.strict=true"))
    good = [ln for i, ln in enumerate((root / "train.jsonl").read_text().splitlines(), 1) if i != 5]
    (root / "fixed.jsonl").write_text("\n".join(good) + "\n")
    cfg = _train_cfg(root, base, tmp_path / "run3", "data.strict=true", f"data.train={root / 'fixed.jsonl'}")
    with pytest.raises(ImageLoadError, match=r"000002\.png: not a readable image"):
        train(cfg)


# ---- vladva check-manifest -------------------------------------------------------------------------


def test_check_manifest_lists_every_problem_and_exits_1(tmp_path):
    """`vladva check-manifest`: each bad line (file:line), unreadable image (file) and duplicate id is
    listed, then a summary; exit 1. A clean manifest prints `ok` and exits 0; a missing one exits 2."""
    from typer.testing import CliRunner

    from vladva.cli import app

    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / name).write_bytes(good_png())
    (tmp_path / "images" / "bad.png").write_bytes(good_png()[:50])
    rows = [
        {"id": "1", "image": "images/a.png", "captions": ["a red square"]},
        {"id": "2", "image": "images/bad.png", "captions": ["a red square"]},
        {"id": "3", "image": "images/b.png", "captions": [" "]},
        {"id": "1", "image": "images/b.png", "captions": ["a red square"]},
    ]
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = CliRunner().invoke(app, ["check-manifest", str(dirty)])
    assert r.exit_code == 1, r.output
    assert f"{dirty}:3: captions[0] is empty" in r.stderr
    assert f"record 2: {tmp_path / 'images' / 'bad.png'}: not a readable image" in r.stderr
    assert f"{dirty}: duplicate id '1'" in r.stderr
    assert (
        r.stdout.strip()
        == f"FAIL  {dirty}: 3 records, 2 usable; 1 bad manifest line(s), 1 unreadable image(s), 1 duplicate id(s)"
    )

    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(rows[0]) + "\n")
    r = CliRunner().invoke(app, ["check-manifest", str(clean), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0] | {"manifest": ""} == {
        "manifest": "",
        "records": 1,
        "usable": 1,
        "bad_lines": [],
        "bad_images": [],
        "duplicate_ids": [],
        "ok": True,
    }
    r = CliRunner().invoke(app, ["check-manifest", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: manifest not found: {tmp_path / 'nope.jsonl'}"


def test_check_manifest_library_call_names_each_problem(tmp_path):
    """`vladva.data.check.check_manifest`, the function behind the command: counts, and one line
    per problem (`file:line`, `record ID`, duplicate id); `load_images=False` opens no image."""
    from vladva.data.check import check_manifest

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(good_png())
    rows = [
        {"id": "1", "image": "images/a.png", "captions": ["a red square"]},
        {"id": "2", "image": "images/missing.png", "captions": ["a red square"]},
        {"id": "1", "image": "images/a.png", "captions": ["a red square"]},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    found = check_manifest(path)
    assert (found.records, found.usable, found.ok) == (3, 2, False)
    assert found.problems() == [
        f"{path}:4: {found.bad_lines[0][1]}",
        f"record 2: {tmp_path / 'images' / 'missing.png'}: image file not found",
        f"{path}: duplicate id '1'",
    ]
    lines_only = check_manifest(path, load_images=False)
    assert lines_only.usable == 3 and lines_only.bad_images == []
