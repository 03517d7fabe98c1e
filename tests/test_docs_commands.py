"""Every `vladva` command the README, the docs and the model card print runs as printed (issue 15,
item 7).

`test_every_printed_command_parses`: each `vladva ...` line of a shell block is parsed by the real
command line (the command exists, every option exists, the required ones are given). Lines with
placeholders (`DATA`, `BASE_DIR`, `...`, `[--model SPEC]`) are synopses and skipped.

`test_printed_commands_run`: the cheap ones, listed in `RUN` with the page that prints them, run in
order on tiny data in a scratch folder laid out like a checkout (`src/` linked), as printed plus
only size options (`SMALL`); so do the commands of the model card an export writes. A page that no
longer prints a listed command fails the test, so the list follows the pages.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from vladva.cli import app

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "src" / "vladva" / "export" / "card_templates"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(TEMPLATES.glob("*.md"))]
SHELL_BLOCKS = ("", "bash", "sh", "console", "shell")
UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """`(language, body)` of every fenced code block."""
    blocks, body, lang = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and body is None:
            body, lang = [], fence.group(1)
        elif fence:
            blocks.append((lang, "\n".join(body)))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def printed_commands(text: str) -> list[str]:
    """The `vladva ...` lines of the shell blocks in `text`, continuations joined, comments dropped."""
    out = []
    for lang, body in fenced_blocks(text):
        if lang not in SHELL_BLOCKS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix(".venv/bin/")
            if line.startswith("vladva "):
                out.append(shlex.join(shlex.split(line, comments=True)))
    return out


def is_synopsis(args: list[str]) -> bool:
    """Placeholders: `...`, `[optional]` parts, or an all-capitals word (DATA, BASE_DIR, OUT)."""
    for arg in args:
        if "..." in arg or arg.startswith("["):
            return True
        if any(UPPER.match(part) for part in re.split(r"[/=:.,]", arg) if part):
            return True
    return False


def all_printed() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8").replace("$location", "models/vladva-shapes")
        found += [(page.relative_to(ROOT).as_posix(), c) for c in printed_commands(text)]
    return found


def parse(args: list[str]) -> None:
    """Parse `vladva ARGS` as the CLI would, down to the subcommand, without running it."""
    cmd = get_command(app)
    ctx = cmd.make_context("vladva", list(args))
    while hasattr(cmd, "resolve_command"):
        name, cmd, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = cmd.make_context(name, rest, parent=ctx)


def test_every_printed_command_parses():
    commands = all_printed()
    concrete = [(page, c) for page, c in commands if not is_synopsis(shlex.split(c)[1:])]
    assert len(commands) > 40 and len(concrete) > 30  # the pages do print commands
    failures = []
    for page, command in concrete:
        try:
            parse(shlex.split(command)[1:])
        except Exception as e:
            failures.append(f"{page}: {command}\n    {type(e).__name__}: {getattr(e, 'message', e)}")
    assert not failures, "commands that do not run as printed:\n" + "\n".join(failures)


# What the run test appends so each command takes seconds (sizes only; nothing else changes).
SMALL = {
    "data shapes": ["--n-train", "24", "--n-val", "8", "--n-test", "4", "--set", "captions_per_image=2", "--quiet"],
    "train": [
        "optim.max_steps=2",
        "optim.warmup_steps=1",
        "data.contrastive_batch_size=4",
        "data.ntp_batch_size=2",
        "eval.max_images=8",
        "eval.every=0",
        "checkpoint.every=0",
        "progress=false",
    ],
}

# (page, the command as the page prints it), in the order they run. Setup between them is `SETUP`.
RUN = [
    ("README.md", "vladva data shapes --out data/shapes"),
    (
        "README.md",
        "vladva train --config src/vladva/configs/default.yaml data.train=data/shapes/train.jsonl "
        "data.val=data/shapes/val.jsonl output_dir=runs/vladva",
    ),
    (
        "README.md",
        "vladva eval -m zs=zeroshot:src/vladva/pretrained/base-lvlm -m clip=clip:src/vladva/pretrained/clip-baseline "
        "--data data/shapes --out runs/eval",
    ),
    (
        "README.md",
        "vladva index build --model clip:src/vladva/pretrained/clip-baseline "
        "--images data/shapes/retrieval/dataset_shapes.json --out runs/index",
    ),
    ("README.md", "vladva search --index runs/index 'a small red circle left of a blue square' -k 5"),
    ("README.md", "vladva serve --index runs/index"),
    ("README.md", "vladva check-manifest data/shapes/train.jsonl --model default"),
    (
        "README.md",
        "vladva export models/vladva-shapes --model default --weights runs/demo/vladva --format sentence-transformers "
        "--results runs/demo/eval/results.json",
    ),
    (
        "docs/core.md",
        "vladva embed --model default --weights runs/vladva-default --images data/shapes/images/val "
        "--out img.safetensors",
    ),
    (
        "docs/core.md",
        "vladva embed --model default --weights runs/vladva-default --texts captions.txt --out txt.safetensors",
    ),
    ("docs/core.md", "vladva merge --model default --weights runs/vladva-default --out models/vladva-merged"),
    ("docs/core.md", "vladva embed --model models/vladva-merged --texts captions.txt --out txt.npy"),
    ("docs/export.md", "vladva embed --model models/vladva-shapes --texts sentences.txt --out texts.safetensors"),
    (
        "docs/export.md",
        "vladva eval -m vladva:models/vladva-shapes --data runs/demo/data -s retrieval --out runs/eval-export",
    ),
    (
        "docs/serving.md",
        "vladva index build --model vladva:default:runs/vladva --images data/shapes/val.jsonl --out runs/index",
    ),
    ("docs/serving.md", "vladva index add runs/index --images more_images/"),
    ("docs/serving.md", "vladva search --index runs/index 'a red circle above a blue square' -k 5"),
    ("docs/serving.md", "vladva search --index runs/index --image query.png -k 5"),
    ("docs/serving.md", "vladva search --index runs/index --image query.png --captions captions.txt"),
    ("docs/serving.md", "vladva search --index runs/index --image query.png --target captions"),
    ("docs/serving.md", "vladva search --index runs/index 'a red circle' --json"),
]


def _setup(before: str, work: Path) -> None:
    """What a reader has done before the command (files the pages assume exist)."""
    if before.startswith("vladva export models/vladva-shapes "):
        # the export reads a demo run: the trained run and an evaluation of it
        (work / "runs" / "demo").mkdir(parents=True, exist_ok=True)
        (work / "runs" / "demo" / "vladva").symlink_to(work / "runs" / "vladva")
        (work / "runs" / "demo" / "data").symlink_to(work / "data" / "shapes")
        r = _invoke("vladva eval -m VladVA=vladva:default:runs/demo/vladva --data data/shapes -s retrieval "
                    "--out runs/demo/eval")  # fmt: skip
        assert r.exit_code == 0, r.output
    elif before.startswith("vladva embed --model default --weights runs/vladva-default --images"):
        (work / "runs" / "vladva-default").symlink_to(work / "runs" / "vladva")
        (work / "captions.txt").write_text("a red circle\na blue square left of a green cross\n")
        (work / "sentences.txt").write_text("a red circle\n")
    elif before.startswith("vladva index build --model vladva:default:runs/vladva"):
        import shutil

        shutil.rmtree(work / "runs" / "index")  # the README's index stood here
        (work / "more_images").mkdir()
        Image.new("RGB", (32, 32), "red").save(work / "more_images" / "red.png")
        Image.new("RGB", (32, 32), "blue").save(work / "query.png")


def _invoke(command: str, extra: list[str] = ()):
    return CliRunner().invoke(app, [*shlex.split(command)[1:], *extra])


@pytest.mark.slow
def test_printed_commands_run(tmp_path, monkeypatch):
    import uvicorn

    printed = {(page, " ".join(shlex.split(c))) for page, c in all_printed()}
    missing = [(page, c) for page, c in RUN if (page, " ".join(shlex.split(c))) not in printed]
    assert not missing, f"no longer printed (update RUN): {missing}"

    work = tmp_path / "checkout"
    work.mkdir()
    (work / "src").symlink_to(ROOT / "src")
    monkeypatch.chdir(work)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    for page, command in RUN:
        _setup(command, work)
        extra = next((v for k, v in SMALL.items() if command.startswith(f"vladva {k} ")), [])
        r = _invoke(command, extra)
        assert r.exit_code == 0, f"{page}: {command}\n{r.output}"

    # the model card of the export runs as printed too (its eval names the data it was measured on)
    card = (work / "models" / "vladva-shapes" / "README.md").read_text(encoding="utf-8")
    card_commands = printed_commands(card)
    assert any(c.startswith("vladva eval -m vladva:models/vladva-shapes --data /") for c in card_commands), card
    for command in card_commands:
        r = _invoke(command)
        assert r.exit_code == 0, f"model card: {command}\n{r.output}"
