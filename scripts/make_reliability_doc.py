"""Write docs/reliability.md from the reliability tests' own case tables and the load figures.

Every `Case(id, what, expect, ...)` list in tests/test_reliability_*.py becomes a table (case ->
behaviour); every other test contributes its docstring. With `--run-tests` the suite is run first
and each row shows whether its test passed. Load figures come from the JSON files written by
`benchmarks/service_load.py --out`, the soak section from `benchmarks/service_soak.py --out`.

    python scripts/make_reliability_doc.py --run-tests \\
        --load benchmarks/results/service_load-toy.json --load benchmarks/results/service_load-tiny-llava.json \\
        --soak benchmarks/results/service_soak-toy.json
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = sorted((ROOT / "tests").glob("test_reliability_*.py"))
OUT = ROOT / "docs" / "reliability.md"

INTRO = """# Reliability and security

What vladva does with bad input, interrupted training, untrusted files and concurrent load. Every
row below is a test case in `tests/test_reliability_*.py`; this page is generated from those
tests (`python scripts/make_reliability_doc.py`), so it says what the tests assert.

Run the suite: `python -m pytest tests/test_reliability_*.py` (a few minutes on 2 CPU cores).
Check a data set before training: `vladva check-manifest DATA/train.jsonl DATA/val.jsonl`
(lists every bad line as `file:line: reason`, every unreadable image and duplicate id; exit 1 if any;
with `--model SPEC`, also warns when that model's tokenizer cannot read the captions' words).

## Policies in short

- **Bad training samples** (malformed manifest lines, unreadable images) are skipped, logged and
  counted (`skipped` in `metrics.jsonl`, one summary line per manifest); `data.strict=true` turns the
  first one into an error naming `file:line` or the image file.
- **Over-long captions** are truncated, not refused: a short caption to `model.prompts.max_text_tokens`
  tokens (default 77), a long caption to `model.prompts.max_long_caption_tokens` for the next-token
  loss; the summary prompt is never cut. The HTTP service refuses texts over 2,000 characters (413).
- **Images** go through one loader (`vladva.data.images.load_image`) everywhere: CMYK, greyscale
  (8 and 16 bit), palette and alpha images become RGB (alpha composited on black); anything over
  64 Mpx (16 Mpx in the service) is refused before decoding.
- **Checkpoints** are written to a temporary folder, fsynced, renamed, and only then named by
  `checkpoints/latest`; `--resume` checks the named checkpoint's files (presence, safetensors
  headers and sizes) before loading and continues exactly: data order, RNG, optimizer and scheduler.
- **Loading** reads weights from safetensors only; the trainer state is read with
  `torch.load(weights_only=True)`; no model folder's own Python code is ever run (`auto_map` is
  ignored, unknown `model_type`s are refused by name); manifest image paths stay inside the
  manifest's folder (absolute paths, `..` and symlinks out are refused unless allowed).
- **The service** binds 127.0.0.1 unless `--host` says otherwise (and warns when it does), limits
  bodies (`--max-body-mb`, default 8) and request time (`--timeout`, default 60 s, which also cuts
  off clients that stall mid-body), and answers a request line (URL) or headers over 64 KiB with
  414 / 431 and a lingering close, so the client reads the status instead of a reset connection.
- **Text files** (`vladva embed --texts`, `--captions`, prompt lists) are read line by line: a line
  that is not UTF-8 is named (`file:line`, byte and column); `vladva embed` writes row i for line i
  and refuses a blank line before the last text, naming it.
- **Writes** (checkpoints, exports, index versions, reports, caches) go to a temporary name, are
  fsynced and renamed (`vladva.storage`), so `kill -9` leaves the old file or the new one. A full
  disk is one `error: no space left on device writing ...` line that says what is still intact;
  the embedding cache only warns and the evaluation goes on.
- **The index** is a folder of versions: `index add` writes version N+1 beside N and commits it by
  replacing `index.json`; writers hold a lock; `vladva serve` keeps answering from version N and
  switches to N+1 within `--index-reload` seconds (default 2).
- **Untrusted model folders** are checked before transformers or PEFT read them: `auto_map` (or
  PEFT's `auto_mapping` / `megatron_config`), a shard index or `latest` pointer naming a file
  outside the folder, and pickle-only weights are refused with the file and key named.
"""


def _load(path: Path):
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _is_case(x) -> bool:
    return all(hasattr(x, a) for a in ("id", "what", "expect"))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def run_tests() -> tuple[dict[str, str], str]:
    """Run the suite; `{test id without params -> outcome}` per (function, case id) and a summary line."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *map(str, TESTS)],
            cwd=ROOT,
        )
        seconds = time.perf_counter() - t0
        outcomes: dict[str, str] = {}
        for tc in ET.parse(xml).getroot().iter("testcase"):
            name = tc.get("name")
            status = "passed"
            for child in tc:
                if child.tag in ("failure", "error"):
                    status = "FAILED"
                elif child.tag == "skipped":
                    status = "skipped"
            outcomes[name] = status
    counts: dict[str, int] = {}
    for s in outcomes.values():
        counts[s] = counts.get(s, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" in {seconds:.0f} s"
    return outcomes, summary


def _outcome(outcomes: dict[str, str] | None, func: str, case_id: str | None) -> str | None:
    if outcomes is None:
        return None
    if case_id is None or func in outcomes:  # a test without parameters
        return outcomes.get(func, "not run")
    hits = [
        s
        for n, s in outcomes.items()
        if n.startswith(func + "[") and (f"[{case_id}]" in n or f"-{case_id}]" in n or f"[{case_id}-" in n)
    ]
    return ("FAILED" if "FAILED" in hits else hits[0]) if hits else "not run"


def _case_tests(module) -> dict[str, list[str]]:
    """Which test functions each case list parametrises: found by the list's name in the source."""
    src = inspect.getsource(module)
    out: dict[str, list[str]] = {}
    for name, obj in vars(module).items():
        if isinstance(obj, list) and obj and all(_is_case(c) for c in obj):
            funcs = []
            for fname, f in vars(module).items():
                if fname.startswith("test_") and callable(f):
                    fsrc = inspect.getsource(f)
                    decorators = src[max(0, src.find(fsrc) - 400) : src.find(fsrc)]
                    if name in fsrc.split("\n", 1)[0] or name in decorators.rsplit("\n\n", 1)[-1] or name in fsrc:
                        funcs.append(fname)
            out[name] = funcs
    return out


def _load_table(paths: list[Path]) -> str:
    if not paths:
        return ""
    rows = []
    for p in paths:
        d = json.loads(p.read_text(encoding="utf-8"))
        wrong = "not checked" if d.get("wrong_answers") is None else d["wrong_answers"]
        rows.append(
            f"| `{d['model']}` | {d['clients']} | {d['seconds']} | {d['requests']} | {d['errors']} | {wrong} | "
            f"{d['requests_per_s']} | {d['p50_ms']} | {d['p90_ms']} | {d['p99_ms']} | {d['max_ms']} |"
        )
    first = json.loads(paths[0].read_text(encoding="utf-8"))
    m = first.get("machine", {})
    cmds = "\n".join(json.loads(p.read_text(encoding="utf-8"))["command"] for p in paths)
    return (
        "\n## Service under load\n\n"
        "`vladva serve` (default settings: micro-batches of up to 16 queries, 5 ms wait) on 127.0.0.1 with an index of "
        f'{first["indexed_images"]} images; each client thread posts `/search {{"text": COLOUR, "k": 5}}` back to back '
        "(`benchmarks/service_load.py`). Errors: failed or non-200 requests. Wrong answers: top hit not the "
        "queried colour's image (checked only for `toy:colours`; the tiny LLaVA is random and untrained). "
        f"Measured on a {m.get('cpus', '?')}-core CPU machine shared with other work (Python {m.get('python', '?')}), "
        "clients and server on the same cores, so these are lower bounds on a quiet machine.\n\n"
        f"```\n{cmds}\n```\n\n"
        "| model | clients | seconds | requests | errors | wrong answers | req/s "
        "| p50 ms | p90 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "The test `test_reliability_load.py` runs the same code (8 clients, 5 s, `toy:colours`) and asserts zero "
        "errors and zero wrong answers; it prints the figures and writes them to `service_load.json` in its tmp dir.\n"
    )


def _soak_section(path: Path | None) -> str:
    if path is None:
        return ""
    d = json.loads(path.read_text(encoding="utf-8"))
    m = d.get("machine", {})
    rows = [
        f"| {w['start_s']:g}-{w['start_s'] + d['window_s']:g} | {w['requests']} | {w['errors']} | "
        f"{w['wrong_answers']} | {w['p50_ms']} | {w['p99_ms']} | {w['max_ms']} | {w['rss_mib']} |"
        for w in d["windows"]
    ]
    kinds = "\n".join(
        f"| {k} | {v['requests']} | {v['errors']} | {v['p50_ms']} | {v['p99_ms']} |" for k, v in d["by_kind"].items()
    )
    return (
        f"\n## Soak: mixed load for {d['seconds']:g} s\n\n"
        f"`vladva serve` with `{d['model']}` on 127.0.0.1 ({d['indexed_images']} indexed images), "
        f"{d['clients']} client threads each cycling {', '.join(d['mix'])} back to back for {d['seconds']:g} s "
        "(`benchmarks/service_soak.py`). Errors: failed or non-200 answers; wrong answers: a search whose top hit "
        "is not the queried colour. RSS: the server's resident memory at the end of each window (/proc). "
        f"Measured on a {m.get('cpus', '?')}-core machine shared with other work, clients and server on the same "
        "cores.\n\n"
        f"```\n{d['command']}\n```\n\n"
        f"{d['requests']} requests, **{d['errors']} errors**, {d['wrong_answers']} wrong answers. Server RSS "
        f"{d['rss_start_mib']} MiB after the first window, {d['rss_end_mib']} MiB at the end "
        f"(growth {d['rss_growth_mib']} MiB; slope over the second half {d['rss_slope_mib_per_min']} MiB/min).\n\n"
        "| seconds | requests | errors | wrong answers | p50 ms | p99 ms | max ms | server RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "| request | count | errors | p50 ms | p99 ms |\n|---|---|---|---|---|\n" + kinds + "\n\n"
        "`test_reliability_load.py::test_short_soak_mixed_load_has_no_errors_and_flat_memory` runs the same code for "
        "25 s (6 clients, 5 s windows) and asserts zero errors, every kind answered and under 32 MiB RSS growth.\n"
    )


def build(
    outcomes: dict[str, str] | None, summary: str | None, load_paths: list[Path], soak_path: Path | None = None
) -> str:
    parts = [INTRO]
    if summary:
        parts.append(f"Last run of the suite (`python scripts/make_reliability_doc.py --run-tests`): {summary}.\n")
    for path in TESTS:
        module = _load(path)
        parts.append(f"\n## {path.name}\n\n{_first_paragraph(module.__doc__)}\n")
        covered: set[str] = set()
        for list_name, funcs in _case_tests(module).items():
            cases = getattr(module, list_name)
            covered.update(funcs)
            title = ", ".join(f"`{f}`" for f in funcs) or list_name
            status = outcomes is not None
            parts.append(
                f"\n{title}\n\n| case | input | behaviour |"
                + (" test |" if status else "")
                + "\n"
                + "|---|---|---|"
                + ("---|" if status else "")
                + "\n"
            )
            for c in cases:
                row = f"| `{c.id}` | {_cell(c.what)} | {_cell(c.expect)} |"
                if status:
                    row += " " + ", ".join(sorted({_outcome(outcomes, f, c.id) for f in funcs} or {"not run"})) + " |"
                parts.append(row + "\n")
        others = [
            (n, f)
            for n, f in vars(module).items()
            if n.startswith("test_")
            and callable(f)
            and n not in covered
            and getattr(f, "__module__", None) == module.__name__
        ]
        if others:
            parts.append(
                "\n| test | what it checks |"
                + (" result |" if outcomes is not None else "")
                + "\n|---|---|"
                + ("---|" if outcomes is not None else "")
                + "\n"
            )
            for n, f in others:
                doc = _first_paragraph(f.__doc__) or n.removeprefix("test_").replace("_", " ")
                row = f"| `{n}` | {_cell(doc)} |"
                if outcomes is not None:
                    row += f" {_outcome(outcomes, n, None)} |"
                parts.append(row + "\n")
    parts.append(_load_table(load_paths))
    parts.append(_soak_section(soak_path))
    parts.append(
        "\n## Known gaps\n\n"
        "- A checkpoint's tensor *values* are not checksummed: a file of the right size with flipped bytes inside a "
        "tensor loads. Headers, sizes and presence are checked.\n"
        "- The kill tests use a test hook (`VLADVA_TEST_PAUSE_AT=POINT:STEP`) to stop at exact points; kills at other "
        "instants rely on the same write-rename-pointer order. Power loss is not simulated "
        "(files and folders are fsynced).\n"
        '- `float32` ("F") TIFF images are converted by Pillow\'s rules (values clipped to 0-255), not rescaled.\n'
        "- Caption truncation counts tokens of the model's tokenizer; `vladva check-manifest --model SPEC` loads "
        "that tokenizer to report words it cannot read (unknown tokens), but it does not report captions that "
        "will be truncated.\n"
        "- The load figures are from a shared 2-core machine with clients and server on the same cores.\n"
        "- The full-disk tests on a real file system need a tmpfs mount (root or CAP_SYS_ADMIN); elsewhere they are "
        "skipped and the injected-ENOSPC runs cover the same code paths. A full disk is recognised by errno "
        "(ENOSPC, EDQUOT, EFBIG), by the writers' own words (safetensors' StorageFull), or, for torch.save and FAISS, "
        'which only say "write failed", by less than 1 MiB left on that file system.\n'
        "- A killed `vladva export` leaves a hidden `.OUT.partial-PID` folder beside OUT (never OUT itself); a "
        "killed index writer's temporary files are removed by the next save.\n"
    )
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-tests", action="store_true", help="run the reliability suite and show each case's result")
    ap.add_argument(
        "--load", type=Path, action="append", default=[], help="a JSON from benchmarks/service_load.py --out"
    )
    ap.add_argument("--soak", type=Path, default=None, help="a JSON from benchmarks/service_soak.py --out")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    outcomes, summary = run_tests() if args.run_tests else (None, None)
    text = build(outcomes, summary, args.load, args.soak)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
