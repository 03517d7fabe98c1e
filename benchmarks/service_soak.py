"""Soak test of `vladva serve`: mixed load from several clients for a long time, watched over time.

Builds an index of rendered colour images (benchmarks/service_load.py), starts the real `vladva
serve` on 127.0.0.1, and runs `--clients` threads, each cycling through a fixed mix of requests
back to back: text search, image search (a PNG upload), text embedding, image embedding (base64)
and /health. Every answer is checked (status 200; for `toy:colours`, the top hit of a search is
the queried colour). Each `--window` seconds it records requests, errors, p50 / p99 latency and
the server's resident memory (RSS, from /proc). The report says whether memory stayed flat: the
growth from the end of the first window to the end (MiB) and its slope (MiB per minute) over the
second half of the run.

    python benchmarks/service_soak.py --clients 8 --seconds 600 --window 60 --out soak.json
    python benchmarks/service_soak.py --seconds 25 --window 5          # what the test suite runs

tests/test_reliability_load.py runs the same functions for ~25 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service_load  # the index, server and colour images of the load test

# One cycle of a client: what a mixed workload of the web page and API users looks like.
MIX = ("search_text", "search_image", "embed_text", "search_text", "embed_image", "health")


def rss_mib(pid: int) -> float | None:
    """Resident memory of process `pid` in MiB (Linux /proc), or None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@dataclass
class Window:
    """One stretch of the run: requests that finished in it, their errors and latency, RSS at its end."""

    start_s: float
    requests: int = 0
    errors: int = 0
    wrong_answers: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    rss_mib: float | None = None


@dataclass
class SoakResult:
    clients: int
    seconds: float
    window_s: float
    requests: int
    errors: int
    wrong_answers: int | None
    by_kind: dict = field(default_factory=dict)  # kind -> {"requests", "errors", "p50_ms", "p99_ms"}
    windows: list[Window] = field(default_factory=list)
    rss_start_mib: float | None = None  # after the first window (imports and first batches done)
    rss_end_mib: float | None = None
    rss_growth_mib: float | None = None
    rss_slope_mib_per_min: float | None = None  # least-squares slope over the second half of the windows
    first_errors: list = field(default_factory=list)


def _requests(url: str, images: list[Path]):
    """The request functions of the mix: each `(httpx client, n) -> (response, expected colour or None)`."""
    pngs = [(p, p.read_bytes()) for p in images]

    def search_text(http, n):
        colour = service_load.COLOURS[n % len(service_load.COLOURS)]
        return http.post("/search", json={"text": colour, "k": 5}), colour

    def search_image(http, n):
        path, data = pngs[n % len(pngs)]
        r = http.post("/search", files={"file": (path.name, data, "image/png")}, data={"k": "5"})
        return r, path.stem.split("-")[0]

    def embed_text(http, n):
        return http.post("/embed/text", json={"texts": [f"a {service_load.COLOURS[n % 8]} square", "a circle"]}), None

    def embed_image(http, n):
        _, data = pngs[n % len(pngs)]
        return http.post("/embed/image", json={"image_base64": base64.b64encode(data).decode()}), None

    def health(http, n):
        return http.get("/health"), None

    return {f.__name__: f for f in (search_text, search_image, embed_text, embed_image, health)}


def run_soak(
    url: str,
    server_pid: int,
    images: list[Path],
    clients: int = 8,
    seconds: float = 600.0,
    window_s: float = 60.0,
    check_answers: bool = True,
) -> SoakResult:
    """`clients` threads cycle through MIX against `url` for `seconds`; figures per `window_s`."""
    import httpx
    import numpy as np

    calls = _requests(url, images)
    log: list[tuple[float, str, float, int, bool]] = []  # (finished at, kind, seconds, status, right answer)
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    t0 = [0.0]
    stop_at = [0.0]

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            start.wait()
            n = i
            while time.perf_counter() < stop_at[0]:
                kind = MIX[n % len(MIX)]
                began = time.perf_counter()
                try:
                    r, colour = calls[kind](http, n)
                    status = r.status_code
                    right = True
                    if status == 200 and colour is not None and check_answers:
                        right = Path(r.json()["results"][0]["path"]).stem.split("-")[0] == colour
                    elif status != 200:
                        with lock:
                            errors.append(f"{kind}: {status} {r.text[:200]}")
                except httpx.HTTPError as e:
                    status, right = -1, False
                    with lock:
                        errors.append(f"{kind}: {type(e).__name__}: {e}")
                done = time.perf_counter()
                with lock:
                    log.append((done - t0[0], kind, done - began, status, right))
                n += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    stop_at[0] = t0[0] + seconds
    start.wait()
    rss_marks = []  # (seconds, MiB) at each window end
    next_mark = window_s
    while any(t.is_alive() for t in threads):
        now = time.perf_counter() - t0[0]
        if now >= next_mark and next_mark <= seconds + 1e-9:
            rss_marks.append((next_mark, rss_mib(server_pid)))
            next_mark += window_s
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0[0]

    def pct(lat: list[float], q: float) -> float:
        return round(float(np.percentile(np.array(lat) * 1000, q)), 2) if lat else float("nan")

    windows = []
    n_windows = max(1, round(seconds / window_s))
    for w in range(n_windows):
        lo, hi = w * window_s, (w + 1) * window_s if w < n_windows - 1 else float("inf")
        rows = [r for r in log if lo <= r[0] < hi]
        lat = [r[2] for r in rows]
        windows.append(
            Window(
                start_s=round(lo, 1),
                requests=len(rows),
                errors=sum(r[3] != 200 for r in rows),
                wrong_answers=sum(not r[4] for r in rows if r[3] == 200),
                p50_ms=pct(lat, 50),
                p99_ms=pct(lat, 99),
                max_ms=round(max(lat) * 1000, 2) if lat else float("nan"),
                rss_mib=rss_marks[w][1] if w < len(rss_marks) else rss_mib(server_pid),
            )
        )
    by_kind = {}
    for kind in dict.fromkeys(MIX):
        rows = [r for r in log if r[1] == kind]
        lat = [r[2] for r in rows]
        by_kind[kind] = {
            "requests": len(rows),
            "errors": sum(r[3] != 200 for r in rows),
            "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99),
        }
    rss = [w.rss_mib for w in windows if w.rss_mib is not None]
    half = [(w.start_s + window_s, w.rss_mib) for w in windows[len(windows) // 2 :] if w.rss_mib is not None]
    slope = None
    if len(half) >= 2:
        xs, ys = np.array([h[0] for h in half]) / 60, np.array([h[1] for h in half])
        slope = round(float(np.polyfit(xs, ys, 1)[0]), 3)
    return SoakResult(
        clients=clients,
        seconds=round(elapsed, 1),
        window_s=window_s,
        requests=len(log),
        errors=len(errors),
        wrong_answers=sum(w.wrong_answers for w in windows) if check_answers else None,
        by_kind=by_kind,
        windows=windows,
        rss_start_mib=rss[0] if rss else None,
        rss_end_mib=rss[-1] if rss else None,
        rss_growth_mib=round(rss[-1] - rss[0], 1) if rss else None,
        rss_slope_mib_per_min=slope,
        first_errors=errors[:5],
    )


def markdown(result: SoakResult) -> str:
    """The per-window table docs/reliability.md shows."""
    rows = [
        f"| {w.start_s:g}-{w.start_s + result.window_s:g} | {w.requests} | {w.errors} | {w.wrong_answers} | "
        f"{w.p50_ms} | {w.p99_ms} | {w.rss_mib} |"
        for w in result.windows
    ]
    return (
        "| seconds | requests | errors | wrong answers | p50 ms | p99 ms | server RSS MiB |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=600.0, help="how long the clients send requests")
    ap.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    ap.add_argument("--model", default="toy:colours", help="model spec for the index, or 'tiny-llava'")
    ap.add_argument("--copies", type=int, default=2, help="indexed images per colour (8 colours)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vladva-soak-") as tmp:
        tmp = Path(tmp)
        model = service_load._tiny_llava_spec(tmp) if args.model == "tiny-llava" else args.model
        images = service_load.write_colour_images(tmp / "images", args.copies)
        service_load.build_index(model, images, tmp / "index")
        server = service_load.start_server(tmp / "index", tmp / "serve.log")
        try:
            result = run_soak(
                server.url,
                server.proc.pid,
                sorted(images.glob("*.png")),
                args.clients,
                args.seconds,
                args.window,
                check_answers=args.model == "toy:colours",
            )
        finally:
            server.stop()
    report = {
        "command": "python benchmarks/service_soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "indexed_images": args.copies * len(service_load.COLOURS),
        "mix": list(MIX),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **asdict(result),
    }
    text = json.dumps(report, indent=1)
    print(text)
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
