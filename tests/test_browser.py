"""The web search page in a real headless Chromium against a live `vladva serve` (uvicorn) on 127.0.0.1.

Chromium is installed with apt once per session if it is missing (CI runs as root on Debian);
the test is skipped only when that is impossible (no apt-get, not root, or apt fails).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vladva.serve.build import build_index
from vladva.toyworld.scene import COLOURS, Scene, SceneObject, render_scene
from vladva.toyworld.toy_embedder import TOY_SPEC, ColourHistogramEmbedder

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def _find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it with apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = "apt-get update -q && apt-get install -y -q chromium"
    try:  # under pytest-timeout's 600 s, which counts this fixture
        done = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=540)
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get took longer than 540 s")
    found = _find_chromium()
    if done.returncode != 0 or not found:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        pytest.skip(f"could not install chromium with apt-get (exit {done.returncode}): {' | '.join(tail)}")
    return found


@pytest.fixture()
def live_service(tmp_path):
    """A uvicorn server on a free 127.0.0.1 port over 8 images: image `<colour>.png` has a large
    object of that colour and a small one of the next colour. Yields (base URL, image folder)."""
    import uvicorn

    from vladva.serve.service import create_app

    names = list(COLOURS)
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(names):
        scene = Scene(
            (SceneObject("square", colour, "large", 10, 10), SceneObject("circle", names[(i + 1) % 8], "small", 24, 24))
        )
        render_scene(scene).save(images / f"{colour}.png")
    embedder = ColourHistogramEmbedder()
    index, _ = build_index(embedder, TOY_SPEC, images, tmp_path / "index")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the server takes this bound socket: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(index, embedder), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 20 s"
    try:
        yield f"http://127.0.0.1:{port}", images
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _chromium_args(chromium: str, profile) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--window-size=1100,800",
        "--hide-scrollbars",
    ]


def test_search_page_shows_the_red_image_first(chromium, live_service, tmp_path):
    base, images = live_service
    url = f"{base}/?q=red&k=5"

    dom = subprocess.run(
        [*_chromium_args(chromium, tmp_path / "profile-dom"), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-state="done"' in dom, dom[-2000:]  # the page's script ran the query from ?q=
    results = [
        {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', tag)}
        for tag in re.findall(r'<li class="result"[^>]*>', dom)
    ]
    assert [r["rank"] for r in results] == ["1", "2", "3", "4", "5"]
    assert results[0]["path"] == str((images / "red.png").resolve())
    assert results[1]["path"] == str((images / "pink.png").resolve())  # pink.png's small circle is red
    scores = [float(r["score"]) for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[2]
    assert '5 results for "red"' in dom
    assert f'src="/images/{results[0]["id"]}"' in dom

    shot = tmp_path / "search.png"
    subprocess.run(
        [*_chromium_args(chromium, tmp_path / "profile-shot"), f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as im:
        assert im.size == (1100, 800)
        px = np.asarray(im.convert("RGB"), dtype=np.int32)
    # The result images were fetched from /images/{id} and drawn: the scene's red is on screen.
    red = np.abs(px - np.array(COLOURS["red"])).sum(axis=-1) < 30
    assert red.sum() > 500, f"only {red.sum()} red pixels in {shot}"
