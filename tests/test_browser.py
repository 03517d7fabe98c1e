"""The web search page in a real headless Chromium against a live `vladva serve` (uvicorn) on 127.0.0.1.

Chromium is installed with apt once per session if it is missing (CI runs as root on Debian);
the test is skipped only when that is impossible (no apt-get, not root, or apt fails).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

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


def _caption(colour: str, other: str) -> list[str]:
    def a(word: str) -> str:
        return f"an {word}" if word[0] in "aeiou" else f"a {word}"

    return [f"a large {colour} square and a small {other} circle", f"{a(other)} circle by {a(colour)} square"]


def _captions_of(path) -> list[str]:
    """The captions the fixture's manifest gives the image at `path` (`<colour>.png`)."""
    names = list(COLOURS)
    colour = Path(path).stem
    return _caption(colour, names[(names.index(colour) + 1) % 8])


@pytest.fixture()
def live_service(tmp_path):
    """A uvicorn server on a free 127.0.0.1 port over 8 images: image `<colour>.png` has a large
    object of that colour and a small one of the next colour. The index is built from a JSONL
    manifest, so each image has two captions and a record id (`img-<colour>`). Yields
    (base URL, image folder, the `(method, path)` of every HTTP request the server received)."""
    import uvicorn

    from vladva.data.manifest import Record, write_manifest
    from vladva.serve.service import create_app

    names = list(COLOURS)
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i, colour in enumerate(names):
        other = names[(i + 1) % 8]
        scene = Scene((SceneObject("square", colour, "large", 10, 10), SceneObject("circle", other, "small", 24, 24)))
        render_scene(scene).save(images / f"{colour}.png")
        records.append(Record(f"img-{colour}", images / f"{colour}.png", _caption(colour, other)))
    write_manifest(tmp_path / "manifest.jsonl", records)
    embedder = ColourHistogramEmbedder()
    index, _ = build_index(embedder, TOY_SPEC, tmp_path / "manifest.jsonl", tmp_path / "index")
    app = create_app(index, embedder)
    requests: list[tuple[str, str]] = []

    async def recording_app(scope, receive, send):
        if scope["type"] == "http":
            requests.append((scope["method"], scope["path"]))
        await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the server takes this bound socket: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recording_app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 20 s"
    try:
        yield f"http://127.0.0.1:{port}", images, requests
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
    base, images, _ = live_service
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


# ---- driving the page: the Chrome DevTools Protocol over a pipe (no extra Python package) ----


class DevTools:
    """A headless Chromium driven through `--remote-debugging-pipe`: JSON commands end with NUL on
    fd 3, answers and events come back on fd 4. One page, attached in flat session mode."""

    def __init__(self, chromium: str, profile, width: int, height: int, mobile: bool = False):
        import fcntl

        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Move the child's ends above the fds bash redirects to (3, 4), so they cannot clash.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        # No --virtual-time-budget here: it ends the browser once the budget is spent.
        args = [a for a in _chromium_args(chromium, profile)[1:] if not a.startswith("--virtual-time-budget")]
        args += ["--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{high[0]} 4>&{high[1]} {high[0]}<&- {high[1]}>&-', chromium, *args],
            pass_fds=high,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._next_id, self._buffer = 0, b""
        self.events: list[dict] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Network.enable")
        self.call("Page.enable")
        metrics = dict(width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        self.call("Emulation.setDeviceMetricsOverride", **metrics)

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def call(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.send(method, self.session, **params)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"still false after {timeout} s: {expression}; status: {self.js(STATUS)}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element (fails if something covers it)."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " const x = r.left + r.width / 2, y = r.top + r.height / 2;"
            f" return {{x, y, hit: e.contains(document.elementFromPoint(x, y))}}; }})()"
        )
        assert box is not None, f"no element {selector}"
        assert box["hit"], f"{selector} is covered by another element"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def press(self, key: str) -> None:
        codes = {"Enter": (13, "\r"), "Escape": (27, "")}
        code, text = codes[key]
        down = dict(key=key, code=key, windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)
        self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", **down)

    def type(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def choose_file(self, selector: str, path) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self, path) -> None:
        """A PNG of the viewport, once every image the page shows has loaded."""
        self.wait_for("[...document.images].filter((i) => i.getAttribute('src')).every((i) => i.complete)")
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture()
def browser(chromium, tmp_path):
    """Opens a DevTools-driven Chromium: `browser(width, height, mobile=False)`; closed after the test."""
    opened: list[DevTools] = []

    def open_browser(width: int, height: int, mobile: bool = False) -> DevTools:
        opened.append(DevTools(chromium, tmp_path / f"profile-{len(opened)}", width, height, mobile))
        return opened[-1]

    yield open_browser
    for b in opened:
        b.close()


LATENCY = re.compile(r"in [\d.]+ ms \(embedding [\d.]+ ms, index [\d.]+ ms\)")
STATUS = "document.getElementById('status').textContent"
RESULTS = "[...document.querySelectorAll('#results .result')]"


def _state_after(b: DevTools, action) -> str:
    """Run `action`, then wait until the page has answered it; returns the status line."""
    b.js("document.body.dataset.state = 'waiting'")
    action()
    b.wait_for("['done', 'error', 'empty'].includes(document.body.dataset.state)")
    return b.js(STATUS)


def _shown(b: DevTools) -> list[dict]:
    """The result cards: id, path, rank, score and the caption line shown under the image."""
    return b.js(
        f"{RESULTS}.map((li) => ({{id: +li.dataset.id, path: li.dataset.path, rank: +li.dataset.rank,"
        " score: +li.dataset.score, caption: (li.querySelector('.caption') || {}).textContent || ''}))"
    )


def _save_for_docs(shot, name: str) -> None:
    """With VLADVA_DOC_SCREENSHOTS=1, also write the screenshot to docs/img/NAME (as a small
    palette PNG). Off by default: the shown latency changes every run, the docs image should not."""
    if os.environ.get("VLADVA_DOC_SCREENSHOTS") != "1":
        return
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / name
    out.parent.mkdir(exist_ok=True)
    with Image.open(shot) as im:
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    assert out.stat().st_size < 200_000, f"{out} is {out.stat().st_size} bytes"


def test_search_page_behaviours_desktop(browser, live_service, tmp_path):
    """Each thing a person does on the page, in a real browser at desktop width, with screenshots:
    examples, latency, captions, empty query, Enter, enlarge + Escape, more like this, image upload."""
    base, images, requests = live_service
    b = browser(1100, 800)
    b.open(f"{base}/")
    b.wait_for("document.querySelectorAll('#examples button').length > 0")
    examples = b.js("[...document.querySelectorAll('#examples button')].map((e) => e.textContent)")
    all_captions = {c for path in images.glob("*.png") for c in _captions_of(path)}
    assert examples and set(examples) <= all_captions  # offered from the index's stored captions
    assert "not probabilities" in b.js("document.getElementById('scores-note').textContent")

    # An empty query: a message, and no request.
    searches = requests.count(("POST", "/search"))
    b.js("document.getElementById('q').focus()")
    status = _state_after(b, lambda: b.press("Enter"))
    assert "Type a description first" in status and b.js("document.getElementById('status').className") == "hint"
    assert requests.count(("POST", "/search")) == searches
    b.screenshot(tmp_path / "empty-query.png")

    # Clicking an example fills the box and searches: latency shown, captions under the results.
    status = _state_after(b, lambda: b.click("#examples button"))
    assert b.js("document.getElementById('q').value") == examples[0]
    assert LATENCY.search(status), status
    shown = _shown(b)
    assert len(shown) == 8 and [r["rank"] for r in shown] == list(range(1, 9))
    assert examples[0] in _captions_of(shown[0]["path"])  # the example's own image ranks first
    for r in shown:
        assert r["caption"] == _captions_of(r["path"])[0] + " (+1 more)"
    shot = tmp_path / "desktop.png"
    b.screenshot(shot)
    _save_for_docs(shot, "search-page-desktop.png")

    # Typing and Enter.
    b.js("document.getElementById('q').value = ''; document.getElementById('q').focus()")
    b.type("red")
    status = _state_after(b, lambda: b.press("Enter"))
    assert status.startswith('8 results for "red" in ') and LATENCY.search(status)
    assert Path(_shown(b)[0]["path"]).name == "red.png"
    assert b.js("new URL(location).searchParams.get('q')") == "red"

    # Click to enlarge: all captions, the record id; Escape closes it.
    b.click("#results .result .enlarge")
    b.wait_for("document.getElementById('viewer').open")
    captions = b.js("[...document.querySelectorAll('#viewer-captions li')].map((e) => e.textContent)")
    assert captions == _captions_of(images / "red.png")
    assert "record img-red" in b.js("document.querySelector('#viewer .path').textContent")
    b.screenshot(tmp_path / "enlarged.png")
    b.press("Escape")
    b.wait_for("!document.getElementById('viewer').open && document.body.dataset.viewer === 'closed'")

    # More like this (from a card): image -> image results without the image itself.
    like = _shown(b)[1]
    status = _state_after(b, lambda: b.click('#results .result[data-rank="2"] .like'))
    assert status.startswith(f"7 results for images like {Path(like['path']).name}"), status
    assert requests[-1] == ("POST", "/search") and b.js("document.getElementById('q').value") == ""
    assert like["id"] not in [r["id"] for r in _shown(b)]
    assert b.js("new URL(location).searchParams.get('like')") == str(like["id"])
    # ... and from the enlarged view.
    b.click('#results .result[data-rank="1"] .enlarge')
    b.wait_for("document.getElementById('viewer').open")
    first = _shown(b)[0]
    status = _state_after(b, lambda: b.click("#viewer-like"))
    assert f"images like {Path(first['path']).name}" in status and not b.js("document.getElementById('viewer').open")
    b.screenshot(tmp_path / "more-like-this.png")

    # Searching by an uploaded image clears the text box.
    b.js("document.getElementById('q').value = 'blue'")
    b.js("document.getElementById('text-form').requestSubmit()")
    b.wait_for(f"{STATUS}.includes('\"blue\"') && document.body.dataset.state === 'done'")
    status = _state_after(b, lambda: b.choose_file("#file", images / "green.png"))
    assert status.startswith("8 results for image green.png in "), status
    assert b.js("document.getElementById('q').value") == "" and b.js("new URL(location).search") == "?k=10"
    assert Path(_shown(b)[0]["path"]).name == "green.png"
    b.screenshot(tmp_path / "image-query.png")

    # Everything the page loaded came from the service (or is a blob of the chosen file).
    urls = b.requested_urls()
    assert urls and all(u.startswith((base, "blob:", "data:")) for u in urls), urls
    for name in ("empty-query", "desktop", "enlarged", "more-like-this", "image-query"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_page_at_phone_width(browser, live_service, tmp_path):
    """At 390 px: nothing wider than the screen, two result columns, the enlarged view fits."""
    base, _, _ = live_service
    b = browser(390, 844, mobile=True)
    b.open(f"{base}/?q=red&k=5")
    b.wait_for("document.body.dataset.state === 'done'")
    b.wait_for("document.querySelectorAll('#examples button').length > 0")
    assert b.js("document.documentElement.scrollWidth") <= 390
    assert b.js("getComputedStyle(document.getElementById('results')).gridTemplateColumns.split(' ').length") == 2
    assert b.js("document.querySelector('#text-form button').getBoundingClientRect().right") <= 390
    assert LATENCY.search(b.js(STATUS))
    assert b.js(f"{RESULTS}.every((li) => li.querySelector('.caption').textContent.length > 0)")
    shot = tmp_path / "phone.png"
    b.screenshot(shot)
    with Image.open(shot) as im:
        assert im.size == (390, 844)
    _save_for_docs(shot, "search-page-phone.png")

    b.click("#results .result .enlarge")
    b.wait_for("document.getElementById('viewer').open")
    assert b.js("document.getElementById('viewer').getBoundingClientRect().width") <= 390
    b.screenshot(tmp_path / "phone-enlarged.png")
    b.press("Escape")
    b.wait_for("!document.getElementById('viewer').open")
