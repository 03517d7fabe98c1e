"""Load test of `vladva serve`: N concurrent clients send text searches for T seconds over loopback.

Builds an index of rendered shapes images (image i: a large object of colour i), starts the real
`vladva serve` command on 127.0.0.1, runs `--clients` threads (one `httpx.Client` each) that post
`{"text": COLOUR, "k": 5}` to /search back to back, checks every answer (the top hit for a colour
is that colour's image), and reports requests/s and latency percentiles as JSON.

    python benchmarks/service_load.py --clients 8 --seconds 5 --model toy:colours --out load.json
    python benchmarks/service_load.py --model tiny-llava ...   # a tiny random LLaVA through VladVA
                                                               # (untrained: answers are not checked)

tests/test_reliability_load.py runs the same functions for a bounded time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "pink")


def write_colour_images(folder: Path, copies: int = 2) -> Path:
    """`copies` x 8 images: a large square of colour i and a small circle of colour i+1. Copy 0 of
    colour c is `c.png`; further copies shift the objects (`c-1.png`, ...)."""
    from vladva.toyworld.scene import Scene, SceneObject, render_scene

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for i, big in enumerate(COLOURS):
            small = COLOURS[(i + 1) % len(COLOURS)]
            scene = Scene(
                (SceneObject("square", big, "large", 10 + k, 10), SceneObject("circle", small, "small", 24, 24 - k))
            )
            render_scene(scene).save(folder / (f"{big}.png" if k == 0 else f"{big}-{k}.png"))
    return folder


def vladva_command() -> list[str]:
    script = Path(sys.executable).parent / "vladva"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from vladva.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_index(model: str, images: Path, out: Path) -> None:
    """`vladva index build` (a subprocess, exactly as a user runs it)."""
    r = subprocess.run(
        [*vladva_command(), "index", "build", "--model", model, "--images", str(images), "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if r.returncode != 0:
        raise RuntimeError(f"vladva index build failed:\n{r.stderr[-3000:]}")


def _env() -> dict:
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(index: Path, log: Path, *args: str, port: int | None = None, timeout: float = 120) -> Server:
    """Start `vladva serve --index INDEX --port PORT ARGS` (default host) and wait until /health answers."""
    import httpx

    port = port or free_port()
    with open(log, "w") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [*vladva_command(), "serve", "--index", str(index), "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"vladva serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(proc, url, log)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"vladva serve did not answer /health within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@dataclass
class LoadResult:
    clients: int
    seconds: float
    requests: int
    errors: int
    wrong_answers: int | None  # None: answers not checked (e.g. an untrained model)
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_counts: dict = field(default_factory=dict)
    first_errors: list = field(default_factory=list)


def run_load(url: str, clients: int = 8, seconds: float = 5.0, k: int = 5, check_answers: bool = True) -> LoadResult:
    """`clients` threads post colour searches to `url`/search for `seconds`. A request is an error when
    it fails or answers non-200; a wrong answer (counted only with `check_answers`, for a model that
    knows colours such as toy:colours) when the top hit is not the queried colour's image."""
    import httpx
    import numpy as np

    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: dict[str, int] = {}
    errors: list[str] = []
    wrong = [0] * clients
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            start.wait()
            n = i
            while time.perf_counter() < stop_at[0]:
                colour = COLOURS[n % len(COLOURS)]
                n += 1
                t0 = time.perf_counter()
                try:
                    r = http.post("/search", json={"text": colour, "k": k})
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                        statuses["exception"] = statuses.get("exception", 0) + 1
                    continue
                latencies[i].append(time.perf_counter() - t0)
                with lock:
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                top = r.json()["results"][0]["path"]
                if check_answers and Path(top).stem.split("-")[0] != colour:
                    wrong[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(timeout=seconds + 60)
    elapsed = time.perf_counter() - t0
    lat = np.array([x for per in latencies for x in per]) * 1000
    done = int(sum(statuses.values()))
    pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if len(lat) else (lambda q: float("nan"))
    return LoadResult(
        clients=clients,
        seconds=round(elapsed, 2),
        requests=done,
        errors=len(errors),
        wrong_answers=sum(wrong) if check_answers else None,
        requests_per_s=round(done / elapsed, 1),
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=round(float(lat.max()), 2) if len(lat) else float("nan"),
        status_counts=statuses,
        first_errors=errors[:5],
    )


def _tiny_llava_spec(workdir: Path) -> str:
    """A tiny random LLaVA (hidden 64, 2 layers) through the real VladVA class: `vladva:DIR`."""
    from vladva.testing import build_tiny_llava

    return f"vladva:{build_tiny_llava(workdir / 'tiny-llava')}"


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long the clients send requests")
    ap.add_argument("--model", default="toy:colours", help="model spec for the index, or 'tiny-llava'")
    ap.add_argument("--copies", type=int, default=2, help="indexed images per colour (8 colours)")
    ap.add_argument("--max-batch", type=int, default=16, help="vladva serve --max-batch")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="vladva serve --max-wait-ms")
    ap.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vladva-load-") as tmp:
        tmp = Path(tmp)
        model = _tiny_llava_spec(tmp) if args.model == "tiny-llava" else args.model
        images = write_colour_images(tmp / "images", args.copies)
        build_index(model, images, tmp / "index")
        server = start_server(
            tmp / "index", tmp / "serve.log", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)
        )
        try:
            result = run_load(server.url, args.clients, args.seconds, check_answers=args.model == "toy:colours")
        finally:
            server.stop()
    report = {
        "command": "python benchmarks/service_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "indexed_images": args.copies * len(COLOURS),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **asdict(result),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
