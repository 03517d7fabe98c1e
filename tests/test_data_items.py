"""Reading what a user points a command at (`vladva.data.items`, `vladva.data.images`) and the
embeddings file `vladva embed` writes (`vladva.data.embeddings`), without a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vladva.data.embeddings import read_embeddings, write_embeddings
from vladva.data.images import IMAGE_SUFFIXES, find_images, is_image_file
from vladva.data.items import image_items, manifest_captions, prompt_pairs, text_items
from vladva.errors import UserError


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path, format="PNG")


def test_image_suffixes_are_one_list_matched_in_any_case(tmp_path):
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
    for name in ("b/2.PNG", "a.png", "b/1.jpeg"):
        _png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not one
    assert find_images(tmp_path) == [tmp_path / "a.png", tmp_path / "b/1.jpeg", tmp_path / "b/2.PNG"]
    assert not is_image_file(tmp_path / "notes.txt") and not is_image_file(tmp_path / "folder.png")


def test_image_items_from_a_folder_and_a_manifest(tmp_path):
    for name in ("x/b.png", "a.png"):
        _png(tmp_path / "images" / name)
    paths, names = image_items(tmp_path / "images")
    assert names == ["a.png", "x/b.png"] and paths[0] == tmp_path / "images" / "a.png"

    manifest = tmp_path / "m.jsonl"
    rows = [{"id": "r1", "image": "images/x/b.png", "captions": ["one", "two"]}]
    rows.append({"id": "r2", "image": "images/a.png", "captions": ["three"]})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths, names = image_items(manifest)
    assert names == ["r1", "r2"] and paths == [tmp_path / "images/x/b.png", tmp_path / "images/a.png"]
    assert manifest_captions(manifest) == ["one", "two", "three"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.mkdir(), "no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"),
        (lambda p: p.write_text("x"), "give a folder of images or a .jsonl manifest"),
    ],
)
def test_image_items_errors_name_the_source(tmp_path, make, message):
    source = tmp_path / "src"
    make(source)
    with pytest.raises(UserError) as e:
        image_items(source)
    assert str(e.value) == f"{source}: {message}"


def test_text_items_and_prompt_pairs(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("  a red circle \n a blue square\n\n")  # blank lines at the end are ignored
    assert text_items(texts) == ["a red circle", "a blue square"]
    texts.write_text("a red circle\n\na blue square\n")  # one in between would shift every later row
    with pytest.raises(UserError, match=r"t.txt:2: blank line"):
        text_items(texts)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(UserError, match="no non-empty lines"):
        text_items(tmp_path / "blank.txt")
    with pytest.raises(UserError, match="file not found"):
        text_items(tmp_path / "missing.txt")

    prompts = tmp_path / "p.tsv"
    prompts.write_text("<image> Summary: \t<sent> Summary:\n\n")
    assert prompt_pairs(prompts) == [("<image> Summary:", "<sent> Summary:")]
    prompts.write_text("ok\tok\nno tab here\n")
    with pytest.raises(UserError) as e:
        prompt_pairs(prompts)
    assert str(e.value) == f"{prompts}:2: expected IMAGE PROMPT<TAB>TEXT PROMPT"


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_embeddings_file_round_trip(tmp_path, suffix):
    table = torch.nn.functional.normalize(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    items = ["a.png", "two\nlines", "c"]
    out = tmp_path / "sub" / f"emb{suffix}"
    write_embeddings(out, table, items, {"model": "m", "kind": "images"})
    back, names, meta = read_embeddings(out)
    assert torch.equal(back, table)
    if suffix == ".npy":  # a name's newline would split the one-per-line list
        assert names == ["a.png", "two lines", "c"] and meta == {}
        assert np.load(out).shape == (3, 5)
    else:
        assert names == items and meta == {"model": "m", "kind": "images"}
    with pytest.raises(UserError, match="must end in .safetensors or .npy"):
        write_embeddings(tmp_path / "emb.txt", table, items, {})
