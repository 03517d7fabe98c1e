"""Crash-safe index: `vladva index build` and `vladva index add` killed with SIGKILL at each point of
a save leave the index as it was before or as it is after, never corrupt; a running `vladva serve`
answers every search while an index is added to (or an add is killed), and serves the new version
once it is committed.

The kill lands deterministically: `VLADVA_TEST_PAUSE_AT=POINT:VERSION` (vladva.storage.pause_for_tests)
makes the save write `INDEX/PAUSED-POINT` and sleep there; the test then sends SIGKILL. All commands
are real `vladva` subprocesses on the `toy:colours` embedder, started together so the suite stays fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("faiss")

MODEL = "toy:colours"


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


# data: (command, pause point, what the folder holds after the kill: None = no index, else (version, images))
KILL_CASES = [
    Case(
        "build-mid-files",
        "kill -9 during `index build` (8 images), after index-000001.faiss is written, before its id map",
        "as before: no index (no index.json; loading says 'not found'); the build run again succeeds and "
        "removes the orphan file",
        ("build", "index-files:1", None),
    ),
    Case(
        "build-before-commit",
        "kill -9 during `index build`, both files of version 1 written, index.json not yet",
        "as before: no index; the build run again succeeds",
        ("build", "index-commit:1", None),
    ),
    Case(
        "add-mid-files",
        "kill -9 during `index add` (8 -> 24 images), after index-000002.faiss is written, before its id map",
        "as before: index.json names version 1, whose 8 images load and answer searches; the add run again "
        "commits version 2 with 24 images and no stray file",
        ("add", "index-files:2", (1, 8)),
    ),
    Case(
        "add-before-commit",
        "kill -9 during `index add`, both files of version 2 written, index.json not yet replaced",
        "as before: version 1, 8 images; the add run again commits version 2",
        ("add", "index-commit:2", (1, 8)),
    ),
    Case(
        "add-after-commit",
        "kill -9 during `index add` right after index.json names version 2, before version 1's files are removed",
        "as after: version 2, 24 images; the add run again finds nothing new to add",
        ("add", "index-cleanup:2", (2, 24)),
    ),
]


def _env(pause: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("VLADVA_TEST_PAUSE_AT", None)
    if pause:
        env["VLADVA_TEST_PAUSE_AT"] = pause
    return env


def _start(bench, log: Path, *args: str, pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*bench.vladva_command(), "index", *args], env=_env(pause), stdout=open(log, "w"), stderr=subprocess.STDOUT
    )


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited before {path.name}:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{path.name} never reached"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _state(index_dir: Path) -> dict:
    """What a reader finds in `index_dir`: version, images, the top hit for "blue", the files."""
    from vladva.serve.index import EmbeddingIndex
    from vladva.serve.models import load_embedder

    files = sorted(p.name for p in index_dir.iterdir()) if index_dir.exists() else []
    try:
        index = EmbeddingIndex.load(index_dir)
    except FileNotFoundError as e:
        return {"loaded": None, "error": str(e), "files": files}
    hit = index.search(load_embedder(MODEL).encode_texts(["blue"]).numpy(), 1)[0][0]
    return {"loaded": (index.meta.version, len(index)), "top": Path(hit.path).stem, "files": files}


@pytest.fixture(scope="module")
def kills(service_bench, tmp_path_factory):
    """Each case's command killed at its point, the state it left, and that command run again."""
    from vladva.serve.build import build_index
    from vladva.serve.models import load_embedder

    bench, root = service_bench, tmp_path_factory.mktemp("index-kills")
    first = bench.write_colour_images(root / "first", copies=1)  # 8 images
    more = bench.write_colour_images(root / "more", copies=2)  # 16 other images
    built = root / "built"
    build_index(load_embedder(MODEL), MODEL, first, built)
    procs = {}
    for case in KILL_CASES:
        command, pause, _ = case.data
        folder = root / case.id
        if command == "add":
            shutil.copytree(built, folder)
            args = ["add", str(folder), "--images", str(more)]
        else:
            args = ["build", "--model", MODEL, "--images", str(first), "--out", str(folder)]
        procs[case.id] = (_start(bench, root / f"{case.id}.log", *args, pause=pause), folder, args)
    out = {}
    for case in KILL_CASES:
        proc, folder, args = procs[case.id]
        log = root / f"{case.id}.log"
        _wait_for(folder / f"PAUSED-{case.data[1].split(':')[0]}", proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for marker in folder.glob("PAUSED-*"):
            marker.unlink()
        out[case.id] = {"returncode": proc.returncode, "after_kill": _state(folder)}
    again = {cid: _start(bench, root / f"{cid}-again.log", *args) for cid, (_, _, args) in procs.items()}
    for cid, proc in again.items():
        out[cid]["again_log"] = _finish(proc, root / f"{cid}-again.log")
        out[cid]["again"] = _state(procs[cid][1])
    return out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in KILL_CASES])
def test_killed_index_build_or_add_leaves_the_index_before_or_after(kills, case):
    command, _, expected = case.data
    got = kills[case.id]
    assert got["returncode"] == -signal.SIGKILL
    state = got["after_kill"]
    if expected is None:
        assert state["loaded"] is None and "index.json: not found" in state["error"], state
    else:
        assert state["loaded"] == expected and state["top"].split("-")[0] == "blue", state
    # Run again, the command completes and leaves exactly one committed version (plus at most the previous).
    again = got["again"]
    final = (1, 8) if command == "build" else (2, 24)
    assert again["loaded"] == final and again["top"].split("-")[0] == "blue", again
    versions = sorted(f for f in again["files"] if f.startswith(("index-", "ids-")))
    assert f"index-{final[0]:06d}.faiss" in versions and f"ids-{final[0]:06d}.json" in versions
    assert not [f for f in again["files"] if f.endswith(".tmp") or f.startswith("PAUSED")], again["files"]


def _search_forever(url: str, stop: threading.Event, seen: list) -> None:
    """Post colour searches back to back; record (status, images in the answer's index or error)."""
    colours = ("red", "green", "blue", "yellow")
    with httpx.Client(base_url=url, timeout=30) as http:
        n = 0
        while not stop.is_set():
            colour = colours[n % len(colours)]
            n += 1
            try:
                r = http.post("/search", json={"text": colour, "k": 30})
            except httpx.HTTPError as e:
                seen.append(("error", repr(e)))
                continue
            if r.status_code != 200:
                seen.append((r.status_code, r.text[:200]))
                continue
            results = r.json()["results"]
            ok = Path(results[0]["path"]).stem.split("-")[0] == colour
            seen.append((200, len(results), ok))


def test_service_answers_during_an_add_and_serves_the_new_version(service_bench, tmp_path):
    """`vladva serve --index-reload 0.5` with 4 clients searching back to back: an `index add`
    killed before its commit changes nothing they see; a complete add (8 -> 24 images) is served
    within a second of its commit. Every request answers 200 with the right top hit throughout."""
    from vladva.serve.build import build_index
    from vladva.serve.models import load_embedder

    bench = service_bench
    first = bench.write_colour_images(tmp_path / "first", copies=1)
    more = bench.write_colour_images(tmp_path / "more", copies=2)
    index_dir = tmp_path / "index"
    build_index(load_embedder(MODEL), MODEL, first, index_dir)
    server = bench.start_server(index_dir, tmp_path / "serve.log", "--index-reload", "0.5", timeout=600)
    stop, seen = threading.Event(), [[] for _ in range(4)]
    clients = [threading.Thread(target=_search_forever, args=(server.url, stop, s), daemon=True) for s in seen]
    try:
        for c in clients:
            c.start()
        add = ["add", str(index_dir), "--images", str(more)]
        killed = _start(bench, tmp_path / "killed.log", *add, pause="index-commit:2")
        _wait_for(index_dir / "PAUSED-index-commit", killed, tmp_path / "killed.log")
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        (index_dir / "PAUSED-index-commit").unlink()
        time.sleep(1.5)  # three reload looks: nothing was committed
        assert httpx.get(server.url + "/health", timeout=10).json()["images"] == 8
        _finish(_start(bench, tmp_path / "add.log", *add), tmp_path / "add.log")
        deadline = time.monotonic() + 30
        while (health := httpx.get(server.url + "/health", timeout=10).json())["version"] != 2:
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert health["images"] == 24
        time.sleep(1.0)  # keep searching the new version a while
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        server.stop()
    answers = [a for s in seen for a in s]
    assert len(answers) > 40, len(answers)
    assert [a for a in answers if a[0] != 200] == []
    assert all(a[2] for a in answers)  # the right top hit in every answer
    sizes = {a[1] for a in answers}
    assert sizes == {8, 24}, sizes  # answers came from version 1, then from version 2, nothing in between
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "reload failed" not in log
