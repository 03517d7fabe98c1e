"""The service under load and its limits, on a live `vladva serve` over loopback.

Uses benchmarks/service_load.py (the same code the published figures come from): an index of 16
rendered colour images with the built-in `toy:colours` embedder, the real `vladva serve` command on
127.0.0.1, 8 client threads for 5 seconds. Figures are printed and written to the test's tmp dir.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("faiss")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "service_load.py"
CLIENTS, SECONDS = 8, 5.0
BODY_LIMIT_MB, TIMEOUT_S = 0.0625, 2.0  # 64 KiB bodies, 2 s per request for the live server


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


def _load_bench():
    spec = importlib.util.spec_from_file_location("service_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_load"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.fixture(scope="module")
def server(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    images = bench.write_colour_images(root / "images", copies=2)
    bench.build_index("toy:colours", images, root / "index")
    srv = bench.start_server(
        root / "index", root / "serve.log", "--max-body-mb", str(BODY_LIMIT_MB), "--timeout", str(TIMEOUT_S)
    )
    yield srv
    srv.stop()


def test_concurrent_clients_get_correct_answers_with_zero_errors(server, bench, tmp_path):
    """8 clients for 5 s: every request answers 200 with the right top hit; p50/p99 and requests/s
    are printed and written to service_load.json."""
    result = bench.run_load(server.url, CLIENTS, SECONDS)
    figures = asdict(result)
    (tmp_path / "service_load.json").write_text(json.dumps(figures, indent=1))
    print(
        f"\nservice under load ({CLIENTS} clients, {result.seconds} s): {result.requests} requests, "
        f"{result.requests_per_s} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, max {result.max_ms} ms"
    )
    assert result.errors == 0, result.first_errors
    assert result.status_counts == {"200": result.requests}
    assert result.wrong_answers == 0
    assert result.requests >= 8 * CLIENTS  # every client got many answers, not one
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.max_ms < TIMEOUT_S * 1000  # none came near the time limit
    assert server.proc.poll() is None  # still serving


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_server_listens_on_loopback_only_by_default(server):
    """Started without --host: the log names 127.0.0.1 and the port refuses connections on the
    machine's other address."""
    port = int(server.url.rsplit(":", 1)[1])
    assert f"at http://127.0.0.1:{port}/" in server.log.read_text()
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("no non-loopback interface to probe")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((addr, port)) != 0


def _body_over_limit(server) -> None:
    r = httpx.post(server.url + "/search", json={"text": "red " * 25_000}, timeout=10)
    assert r.status_code == 413 and "larger than the limit of 65536 bytes" in r.json()["detail"]


def _chunked_body_over_limit(server) -> None:
    def chunks():
        for _ in range(13):
            yield b"x" * 8192

    r = httpx.post(server.url + "/search", content=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "larger than the limit of 65536 bytes" in r.json()["detail"]


def _stalled_body(server) -> None:
    """A slow client cannot hold a request open past --timeout; others are served meanwhile."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"text": "r'
        )
        t0 = time.monotonic()
        assert httpx.post(server.url + "/search", json={"text": "red"}, timeout=10).status_code == 200  # not blocked
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 504"), reply[:200]
    assert b"request took longer than the limit of 2 s" in reply
    assert TIMEOUT_S - 0.5 <= waited <= TIMEOUT_S + 5
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def _lone_surrogate_text(server) -> None:
    r = httpx.post(
        server.url + "/search",
        content=b'{"text": "a \\udc80 circle"}',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 422 and "texts[0] is not valid Unicode" in r.json()["detail"]


def _over_long_text(server) -> None:
    r = httpx.post(server.url + "/search", json={"text": "r" * 2001}, timeout=10)
    assert r.status_code == 413 and "texts[0] has 2001 characters; the limit is 2000" in r.json()["detail"]


LIVE_LIMIT_CASES = [
    Case(
        "body-over-limit",
        "a 100 KB JSON body to a server started with --max-body-mb 0.0625",
        "413 'request body is larger than the limit of 65536 bytes'",
        _body_over_limit,
    ),
    Case(
        "chunked-body-over-limit",
        "a 104 KB body streamed without Content-Length",
        "413 'request body is larger than the limit of 65536 bytes'",
        _chunked_body_over_limit,
    ),
    Case(
        "stalled-body",
        "a client that declares 1000 body bytes, sends 11 and stalls (server --timeout 2)",
        "504 'request took longer than the limit of 2 s' after about 2 s; other requests are answered meanwhile",
        _stalled_body,
    ),
    Case(
        "lone-surrogate-text",
        'a search text with a JSON-escaped lone surrogate "\\udc80"',
        "422 'texts[0] is not valid Unicode'",
        _lone_surrogate_text,
    ),
    Case(
        "over-long-text",
        "a 2,001-character search text",
        "413 'texts[0] has 2001 characters; the limit is 2000'",
        _over_long_text,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in LIVE_LIMIT_CASES])
def test_live_server_limits(server, case):
    case.data(server)
    assert server.proc.poll() is None  # the server is still up
