"""Webdataset shards: round trip, split across processes x workers, resume, corrupt members, and
training batches from shards (same hard negatives as from the manifest)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from vladva.data.manifest import Negative, Record, read_manifest, write_manifest
from vladva.data.shards import ShardStream, resolve_shards, split_shards, write_shards
from vladva.train.batches import StepCollator, TrainBatches, collate_records


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    """A tiny model's input builder: the training collator builds each batch's tensors with it."""
    from vladva.model.vladva import VladVA
    from vladva.testing import build_tiny_llava

    return VladVA.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("llava"))).inputs


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """10 records with distinct colours (so images can be told apart), one with a long caption in three."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "images").mkdir()
    records = []
    for i in range(10):
        path = root / "images" / f"{i:03d}.{'jpg' if i == 4 else 'png'}"
        Image.new("RGB", (8, 8), (20 * i, 0, 255 - 20 * i)).save(path)
        records.append(
            Record(
                f"rec.{i:03d}",
                path,
                [f"caption {i}", f"other {i}"],
                f"a long caption number {i}" if i % 3 == 0 else None,
                {"n": i},
            )
        )
    write_manifest(root / "train.jsonl", records)
    return root / "train.jsonl"


def _drain(stream, n=None):
    out = []
    for s in stream:
        out.append(s)
        if n is not None and len(out) == n:
            break
    return out


def test_round_trip_gives_back_the_records(manifest, tmp_path):
    report = write_shards(manifest, tmp_path / "shards", shard_size=4)
    assert [s["samples"] for s in report.shards] == [4, 4, 2] and report.skipped == []
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert index["samples"] == 10 and [s["name"] for s in index["shards"]] == [
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
    ]
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        assert tar.getnames()[:2] == ["rec_000.json", "rec_000.png"]  # key: the id with '.' replaced
    records, _ = read_manifest(manifest)
    got = {s.key: s for s in _drain(ShardStream(resolve_shards(tmp_path / "shards"), seed=3, epochs=1))}
    assert len(got) == 10
    for rec in records:
        s = got[rec.id.replace(".", "_")]
        assert (s.captions, s.long_caption, s.meta) == (rec.captions, rec.long_caption, rec.meta)
        original = Image.open(rec.image).convert("RGB")
        if rec.image.suffix == ".png":  # lossless: identical pixels; the JPEG keeps its own bytes
            assert list(s.image.getdata()) == list(original.getdata())
        assert s.image.size == original.size


def test_brace_pattern_and_missing_shards(manifest, tmp_path):
    write_shards(manifest, tmp_path, shard_size=5)
    assert len(resolve_shards(f"{tmp_path}/train-{{000000..000001}}.tar")) == 2
    with pytest.raises(FileNotFoundError, match="1 of 3 shards missing"):
        resolve_shards(f"{tmp_path}/train-{{000000..000002}}.tar")


def _keys_per_split(shards, world, workers, seed=0, epochs=1):
    """Every sample each of `world` processes x `workers` DataLoader workers reads in `epochs`."""
    seen = {}
    for rank in range(world):
        stream = ShardStream(shards, seed=seed, rank=rank, world=world, epochs=epochs)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=lambda s: s)
        for s in loader:
            seen.setdefault(s.split, []).append(s.key)
    return seen


def test_two_ranks_two_workers_read_every_sample_exactly_once(manifest, tmp_path):
    write_shards(manifest, tmp_path, shard_size=2)  # 5 shards for 4 splits
    shards = resolve_shards(tmp_path)
    seen = _keys_per_split(shards, world=2, workers=2)
    assert sorted(seen) == [0, 1, 2, 3]  # rank r, worker w -> split 2r + w
    keys = [k for ks in seen.values() for k in ks]
    assert sorted(keys) == [f"rec_{i:03d}" for i in range(10)]  # each exactly once
    # and the next epoch reshuffles which split reads which shard
    assert split_shards(shards, 0, 0, 0, 4) != split_shards(shards, 0, 1, 0, 4) or split_shards(
        shards, 0, 0, 1, 4
    ) != split_shards(shards, 0, 1, 1, 4)


def test_too_few_shards_for_the_splits_is_a_clear_error(manifest, tmp_path):
    write_shards(manifest, tmp_path, shard_size=10)
    with pytest.raises(ValueError, match="1 shards cannot feed 2 processes x 1 data workers"):
        _drain(ShardStream(resolve_shards(tmp_path), rank=0, world=2, epochs=1))


def test_resume_position_skips_what_was_consumed(manifest, tmp_path):
    write_shards(manifest, tmp_path, shard_size=3)
    shards = resolve_shards(tmp_path)
    full = [s.key for s in _drain(ShardStream(shards, seed=1, epochs=2))]
    assert len(full) == 20
    for consumed in (1, 3, 4, 9, 13):
        first = _drain(ShardStream(shards, seed=1, epochs=2), consumed)
        resumed = ShardStream(shards, seed=1, epochs=2, positions={0: first[-1].position})
        assert [s.key for s in first] + [s.key for s in _drain(resumed)] == full, consumed


def test_shard_batches_state_resumes_exactly(manifest, builder, tmp_path):
    write_shards(manifest, tmp_path, shard_size=3)
    collator = StepCollator(builder, 2, "random", 0)
    whole = TrainBatches(str(tmp_path), collator, 4, seed=0)
    want = [whole.next().captions for _ in range(4)]
    first = TrainBatches(str(tmp_path), collator, 4, seed=0)
    got = [first.next().captions for _ in range(2)]
    state = json.loads(json.dumps(first.state()))  # what the checkpoint stores
    assert state["micro_batch"] == 2 and set(state["shards"]) == {"world", "workers", "positions"}
    second = TrainBatches(str(tmp_path), collator, 4, seed=0, shard_state=state["shards"])
    got += [second.next().captions for _ in range(2)]
    assert got == want
    with pytest.raises(ValueError, match="resume with the same"):
        TrainBatches(str(tmp_path), collator, 4, seed=0, num_workers=2, shard_state=state["shards"])


def test_shard_batches_draw_the_manifests_hard_negatives(manifest, builder, tmp_path):
    """Hard negatives travel through the shards: each image of a shard batch gets the negatives the
    manifest path gives the same record (the drawn caption's own edits first, then the record's)."""
    records, _ = read_manifest(manifest)
    for i, r in enumerate(records):
        if i % 2 == 0:  # typed negatives (a kind) beside untyped ones (plain strings)
            r.negative_captions = [Negative(f"not caption {i}", "replace_rel"), f"never {i}"]
            r.caption_negatives = [[Negative(f"caption {i} edited", "swap_att")], []]
        elif i == 3:
            r.caption_negatives = [["caption 3 edited"], ["other 3 edited"]]
    negatives = manifest.parent / "negatives.jsonl"  # beside the images: manifest paths are relative
    write_manifest(negatives, records)
    records, _ = read_manifest(negatives)
    assert records[0].caption_negatives[0] == [Negative("caption 0 edited", "swap_att")]
    write_shards(negatives, tmp_path / "shards", shard_size=3)
    got = {s.key: s for s in _drain(ShardStream(resolve_shards(tmp_path / "shards"), seed=0, epochs=1))}
    assert got["rec_000"].negative_captions == [Negative("not caption 0", "replace_rel"), Negative("never 0")]
    assert got["rec_000"].caption_negatives == [[Negative("caption 0 edited", "swap_att")], []]
    assert got["rec_003"].caption_negatives == records[3].caption_negatives and got["rec_001"].caption_negatives == []
    assert got["rec_003"].caption_negatives[0][0].kind is None  # a plain string stays of unknown kind

    def per_row(batch) -> list[list[tuple[str, str]]]:
        pairs = list(zip(batch.negatives, batch.negative_kinds, batch.negative_rows))
        return [sorted((n, k) for n, k, r in pairs if r == row) for row in range(len(batch))]

    for k in (1, 5):  # one: each image's own caption edit; five: every negative of the record
        collator = StepCollator(builder, 2, "first", 0, hard_negatives=k)
        batches = TrainBatches(str(tmp_path / "shards"), collator, 4, seed=0)
        for _ in range(2):
            batch = batches.next()
            rows = [int(c.split()[-1]) for c in batch.captions]  # "caption i" -> record i
            want = collate_records(collator, records, rows)
            assert batch.captions == want.captions and per_row(batch) == per_row(want), k
            assert [len(t) for t in batch.text_chunks] == [len(batch) + len(batch.negatives)]
            if k == 1:
                edited = [i for i in rows if i % 2 == 0 or i == 3]
                kind = {i: "swap_att" if i % 2 == 0 else "untyped" for i in edited}
                want_rows = [[(f"caption {i} edited", kind[i])] for i in edited]
                assert [per_row(batch)[rows.index(i)] for i in edited] == want_rows
            else:
                assert all(len(neg) == 3 for i, neg in zip(rows, per_row(batch)) if i % 2 == 0)


def _corrupt(tar_path: Path, member: str, data: bytes) -> None:
    """Rewrite `tar_path` with `member`'s content replaced by `data`."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, content in members:
            content = data if m.name == member else content
            m.size = len(content)
            tar.addfile(m, io.BytesIO(content))


def test_corrupt_member_is_skipped_counted_and_logged(manifest, builder, tmp_path, caplog):
    write_shards(manifest, tmp_path, shard_size=5)
    _corrupt(tmp_path / "train-000000.tar", "rec_002.png", b"not a png at all")
    _corrupt(tmp_path / "train-000001.tar", "rec_009.json", b"{broken")  # last sample of its shard
    with caplog.at_level(logging.WARNING, logger="vladva.data.shards"):
        samples = _drain(ShardStream(resolve_shards(tmp_path), epochs=1))
    good = [s.key for s in samples if s.image is not None]
    assert len(good) == 8 and "rec_002" not in good and "rec_009" not in good
    skipped = [m for s in samples for m in s.skipped]
    assert len(skipped) == 2
    assert any("train-000000.tar key rec_002: bad .png member" in m for m in skipped)
    assert any("train-000001.tar key rec_009: bad .json member" in m for m in skipped)
    assert sum("skipped sample" in r.message for r in caplog.records) == 2
    batches = TrainBatches(str(tmp_path), StepCollator(builder, 0, "first", 0), 4, seed=0)
    total = sum(len(batches.next().skipped) for _ in range(2))  # 8 good samples = 2 batches of 4
    assert total == 2


def test_writer_skips_unreadable_images_and_bad_lines(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    lines = [{"id": "a", "image": "ok.png", "captions": ["x"]}, {"id": "b", "image": "bad.png", "captions": ["y"]}]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    (tmp_path / "m.jsonl").write_text(text)
    report = write_shards(tmp_path / "m.jsonl", tmp_path / "out", shard_size=10)
    assert report.samples == 1 and len(report.skipped) == 2
    assert any("record b: unreadable image" in s for s in report.skipped)
    assert any("m.jsonl:3" in s for s in report.skipped)


def test_cli_writes_shards_under_vladva_data(manifest, tmp_path):
    vladva = Path(sys.executable).parent / "vladva"
    done = subprocess.run(
        [str(vladva), "data", "shard", "--manifest", str(manifest), "--out", str(tmp_path), "--shard-size", "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 10 samples into 2 shards" in done.stdout
    bad = subprocess.run(
        [str(vladva), "data", "shard", "--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: manifest not found")
