"""The embedding index, `vladva index|search`, and the HTTP service, on the colour-histogram embedder.

The fixture collection is hand-made: image i has a large object of colour i and a small object of
colour i+1 (mod 8), so the query naming colour i must rank image i first (its colour covers the
most pixels there), and each image's nearest neighbour is itself.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import operator
import random
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vladva.serve.batching import BatcherConfig, MicroBatcher
from vladva.serve.build import build_index, list_images, update_index
from vladva.serve.index import EmbeddingIndex, IndexConfig
from vladva.toyworld.scene import COLOURS, Scene, SceneConfig, SceneObject, render_scene, sample_scene
from vladva.toyworld.toy_embedder import TOY_SPEC, ColourHistogramEmbedder

COLOUR_NAMES = list(COLOURS)


def two_colour_image(i: int) -> Image.Image:
    big = COLOUR_NAMES[i % 8]
    small = COLOUR_NAMES[(i + 1) % 8]
    scene = Scene((SceneObject("square", big, "large", 10, 10), SceneObject("circle", small, "small", 24, 24)))
    return render_scene(scene)


@pytest.fixture()
def colour_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i in range(8):
        two_colour_image(i).save(d / f"{COLOUR_NAMES[i]}.png")
    return d


@pytest.fixture()
def toy():
    return ColourHistogramEmbedder()


def test_toy_embedder_is_normalised_and_colour_aware(toy, colour_dir):
    im = toy.encode_images([colour_dir / "red.png"])
    tx = toy.encode_texts(["red", "a blue circle", "no colour here"])
    assert im.shape == (1, 9) and tx.shape == (3, 9) and im.dtype == tx.dtype == torch.float32
    assert np.allclose(np.linalg.norm(im.numpy(), axis=1), 1, atol=1e-6)
    assert np.allclose(np.linalg.norm(tx.numpy(), axis=1), 1, atol=1e-6)
    # "red" is closer to the red image than "a blue circle" is.
    assert float(im[0] @ tx[0]) > float(im[0] @ tx[1])


def test_build_and_exact_text_search(toy, colour_dir, tmp_path):
    index, report = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    assert len(report.added) == 8 and not report.skipped
    for i, colour in enumerate(COLOUR_NAMES):
        hits = index.search(toy.encode_texts([colour]).numpy(), k=3)[0]
        assert hits[0].path.endswith(f"{colour}.png"), (colour, hits)
        # The image whose *small* object has this colour comes second.
        assert hits[1].path.endswith(f"{COLOUR_NAMES[(i - 1) % 8]}.png")
        assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score


def test_image_to_image_finds_itself(toy, colour_dir, tmp_path):
    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    q = toy.encode_images([colour_dir / "green.png"]).numpy()
    hit = index.search(q, k=1)[0][0]
    assert hit.path.endswith("green.png") and hit.score == pytest.approx(1.0, abs=1e-5)


def test_id_map_round_trip(toy, colour_dir, tmp_path):
    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert [(e.id, e.path, e.captions) for e in back.entries] == [(e.id, e.path, e.captions) for e in index.entries]
    assert (
        back.meta.model == TOY_SPEC and back.meta.dim == 9 and back.meta.count == 8 and back.meta.config.kind == "flat"
    )
    q = toy.encode_texts(["purple"]).numpy()
    assert [h.id for h in back.search(q, 8)[0]] == [h.id for h in index.search(q, 8)[0]]
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["model"] == TOY_SPEC and meta["count"] == 8 and meta["created"]


def test_incremental_add_only_new_images(toy, colour_dir, tmp_path):
    first = colour_dir.parent / "first"
    first.mkdir()
    for name in ("red", "green", "blue"):
        (first / f"{name}.png").write_bytes((colour_dir / f"{name}.png").read_bytes())
    build_index(toy, TOY_SPEC, first, tmp_path / "ix")
    # Add the full set, which includes copies under other paths and the three already indexed.
    index, report = update_index(tmp_path / "ix", toy, first)
    assert report.added == [] and report.already_indexed == 3
    index, report = update_index(tmp_path / "ix", toy, colour_dir)
    assert len(report.added) == 8 and report.added == list(range(3, 11))
    assert len(EmbeddingIndex.load(tmp_path / "ix")) == 11
    hits = index.search(toy.encode_texts(["orange"]).numpy(), k=1)[0]
    assert hits[0].path.endswith("images/orange.png")


def test_unreadable_images_are_skipped_and_listed(toy, colour_dir, tmp_path):
    (colour_dir / "broken.png").write_bytes(b"not a png")
    (colour_dir / "empty.jpg").write_bytes(b"")
    index, report = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    assert len(index) == 8
    skipped = dict(report.skipped)
    assert set(skipped) == {str((colour_dir / "broken.png").resolve()), str((colour_dir / "empty.jpg").resolve())}
    assert "empty" in skipped[str((colour_dir / "empty.jpg").resolve())]


def test_manifest_source_keeps_captions(toy, colour_dir, tmp_path):
    from vladva.data.manifest import Record, write_manifest

    recs = [Record(c, colour_dir / f"{c}.png", [f"a large {c} square"]) for c in COLOUR_NAMES[:4]]
    write_manifest(colour_dir / "m.jsonl", recs)
    with open(colour_dir / "m.jsonl", "a") as f:
        f.write('{"image": "yellow.png"}\n')  # no captions: skipped, named by file:line
    index, report = build_index(toy, TOY_SPEC, colour_dir / "m.jsonl", tmp_path / "ix")
    assert len(index) == 4 and report.skipped[0][0] == f"{colour_dir / 'm.jsonl'}:5"
    hit = index.search(toy.encode_texts(["blue"]).numpy(), 1)[0][0]
    assert hit.captions == ["a large blue square"] and hit.record_id == "blue"  # the manifest's id
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert [(e.captions, e.record_id) for e in back.entries] == [([f"a large {c} square"], c) for c in COLOUR_NAMES[:4]]


def test_folder_index_without_record_ids_still_loads(toy, colour_dir, tmp_path):
    """An id map written before entries had `record_id` loads, with None."""
    build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    ids = tmp_path / "ix" / json.loads((tmp_path / "ix" / "index.json").read_text())["files"]["ids"]
    entries = json.loads(ids.read_text())["entries"]
    assert all(e["record_id"] is None for e in entries)
    ids.write_text(json.dumps({"entries": [{k: v for k, v in e.items() if k != "record_id"} for e in entries]}))
    assert [e.record_id for e in EmbeddingIndex.load(tmp_path / "ix").entries] == [None] * 8


def _karpathy(colour_dir, path) -> None:
    """A Karpathy-split JSON over the colour images: red..yellow in the test split, the rest in val."""
    images = [
        {
            "imgid": 100 + i,
            "filename": f"{c}.png",
            "split": "test" if i < 4 else "val",
            "sentences": [{"raw": f"a large {c} square", "sentid": 2 * i}, {"raw": f"{c} shape", "sentid": 2 * i + 1}],
        }
        for i, c in enumerate(COLOUR_NAMES)
    ]
    path.write_text(json.dumps({"dataset": "colours", "images": images}))


def test_karpathy_json_source_keeps_captions_and_imgids(toy, colour_dir, tmp_path):
    """`--images dataset_*.json`: the images of one split, each with all its sentences and its imgid;
    `--split` picks another split, and `index add` grows the index by it."""
    from typer.testing import CliRunner

    from vladva.cli import app

    _karpathy(colour_dir, colour_dir / "dataset_colours.json")
    index, _ = build_index(toy, TOY_SPEC, colour_dir / "dataset_colours.json", tmp_path / "lib")
    assert [(e.record_id, e.captions) for e in index.entries] == [
        (str(100 + i), [f"a large {c} square", f"{c} shape"]) for i, c in enumerate(COLOUR_NAMES[:4])
    ]
    out = tmp_path / "cli"
    build = ["index", "build", "--model", TOY_SPEC, "--images", str(colour_dir / "dataset_colours.json")]
    r = CliRunner().invoke(app, [*build, "--out", str(out), "--split", "val"])
    assert r.exit_code == 0 and "index of 4 images" in r.stdout, r.output
    r = CliRunner().invoke(app, ["search", "--index", str(out), "orange", "-k", "1", "--json"])
    hit = json.loads(r.stdout)["results"][0]
    assert hit["path"].endswith("orange.png") and hit["record_id"] == "105"
    assert hit["captions"] == ["a large orange square", "orange shape"]
    r = CliRunner().invoke(app, ["index", "add", str(out), "--images", str(colour_dir / "dataset_colours.json")])
    assert r.exit_code == 0 and "index now holds 8 images" in r.stdout, r.output


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_agree_with_exact_top1(toy, tmp_path, kind):
    rng = random.Random(1)
    d = tmp_path / "many"
    d.mkdir()
    for i in range(120):
        render_scene(sample_scene(rng, SceneConfig())).save(d / f"{i:03d}.png")
    exact, _ = build_index(toy, TOY_SPEC, d, tmp_path / "flat")
    approx, _ = build_index(toy, TOY_SPEC, d, tmp_path / kind, IndexConfig(kind=kind, ivf_nlist=3, ivf_nprobe=3))
    approx = EmbeddingIndex.load(tmp_path / kind)  # parameters (nprobe, efSearch) survive a reload
    assert approx.meta.config.kind == kind
    queries = toy.encode_images([d / f"{i:03d}.png" for i in range(0, 120, 7)]).numpy()
    texts = toy.encode_texts(COLOUR_NAMES).numpy()
    for q in (queries, texts):
        ex, ap = exact.search(q, 1), approx.search(q, 1)
        assert [h[0].score for h in ap] == pytest.approx([h[0].score for h in ex], abs=1e-5)


def test_bad_index_config_and_mismatched_vectors(toy, colour_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        IndexConfig(kind="annoy")
    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    with pytest.raises(ValueError, match=r"shape \(n, 9\)"):
        index.search(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="already holds an index"):
        build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "missing")


# ---- micro-batcher --------------------------------------------------------------------------


def test_micro_batcher_batches_concurrent_submits():
    seen = []

    def double(items):
        seen.append(list(items))
        return [2 * x for x in items]

    batcher = MicroBatcher(double, BatcherConfig(max_batch=4, max_wait_ms=20))

    async def main():
        out = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        return out

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert batcher.batch_sizes == [4, 4, 2] and sorted(functools.reduce(operator.iadd, seen, [])) == list(range(10))


def test_micro_batcher_passes_errors_to_every_waiter():
    def boom(items):
        raise RuntimeError("model failed")

    batcher = MicroBatcher(boom, BatcherConfig(max_batch=8, max_wait_ms=5))

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and "model failed" in str(e) for e in out) and batcher.calls == 1


# ---- HTTP service ---------------------------------------------------------------------------


@pytest.fixture()
def service(toy, colour_dir, tmp_path):
    from fastapi.testclient import TestClient

    from vladva.serve.service import ServiceSettings, create_app

    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    settings = ServiceSettings(max_body_bytes=64 * 1024, max_texts=4, max_k=20, max_image_pixels=64 * 64)
    with TestClient(create_app(index, toy, settings)) as client:
        yield client, index, colour_dir


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_health_page_static_and_openapi(service):
    client, _index, _ = service
    h = client.get("/health").json()
    assert h == {
        "status": "ok",
        "model": TOY_SPEC,
        "embedder": TOY_SPEC,
        "dim": 9,
        "kind": "flat",
        "images": 8,
        "version": 1,
    }
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and 'id="results"' in page.text
    assert 'fetch("/search"' in client.get("/static/app.js").text
    spec = client.get("/openapi.json").json()
    assert {"/search", "/embed/text", "/embed/image", "/health", "/images/{image_id}"} <= set(spec["paths"])


def test_embed_text(service, toy):
    client, _, _ = service
    r = client.post("/embed/text", json={"texts": ["red", "blue square"]})
    assert r.status_code == 200
    body = r.json()
    assert body["dim"] == 9 and len(body["embeddings"]) == 2
    assert np.allclose(body["embeddings"], toy.encode_texts(["red", "blue square"]).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "payload,status,message",
    [
        ({"texts": []}, 422, "non-empty list"),
        ({"texts": "red"}, 422, "non-empty list"),
        ({"texts": ["red", "  "]}, 422, "texts[1] must be a non-empty string"),
        ({"texts": ["a"] * 5}, 413, "limit is 4"),
        ({"texts": ["red"], "extra": 1}, 422, "unknown field(s) ['extra']"),
        ({"texts": ["x" * 2001]}, 413, "2001 characters"),
    ],
)
def test_embed_text_rejects_bad_input(service, payload, status, message):
    client, _, _ = service
    r = client.post("/embed/text", json=payload)
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_malformed_bodies(service):
    client, _, _ = service
    r = client.post("/embed/text", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = client.post("/search", content=b"text=red", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]


def test_embed_image_upload_and_base64(service, toy):
    client, _, colour_dir = service
    data = (colour_dir / "red.png").read_bytes()
    expected = toy.encode_images([colour_dir / "red.png"]).numpy()
    r = client.post("/embed/image", files={"file": ("red.png", data, "image/png")})
    assert r.status_code == 200 and np.allclose(r.json()["embeddings"], expected, atol=1e-6)
    r = client.post("/embed/image", json={"images_base64": [base64.b64encode(data).decode()] * 2})
    assert r.status_code == 200 and np.allclose(r.json()["embeddings"], np.repeat(expected, 2, 0), atol=1e-6)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert client.post("/embed/image", json={"image_base64": url}).status_code == 200


def test_embed_image_rejects_bad_input(service):
    client, _, _ = service
    r = client.post("/embed/image", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert r.status_code == 400 and "'notes.txt'" in r.json()["detail"] and "not a readable image" in r.json()["detail"]
    r = client.post("/embed/image", json={"image_base64": "%%%"})
    assert r.status_code == 400 and "not valid base64" in r.json()["detail"]
    r = client.post("/embed/image", json={})
    assert r.status_code == 422 and "no image given" in r.json()["detail"]
    big = png_bytes(Image.new("RGB", (65, 64)))  # 4160 pixels > the 4096 limit of the fixture
    r = client.post("/embed/image", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "above the limit of 4096" in r.json()["detail"]


def test_search_by_text_and_image(service):
    client, _index, colour_dir = service
    r = client.post("/search", json={"text": "yellow", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == {"text": "yellow"} and body["k"] == 3 and len(body["results"]) == 3
    top = body["results"][0]
    assert top["path"].endswith("yellow.png") and top["rank"] == 1 and top["url"] == f"/images/{top['id']}"
    img = client.get(top["url"])
    assert img.status_code == 200 and img.content == (colour_dir / "yellow.png").read_bytes()
    data = (colour_dir / "pink.png").read_bytes()
    r = client.post("/search", files={"file": ("q.png", data, "image/png")}, data={"k": "2"})
    assert r.status_code == 200 and r.json()["query"] == {"image": "q.png"}
    assert r.json()["results"][0]["path"].endswith("pink.png") and len(r.json()["results"]) == 2
    r = client.post("/search", json={"image_base64": base64.b64encode(data).decode()})
    assert r.status_code == 200 and len(r.json()["results"]) == 8  # default k 10, capped at the index size


def test_search_names_the_query_words_the_model_cannot_read(toy, colour_dir, tmp_path):
    """A text query's words outside the model's vocabulary come back as `unknown_words` (the page
    shows them), so a user sees why "a green digit" matched only "green"."""
    from fastapi.testclient import TestClient

    from vladva.data.vocab import load_tokenizer
    from vladva.serve.service import create_app

    class WordLevel(ColourHistogramEmbedder):  # the toy embedder, reading with the shipped base's 82 words
        tokenizer = load_tokenizer("default")

    model = WordLevel()
    index, _ = build_index(model, TOY_SPEC, colour_dir, tmp_path / "ix")
    with TestClient(create_app(index, model)) as client:
        body = client.post("/search", json={"text": "a green digit eight", "k": 2}).json()
        assert body["unknown_words"] == ["digit", "eight"]
        assert client.post("/search", json={"text": "a green circle", "k": 2}).json()["unknown_words"] == []
        image = (colour_dir / "red.png").read_bytes()
        assert "unknown_words" not in client.post("/search", files={"file": ("q.png", image, "image/png")}).json()


def test_search_reports_timings_and_more_like_an_indexed_image(service):
    """The page's latency line and its "more like this": `timings_ms`, and `image_id` queries that
    rank the other images by the indexed image (itself left out)."""
    client, index, colour_dir = service
    body = client.post("/search", json={"text": "red", "k": 2}).json()
    t = body["timings_ms"]
    assert set(t) == {"embed", "search", "total"} and all(v >= 0 for v in t.values())
    assert t["total"] >= t["embed"] + t["search"]
    blue = next(e.id for e in index.entries if e.path.endswith("blue.png"))
    body = client.post("/search", json={"image_id": blue, "k": 3}).json()
    assert body["query"] == {"image_id": blue} and [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert blue not in [r["id"] for r in body["results"]]
    # The nearest others share a colour with blue.png: green.png's small circle, yellow.png's square.
    assert body["results"][0]["path"].endswith(("green.png", "yellow.png"))
    assert len(client.post("/search", json={"image_id": blue}).json()["results"]) == 7  # the 7 others
    png = (colour_dir / "red.png").read_bytes()
    r = client.post("/search", files={"file": ("q.png", png, "image/png")}, data={"image_id": str(blue)})
    assert r.status_code == 422 and "not an image and image_id together" in r.json()["detail"], r.text
    r = client.post("/search", data={"image_id": str(blue), "k": "1"}, files={"unused": ("a", b"", "text/plain")})
    assert r.status_code == 200 and r.json()["query"] == {"image_id": blue}  # multipart works too
    assert client.post("/search", json={"image_id": 999}).status_code == 404
    for bad in ("blue", True, 1.5, [blue]):
        r = client.post("/search", json={"image_id": bad})
        assert r.status_code == 422 and "image_id must be an integer" in r.json()["detail"], (bad, r.text)
    r = client.post("/embed/image", json={"image_id": blue})
    assert r.status_code == 422 and "only images" in r.json()["detail"]


def test_examples_from_stored_captions_else_a_fixed_list(service, toy, colour_dir, tmp_path):
    """`/examples`: captions spread over the index (one per image, short ones), or the fixed list for
    an index built from a folder."""
    from fastapi.testclient import TestClient

    from vladva.data.manifest import Record, write_manifest
    from vladva.serve.service import DEFAULT_EXAMPLES, create_app

    client, _, _ = service  # built from a folder: no captions
    assert client.get("/examples").json() == {"examples": list(DEFAULT_EXAMPLES[:6]), "source": "default"}
    assert client.get("/examples?n=0").status_code == 422
    long = "a " + "very " * 20 + "long caption"
    recs = [Record(c, colour_dir / f"{c}.png", [long, f"a {c} square"]) for c in COLOUR_NAMES]
    write_manifest(colour_dir / "m.jsonl", recs)
    index, _ = build_index(toy, TOY_SPEC, colour_dir / "m.jsonl", tmp_path / "captioned")
    with TestClient(create_app(index, toy)) as captioned:
        four = captioned.get("/examples?n=4").json()
        assert four == {"examples": [f"a {c} square" for c in COLOUR_NAMES[::2]], "source": "captions"}
        assert len(captioned.get("/examples?n=20").json()["examples"]) == 8  # one per image, no repeats
        hit = captioned.post("/search", json={"text": "red", "k": 1}).json()["results"][0]
        assert hit["record_id"] == "red" and hit["captions"] == [long, "a red square"]


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"text": "red", "k": 0}, "k must be between 1 and 20, got 0"),
        ({"text": "red", "k": 21}, "k must be between 1 and 20, got 21"),
        ({"text": "red", "k": "many"}, "k must be an integer"),
        ({"k": 3}, "no query"),
        ({"text": ""}, "texts[0] must be a non-empty string"),
    ],
)
def test_search_rejects_bad_input(service, payload, message):
    client, _, _ = service
    r = client.post("/search", json=payload)
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_images_endpoint_serves_only_indexed_ids(service):
    client, _, _ = service
    assert client.get("/images/999").status_code == 404
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/images/-1").status_code == 404


def test_body_size_limit(service):
    client, _, _ = service
    r = client.post("/embed/text", json={"texts": ["red " * 20000]})  # ~80 kB > 64 KiB
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must still hold while streaming
        for _ in range(20):
            yield b"x" * 8192

    r = client.post("/embed/text", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]

    def upload_chunks():  # a streamed multipart upload, stopped while the form is being parsed
        yield b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        yield from chunks()
        yield b"\r\n--XX--\r\n"

    r = client.post("/search", content=upload_chunks(), headers={"content-type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]
    big = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)))
    assert len(big) > 65536
    r = client.post("/search", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]


def test_request_time_limit(toy, colour_dir, tmp_path):
    from fastapi.testclient import TestClient

    from vladva.serve.service import ServiceSettings, create_app

    class Slow(ColourHistogramEmbedder):
        def encode_texts(self, texts, batch_size=64, show_progress=False):
            time.sleep(0.5)
            return super().encode_texts(texts)

    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    with TestClient(create_app(index, Slow(), ServiceSettings(request_timeout_s=0.1))) as client:
        r = client.post("/search", json={"text": "red"})
        assert r.status_code == 504 and "limit of 0.1 s" in r.json()["detail"]
        assert client.get("/health").status_code == 200


def test_concurrent_requests_share_model_calls(toy, colour_dir, tmp_path):
    import httpx

    from vladva.serve.service import ServiceSettings, create_app

    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    counting = ColourHistogramEmbedder()
    app = create_app(index, counting, ServiceSettings(max_batch=8, max_wait_ms=50))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            rs = await asyncio.gather(*(client.post("/search", json={"text": c, "k": 1}) for c in COLOUR_NAMES))
        await app.state.text_batcher.close()
        return rs

    responses = asyncio.run(main())
    tops = [r.json()["results"][0]["path"] for r in responses]
    assert [t.rsplit("/", 1)[1] for t in tops] == [f"{c}.png" for c in COLOUR_NAMES]  # each got its own answer
    text_calls = [n for kind, n in counting.calls if kind == "text"]
    assert sum(text_calls) == 8 and len(text_calls) < 8, text_calls  # 8 requests, fewer model calls


def test_search_index_library_call(toy, colour_dir, tmp_path):
    """`vladva.serve.search.search_index`, the function behind `vladva search`: text -> images,
    image -> the lines of a captions file, and the errors a command turns into one line."""
    from vladva.errors import UserError
    from vladva.serve.search import search_index

    index, _ = build_index(toy, TOY_SPEC, colour_dir, tmp_path / "ix")
    found = search_index(index, toy, text="green", k=2)
    assert found.target == "images" and [r["rank"] for r in found.results] == [1, 2]
    assert found.results[0]["path"].endswith("green.png")
    assert found.to_json() == {"query": {"text": "green"}, "target": "images", "results": found.results}

    caps = tmp_path / "caps.txt"
    caps.write_text("a purple thing\n\na blue square\n")
    found = search_index(index, toy, image=colour_dir / "blue.png", captions_file=caps)
    assert found.target == "captions" and found.source == str(caps)
    assert [r["caption"] for r in found.results] == ["a blue square", "a purple thing"]
    assert "ids" not in found.results[0]  # ids only for captions stored in the index

    for kwargs, message in [
        ({"text": "red", "image": colour_dir / "red.png"}, "exactly one"),
        ({"text": "  "}, "the text query is empty"),
        ({"text": "red", "target": "pixels"}, "--target must be images or captions"),
        ({"text": "red", "target": "captions"}, "no captions to rank in the index captions"),
    ]:
        with pytest.raises(UserError, match=message):
            search_index(index, toy, **kwargs)


# ---- CLI end to end -------------------------------------------------------------------------


def test_cli_index_build_add_and_search_json(colour_dir, tmp_path):
    from typer.testing import CliRunner

    from vladva.cli import app

    runner = CliRunner()
    out = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--model", TOY_SPEC, "--images", str(colour_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "index of 8 images (flat, dim 9)" in r.stdout
    r = runner.invoke(app, ["search", "--index", str(out), "a white circle", "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["query"] == {"text": "a white circle"} and [x["rank"] for x in body["results"]] == [1, 2]
    assert body["results"][0]["path"].endswith("white.png")
    r = runner.invoke(
        app, ["search", "--index", str(out), "--image", str(colour_dir / "blue.png"), "--json", "-k", "1"]
    )
    assert json.loads(r.stdout)["results"][0]["path"].endswith("blue.png")
    (tmp_path / "caps.txt").write_text("a green square\na blue square\n\na pink cross\n")
    r = runner.invoke(
        app,
        [
            "search",
            "--index",
            str(out),
            "--image",
            str(colour_dir / "blue.png"),
            "--captions",
            str(tmp_path / "caps.txt"),
            "--json",
        ],
    )
    assert next(x["caption"] for x in json.loads(r.stdout)["results"]) == "a blue square"
    more = tmp_path / "more"
    more.mkdir()
    two_colour_image(3).save(more / "extra.png")
    r = runner.invoke(app, ["index", "add", str(out), "--images", str(more)])
    assert r.exit_code == 0 and "index now holds 9 images" in r.stdout, r.output
    r = runner.invoke(app, ["search", "--index", str(out), "red"])  # the rich table
    assert r.exit_code == 0 and "red.png" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "--index", "{out}", "red", "--image", "{img}"], "exactly one"),
        (["search", "--index", "{tmp}/nowhere", "red"], "not found"),
        (["search", "--index", "{out}", "--image", "{tmp}/missing.png"], "image file not found"),
        (["search", "--index", "{out}", "red", "--target", "captions"], "no captions to rank"),
        (["index", "build", "--model", "nosuch:x", "--images", "{tmp}", "--out", "{tmp}/o"], "nosuch"),
        (["index", "build", "--model", TOY_SPEC, "--images", "{tmp}/none", "--out", "{tmp}/o"], "no such folder"),
        (
            ["index", "build", "--model", TOY_SPEC, "--images", "{img}", "--out", "{tmp}/o", "--kind", "lsh"],
            "unknown index kind",
        ),
        (["index", "add", "{out}", "--images", "{tmp}", "--model", "clip:x"], "mix two embedding spaces"),
    ],
)
def test_cli_errors_are_one_line(colour_dir, tmp_path, args, message):
    from typer.testing import CliRunner

    from vladva.cli import app

    out = tmp_path / "ix"
    build_index(ColourHistogramEmbedder(), TOY_SPEC, colour_dir, out)
    fill = {"out": str(out), "img": str(colour_dir / "red.png"), "tmp": str(tmp_path)}
    r = CliRunner().invoke(app, [a.format(**fill) for a in args])
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert "Traceback" not in r.output


# ---- the real model -------------------------------------------------------------------------


def test_real_vladva_model_through_spec_cli_and_service(colour_dir, tmp_path):
    """`vladva:BASE:WEIGHTS` on a tiny random LLaVA: the same index, search and service code, no changes."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.model import VladVA
    from vladva.serve.models import load_embedder
    from vladva.serve.service import create_app
    from vladva.testing import build_tiny_llava

    base = build_tiny_llava(tmp_path / "tiny-llava")
    model = VladVA.from_pretrained(base)
    model.prepare_for_training()  # soft prompts + LoRA, saved untrained: the weights folder of a trained model
    weights = model.save_weights(tmp_path / "weights", base_model=str(base))
    spec = f"vladva:{base}:{weights}"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "index",
            "build",
            "--model",
            spec,
            "--images",
            str(colour_dir),
            "--out",
            str(tmp_path / "ix"),
            "--batch-size",
            "4",
        ],
    )
    assert r.exit_code == 0, r.output
    index = EmbeddingIndex.load(tmp_path / "ix")
    assert index.meta.model == spec and len(index) == 8 and index.meta.dim == 64  # the tiny Llama's hidden size
    # The model spec is read back from index.json; an indexed image finds itself.
    r = runner.invoke(
        app, ["search", "--index", str(tmp_path / "ix"), "--image", str(colour_dir / "blue.png"), "-k", "1", "--json"]
    )
    top = json.loads(r.stdout)["results"][0]
    assert top["path"].endswith("blue.png") and top["score"] == pytest.approx(1.0, abs=1e-4)

    embedder = load_embedder(spec)
    with TestClient(create_app(index, embedder)) as client:
        r = client.post("/search", json={"text": "a red square", "k": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        emb = np.array(client.post("/embed/text", json={"texts": ["a red square"]}).json()["embeddings"])
        assert emb.shape == (1, 64) and np.allclose(emb, embedder.encode_texts(["a red square"]).numpy(), atol=1e-5)


def test_cli_serve_binds_localhost_and_warns_on_public_bind(colour_dir, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from vladva.cli import app

    build_index(ColourHistogramEmbedder(), TOY_SPEC, colour_dir, tmp_path / "ix")
    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "ix"), "--port", "8123"])
    assert r.exit_code == 0 and "WARNING" not in r.stderr, r.output
    served, kw = runs[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123 and len(served.state.index) == 8
    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "ix"), "--host", "0.0.0.0"])
    assert r.exit_code == 0 and "WARNING: binding 0.0.0.0" in r.stderr and runs[1][1]["host"] == "0.0.0.0"

    class Wide(ColourHistogramEmbedder):
        dim = 12

    monkeypatch.setattr("vladva.toyworld.toy_embedder.ColourHistogramEmbedder", Wide)  # what toy:colours builds
    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "ix")])
    assert r.exit_code == 2 and "12-dim vectors" in r.stderr and len(runs) == 2


def test_cli_image_to_index_captions(toy, colour_dir, tmp_path):
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.data.manifest import Record, write_manifest

    recs = [Record(c, colour_dir / f"{c}.png", [f"a large {c} square", "two shapes"]) for c in COLOUR_NAMES]
    write_manifest(colour_dir / "m.jsonl", recs)
    build_index(toy, TOY_SPEC, colour_dir / "m.jsonl", tmp_path / "ix")
    args = [
        "search",
        "--index",
        str(tmp_path / "ix"),
        "--image",
        str(colour_dir / "orange.png"),
        "--target",
        "captions",
    ]
    r = CliRunner().invoke(app, [*args, "--json", "-k", "9"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["results"]
    assert rows[0]["caption"] == "a large orange square" and rows[0]["ids"] == [COLOUR_NAMES.index("orange")]
    assert len(rows) == 9 and [x["ids"] for x in rows if x["caption"] == "two shapes"] == [list(range(8))]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "a large orange square" in r.stdout


def test_index_serves_from_any_working_directory(colour_dir, tmp_path, monkeypatch):
    """The model folders an index names are stored resolved (relative to the index when inside it,
    absolute otherwise), so `vladva serve --index /abs/path` works from another folder."""
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.model import VladVA
    from vladva.testing import build_tiny_llava

    project = tmp_path / "project"
    base = build_tiny_llava(project / "runs" / "index" / "base")  # a model folder inside the index folder
    model = VladVA.from_pretrained(base)
    model.prepare_for_training()
    model.save_weights(project / "runs" / "weights", base_model=str(base))
    monkeypatch.chdir(project)
    runner = CliRunner()
    spec = "vladva:runs/index/base:runs/weights"  # relative to the folder the index is built from
    r = runner.invoke(
        app,
        ["index", "build", "--model", spec, "--images", str(colour_dir), "--out", "runs/index", "--batch-size", "8"],
    )
    assert r.exit_code == 0, r.output
    stored = json.loads((project / "runs" / "index" / "index.json").read_text())["model"]
    assert stored == f"vladva:base:{project / 'runs' / 'weights'}"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    r = runner.invoke(app, ["serve", "--index", str(project / "runs" / "index")])
    assert r.exit_code == 0, r.output
    with TestClient(served[0]) as client:
        found = client.post("/search", json={"text": "a red square", "k": 2})
        assert found.status_code == 200 and len(found.json()["results"]) == 2
    r = runner.invoke(app, ["search", "--index", str(project / "runs" / "index"), "a red square", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["results"], r.output
    r = runner.invoke(  # the same model named from here is the index's model: adding is allowed
        app,
        ["index", "add", str(project / "runs" / "index"), "--images", str(colour_dir),
         "--model", f"vladva:{project / 'runs' / 'index' / 'base'}:../project/runs/weights"],
    )  # fmt: skip
    assert r.exit_code == 0 and "index now holds 8 images" in r.stdout, r.output
