"""The service under load and its limits, on a live `vladva serve` over loopback.

Uses benchmarks/service_load.py (the same code the published figures come from): an index of 16
rendered colour images with the built-in `toy:colours` embedder, the real `vladva serve` command on
127.0.0.1, 8 client threads for 5 seconds. Figures are printed and written to the test's tmp dir.
"""

from __future__ import annotations

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

CLIENTS, SECONDS = 8, 5.0
SOAK_S = 25.0
BODY_LIMIT_MB, TIMEOUT_S = 0.0625, 2.0  # 64 KiB bodies, 2 s per request for the live server


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


@pytest.fixture(scope="module")
def bench(service_bench):
    return service_bench


@pytest.fixture(scope="module")
def server(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    images = bench.write_colour_images(root / "images", copies=2)
    bench.build_index("toy:colours", images, root / "index")
    srv = bench.start_server(
        root / "index", root / "serve.log", "--max-body-mb", str(BODY_LIMIT_MB), "--timeout", str(TIMEOUT_S)
    )
    srv.images = sorted(images.glob("*.png"))
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


@pytest.fixture(scope="module")
def soak(bench):
    import importlib.util

    path = Path(bench.__file__).with_name("service_soak.py")
    spec = importlib.util.spec_from_file_location("service_soak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_soak"] = module
    spec.loader.exec_module(module)
    return module


def test_short_soak_mixed_load_has_no_errors_and_flat_memory(server, soak, tmp_path):
    """25 s of the soak benchmark (benchmarks/service_soak.py; 10 minutes in docs/reliability.md):
    6 clients cycling text search, image search (upload), text and image embedding and /health.
    Zero errors and wrong answers in every 5 s window, every kind answered, p99 under the time limit,
    and the server's RSS flat: under 32 MiB growth from the end of the first window to the end."""
    result = soak.run_soak(server.url, server.proc.pid, server.images, clients=6, seconds=SOAK_S, window_s=5.0)
    (tmp_path / "service_soak.json").write_text(json.dumps(asdict(result), indent=1))
    print("\nshort soak:\n" + soak.markdown(result))
    assert result.errors == 0, result.first_errors
    assert result.wrong_answers == 0
    assert all(k["requests"] > 0 and k["errors"] == 0 for k in result.by_kind.values()), result.by_kind
    assert len(result.windows) == int(SOAK_S / 5) and all(w.requests > 0 and w.errors == 0 for w in result.windows)
    assert all(w.p99_ms < TIMEOUT_S * 1000 for w in result.windows)
    if result.rss_start_mib is not None:  # Linux: /proc is there
        assert result.rss_growth_mib < 32, [w.rss_mib for w in result.windows]
    assert server.proc.poll() is None


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


def _raw_exchange(server, request: bytes) -> bytes:
    """Send `request` whole over a plain socket and read until the server closes; a connection
    reset before any reply byte raises (that is the failure a lingering close prevents)."""
    port = int(server.url.rsplit(":", 1)[1])
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(request)
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def _url_over_limit(server) -> None:
    for _ in range(3):  # a reset would show up as a race: try it more than once
        reply = _raw_exchange(server, b"GET /search?q=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 414 "), reply[:200]
        assert reply.endswith(b'{"detail": "request line (URL) is longer than the limit of 65536 bytes"}'), reply
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def _headers_over_limit(server) -> None:
    reply = _raw_exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b'"request headers are larger than the limit of 65536 bytes"' in reply


def _malformed_request(server) -> None:
    reply = _raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b'"detail": "malformed HTTP request' in reply, reply


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
        "url-over-limit",
        "a GET with a 1,000,000-character URL query string, sent whole (3 times)",
        "414 'request line (URL) is longer than the limit of 65536 bytes', read by the client every time "
        "(no connection reset); the server keeps answering",
        _url_over_limit,
    ),
    Case(
        "headers-over-limit",
        "a request with a 200 KB header",
        "431 'request headers are larger than the limit of 65536 bytes'",
        _headers_over_limit,
    ),
    Case(
        "malformed-request",
        "a request line that is not HTTP",
        "400 'malformed HTTP request ...' as JSON",
        _malformed_request,
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
