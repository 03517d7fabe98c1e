"""A full disk: checkpoint writes, `vladva export`, `vladva index build` / `index add`, evaluation
reports and the embedding cache end with one clear error (or, for the cache, a warning) and leave
the previous state intact, with no half-written file behind.

Every case runs two ways. `tmpfs`: on a real small file system the test mounts (a 16 MiB tmpfs,
filled until only a few KiB are left just before the write); mounting needs root or CAP_SYS_ADMIN,
so where it is impossible these runs are skipped with the reason. `injected`: everywhere, the same
code path with the disk-full error raised inside the write (ENOSPC after part of the output is
written), so CI without root still tests it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

MODES = ("tmpfs", "injected")
LEFT_BYTES = 8 * 1024  # what a filled tmpfs keeps free for the failing write


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


# ---- a small file system -------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str = "16m") -> str | None:
    """Mount a tmpfs at `where`; None on success, else why it could not be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root (mounting a tmpfs needs root or CAP_SYS_ADMIN)"
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    return None if r.returncode == 0 else f"mount -t tmpfs failed: {r.stderr.strip() or r.returncode}"


@pytest.fixture()
def disk(request, tmp_path, monkeypatch):
    """`(folder, fill, inject)`: a folder on a 16 MiB tmpfs whose `fill()` leaves LEFT_BYTES free
    (mode tmpfs), or a plain folder where `inject(obj, attr, after=...)` makes a writer fail with
    ENOSPC (mode injected). Exactly one of `fill` / `inject` does something."""
    mode = request.param
    if mode == "injected":
        folder = tmp_path / "disk"
        folder.mkdir()

        def inject(obj, attr: str, after=None, failing=None) -> None:
            def full(*args, **kwargs):
                if after is not None:  # write part of the output first, as a real full disk would
                    after(*args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(obj, attr, failing or full)

        yield folder, lambda leave=LEFT_BYTES: None, inject
        return
    folder = tmp_path / "fs"
    why = _mount_tmpfs(folder)
    if why is not None:
        pytest.skip(f"no small file system to fill: {why}; the 'injected' runs test the same code paths")
    filler = folder / ".filler"

    def fill(leave: int = LEFT_BYTES) -> None:
        with open(filler, "ab", buffering=0) as f:  # unbuffered: closing has nothing left to write
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))

    try:
        yield folder, fill, lambda *a, **k: None
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _leftovers(folder: Path) -> list[str]:
    """Temporary or partial files a failed write must not leave behind."""
    return sorted(
        p.name
        for p in folder.rglob("*")
        if p.name.endswith(".tmp") or ".partial-" in p.name or p.name.startswith(".tmp-")
    )


# ---- shared tiny things --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random LLaVA, VladVA on it prepared for training, and its saved trained weights."""
    from vladva.model.vladva import VladVA
    from vladva.testing import build_tiny_llava

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("disk-tiny")
    base = build_tiny_llava(root / "base", hidden=32, layers=1)
    model = VladVA.from_pretrained(base)
    model.prepare_for_training()
    weights = model.save_weights(root / "weights", base_model=str(base))
    return base, model, weights


# ---- the writers ---------------------------------------------------------------------------------


def _checkpoint(folder: Path, fill, inject, tiny) -> tuple[str, callable]:
    from vladva.train import checkpoint as ckpt_mod
    from vladva.train.config import TrainConfig

    _, model, _ = tiny
    run = folder / "run"
    state = {"step": 2, "optimizer": {}, "big": torch.zeros(64 * 1024)}  # 256 KiB: the tmpfs cannot hold it
    ckpt_mod.save_checkpoint(run, 2, model, state, TrainConfig(), "base")
    fill()
    inject(
        model,
        "save_weights",
        after=lambda out, **kw: (Path(out).mkdir(parents=True), (Path(out) / "x").write_bytes(b"1")),
    )
    with pytest.raises(Exception) as e:
        ckpt_mod.save_checkpoint(run, 4, model, state | {"step": 4}, TrainConfig(), "base")

    def check() -> None:
        root = run / "checkpoints"
        assert (root / "latest").read_text().strip() == "step-000002"
        ckpt_mod.check_checkpoint(root / "step-000002")
        assert ckpt_mod.load_trainer_state(root / "step-000002")["step"] == 2
        assert not (root / "step-000004").exists() and _leftovers(run) == []

    return e, check


def _export(folder: Path, fill, inject, tiny) -> tuple[str, callable]:
    from vladva.export.writer import ExportRequest, export_model
    from vladva.model.vladva import VladVA

    base, _, weights = tiny
    fill()
    inject(
        VladVA,
        "merge",
        after=lambda self, out: (
            Path(out).mkdir(parents=True, exist_ok=True),
            (Path(out) / "config.json").write_text("{"),
        ),
    )
    with pytest.raises(Exception) as e:
        export_model(ExportRequest(base=base, out=folder / "exported", weights=weights), log=lambda _: None)

    def check() -> None:
        assert not (folder / "exported").exists() and _leftovers(folder) == []

    return e, check


def _images(folder: Path, copies: int) -> Path:
    from vladva.toyworld.scene import COLOURS, Scene, SceneObject, render_scene

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for i, colour in enumerate(COLOURS):
            render_scene(Scene((SceneObject("square", colour, "large", 10 + k, 10 + i % 3),))).save(
                folder / f"{colour}-{k}.png"
            )
    return folder


def _index_build(folder: Path, fill, inject, tmp_path) -> tuple[str, callable]:
    from vladva.serve import index as index_mod
    from vladva.serve.build import build_index
    from vladva.serve.models import load_embedder

    images = _images(tmp_path / "images", copies=200)  # 1,800 vectors: 64 KiB of FAISS data
    fill()
    inject(index_mod, "atomic_write_text")  # the id map, after the FAISS file was written
    with pytest.raises(Exception) as e:
        build_index(load_embedder("toy:colours"), "toy:colours", images, folder / "index")

    def check() -> None:
        with pytest.raises(FileNotFoundError, match="index.json: not found"):
            index_mod.EmbeddingIndex.load(folder / "index")
        names = sorted(p.name for p in (folder / "index").iterdir()) if (folder / "index").exists() else []
        assert [n for n in names if n != ".lock"] == [], names  # nothing half-written is left

    return e, check


def _index_add(folder: Path, fill, inject, tmp_path) -> tuple[str, callable]:
    from vladva.serve import index as index_mod
    from vladva.serve.build import build_index, update_index
    from vladva.serve.models import load_embedder

    toy = load_embedder("toy:colours")
    build_index(toy, "toy:colours", _images(tmp_path / "first", copies=1), folder / "index")
    before = sorted(p.name for p in (folder / "index").iterdir())
    fill()
    inject(index_mod, "atomic_write_text")
    with pytest.raises(Exception) as e:
        update_index(folder / "index", toy, _images(tmp_path / "more", copies=200))

    def check() -> None:
        index = index_mod.EmbeddingIndex.load(folder / "index")
        assert (index.meta.version, len(index)) == (1, 8)
        assert index.search(toy.encode_texts(["blue"]).numpy(), 1)[0][0].path.endswith("blue-0.png")
        assert sorted(p.name for p in (folder / "index").iterdir()) == before

    return e, check


def _report(folder: Path, fill, inject, tmp_path) -> tuple[str, callable]:
    from vladva.eval import report as report_mod

    models = [
        {"name": f"model {i}", "spec": f"toy:{i}", "metrics": {"sugarcrepe": {"swap_att": 50.0 + i}}} for i in range(3)
    ]
    old = {"schema": report_mod.REPORT_SCHEMA, "runs": [{"path": "old"}], "models": models[:1]}
    report_mod.write_report(old, folder / "eval")
    before = {p.name: p.read_bytes() for p in (folder / "eval").iterdir()}
    new = {"schema": report_mod.REPORT_SCHEMA, "runs": [{"path": "new", "notes": "x" * 64 * 1024}], "models": models}
    fill()
    real = Path.write_text

    def json_half_written(self, data, *args, **kwargs):  # the markdown is written, then the JSON fails
        if self.name.startswith(".results.json"):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *args, **kwargs)

    inject(Path, "write_text", failing=json_half_written)
    with pytest.raises(Exception) as e:
        report_mod.write_report(new, folder / "eval")

    def check() -> None:
        assert {p.name: p.read_bytes() for p in (folder / "eval").iterdir()} == before

    return e, check


FULL_DISK_CASES = [
    Case(
        "checkpoint",
        "a training checkpoint (step 4) written when the disk has no room for it; step 2's is complete",
        "DiskFullError: no space left on device writing checkpoint step-000004 (...); the last complete checkpoint "
        "step-000002 is intact: free some space, then run again with --resume. `latest` still names step 2, "
        "no partial folder is left",
        _checkpoint,
    ),
    Case(
        "export",
        "`vladva export` (merged folder) onto a full disk",
        "DiskFullError: no space left on device writing the export exported (...); nothing was written to OUT "
        "(the partial copy was removed)",
        _export,
    ),
    Case(
        "index-build",
        "`vladva index build` of 1,800 images (a 64 KiB FAISS file) onto a full disk",
        "DiskFullError: no space left on device writing index version 1 (...); no index was written. The folder "
        "holds no index and no stray file",
        _index_build,
    ),
    Case(
        "index-add",
        "`vladva index add` of 1,800 images to a 9-image index on a full disk",
        "DiskFullError: ... writing index version 2 (...); the index still holds version 1 (8 images), which "
        "loads and answers searches; its folder is exactly as before",
        _index_add,
    ),
    Case(
        "eval-report",
        "results.json / .md / .png rewritten on a full disk over an earlier report",
        "DiskFullError: ... writing the evaluation report (...); the previous results in OUT, if any, are "
        "unchanged. The three files are byte-identical to before",
        _report,
    ),
]
EXPECTED = {
    "checkpoint": "writing checkpoint step-000004",
    "export": "writing the export exported",
    "index-build": "writing index version 1",
    "index-add": "writing index version 2",
    "eval-report": "writing the evaluation report",
}
INTACT = {
    "checkpoint": "the last complete checkpoint step-000002 is intact: free some space, then run again with --resume",
    "export": "nothing was written to",
    "index-build": "no index was written",
    "index-add": "the index still holds version 1 (8 images)",
    "eval-report": "are unchanged; free some space and run again",
}


@pytest.mark.parametrize("disk", MODES, indirect=True)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in FULL_DISK_CASES])
def test_a_full_disk_gives_one_clear_error_and_keeps_the_previous_state(case, disk, tiny, tmp_path):
    from vladva.storage import DiskFullError

    folder, fill, inject = disk
    needs_model = case.id in ("checkpoint", "export")
    e, check = case.data(folder, fill, inject, tiny if needs_model else tmp_path)
    assert e.type is DiskFullError, f"{e.type.__name__}: {e.value}"
    message = str(e.value)
    assert message.startswith("no space left on device " + EXPECTED[case.id]), message
    assert INTACT[case.id] in message and "\n" not in message
    check()


@pytest.mark.parametrize("disk", MODES, indirect=True)
def test_the_embedding_cache_on_a_full_disk_warns_and_the_evaluation_goes_on(disk, tmp_path, caplog):
    """An evaluation whose cache folder is on a full disk: a warning per failed cache write, the same
    metrics as without a cache, no temporary file left."""
    from vladva.eval import cache as cache_mod
    from vladva.eval.models import LoadedModel
    from vladva.eval.runner import EvalConfig, run_evaluation
    from vladva.serve.models import load_embedder

    folder, fill, inject = disk
    data = Path(__file__).parent / "fixtures" / "benchmarks"
    bench = shutil.copytree(data, tmp_path / "bench")
    from vladva.toyworld.scene import Scene, SceneObject, render_scene

    for rel, objects in json.loads((bench / "scenes.json").read_text()).items():
        if not rel.startswith("_"):
            (bench / rel).parent.mkdir(parents=True, exist_ok=True)
            render_scene(Scene(tuple(SceneObject(*o) for o in objects), 32)).save(bench / rel)
    model = LoadedModel("toy", "toy:colours", load_embedder("toy:colours"), "toy-identity")
    fill(leave=0)
    inject(cache_mod, "save_file")
    cfg = EvalConfig(data=str(bench), suites=["sugarcrepe", "winoground"], cache_dir=str(folder / "cache"))
    cfg.show_progress = False
    with caplog.at_level(logging.WARNING, logger="vladva.eval.cache"):
        got = run_evaluation([model], cfg, log=lambda _: None)["models"][0]
    plain = run_evaluation(
        [model],
        EvalConfig(data=str(bench), suites=["sugarcrepe", "winoground"], use_cache=False, show_progress=False),
        log=lambda _: None,
    )
    assert got["metrics"] == plain["models"][0]["metrics"]
    assert "embedding cache: could not write to" in caplog.text
    assert _leftovers(folder) == []


def test_vague_writer_errors_count_as_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    """torch.save and FAISS say only "file write failed" on ENOSPC: taken for a full disk when less
    than 1 MiB is free there, passed on unchanged otherwise; safetensors' StorageFull always is."""
    from vladva import storage

    vague = RuntimeError(
        "[enforce fail at inline_container.cc:664] PytorchStreamWriter failed writing file data/0: file write failed"
    )
    storage_full = RuntimeError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )
    assert storage.is_disk_full(storage_full) and storage.is_disk_full(OSError(errno.ENOSPC, "x"))
    assert not storage.is_disk_full(vague, tmp_path)  # plenty of space here
    monkeypatch.setattr(storage, "free_bytes", lambda where: 4096)
    assert storage.is_disk_full(vague, tmp_path)
    assert not storage.is_disk_full(ValueError("bad value"), tmp_path)
    pattern = r"^no space left on device writing X \(.*4,096 bytes free\); Y$"
    with pytest.raises(storage.DiskFullError, match=pattern), storage.writing("X", tmp_path, "Y"):
        raise vague


def test_cli_export_on_a_full_disk_is_one_error_line(tiny, tmp_path, monkeypatch):
    """`vladva export` when the disk fills: exit 2, one `error: no space left on device ...` line."""
    from typer.testing import CliRunner

    from vladva.cli import app
    from vladva.model.vladva import VladVA

    base, _, weights = tiny

    def full(self, out):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(VladVA, "merge", full)
    r = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--model", str(base), "--weights", str(weights)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert (
        r.stderr.startswith("error: no space left on device writing the export out") and len(r.stderr.splitlines()) == 1
    )
