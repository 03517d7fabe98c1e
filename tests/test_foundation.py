import json

import pytest
from typer.testing import CliRunner

from vladva.cli import app
from vladva.config import ConfigError, load_config, parse_overrides
from vladva.data.manifest import ManifestError, Record, read_manifest, write_manifest


def test_cli_help_lists_subcommands():
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    assert "Usage" in out.output


def test_help_texts_are_whole():
    """No one-line help cut at 45 characters ("..."), no rich markup eating `[...]` from specs or
    cutting long words ("visual_genome_attribution.j…")."""
    runner = CliRunner()
    top = " ".join(runner.invoke(app, ["--help"], terminal_width=100).output.split())  # wrapping aside
    commands = top[top.index("Commands:") :]
    assert "..." not in commands and "…" not in commands
    assert "Train soft prompts + LoRA with contrastive (short captions) and next-token (long captions)" in top
    assert "Data sets: make the embedded synthetic shapes data" in top and "re-check it (`check`)." in top
    index = " ".join(runner.invoke(app, ["index", "--help"], terminal_width=100).output.split())
    assert "Embed every readable image of a folder or manifest into a new index folder." in index
    ev = " ".join(runner.invoke(app, ["eval", "--help"], terminal_width=80).output.split())
    assert "visual_genome_attribution.json" in ev and "vladva:BASE[:WEIGHTS]" in ev and "…" not in ev


def test_manifest_accepts_one_caption_under_caption(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "caption": "a red circle"}\n')
    (rec,), _ = read_manifest(tmp_path / "m.jsonl")
    assert rec.captions == ["a red circle"]


@pytest.mark.parametrize("command", ["embed", "merge", "export"])
def test_weights_option_and_its_hidden_old_name(command):
    """The trained weights are `--weights/-w`; `--adapter/-a` still parses but is not advertised."""
    out = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert out.exit_code == 0 and "--weights" in out.output and "-w" in out.output
    assert "--adapter" not in out.output


def test_old_adapter_option_still_runs_with_a_note(tmp_path):
    runner = CliRunner()
    nowhere = tmp_path / "nowhere"
    # export checks the weights folder before loading anything, so this needs no model.
    r = runner.invoke(app, ["export", str(tmp_path / "out"), "--adapter", str(nowhere)])
    assert r.exit_code == 2 and "no such folder" in r.stderr, r.output
    assert "note: --adapter is deprecated; use --weights (-w)" in r.stderr
    r = runner.invoke(app, ["embed", "-w", "a", "-a", "b", "--texts", "t.txt", "--out", "x.npy"])
    assert r.exit_code == 2 and "give the trained weights once" in r.stderr, r.output
    r = runner.invoke(app, ["merge", "--out", str(tmp_path / "merged")])
    assert r.exit_code == 2 and "error: give the trained weights to merge: --weights" in r.stderr, r.output


def test_manifest_round_trip(tmp_path):
    (tmp_path / "images").mkdir()
    recs = [
        Record("a", tmp_path / "images/a.png", ["a red circle"], "A long caption.", {"k": 1}),
        Record("b", tmp_path / "images/b.png", ["x", "y"]),
    ]
    write_manifest(tmp_path / "train.jsonl", recs)
    back, _report = read_manifest(tmp_path / "train.jsonl")
    assert [r.id for r in back] == ["a", "b"]
    assert back[0].image == tmp_path / "images/a.png" and back[0].long_caption == "A long caption."
    assert back[1].captions == ["x", "y"] and back[1].long_caption is None
    line = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert line["image"] == "images/a.png"


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"image": "a.png"}', "missing key 'captions'"),
        ('{"image": "a.png", "captions": ["  "]}', "captions[0] is empty"),
        ('{"image": "../a.png", "captions": ["x"]}', "escapes the data root"),
        ('{"image": "/etc/passwd", "captions": ["x"]}', "absolute image path"),
        ('{"image": "a.png", "captoins": ["x"]}', "unknown key"),
        ('{"image": 3, "captions": ["x"]}', "non-empty string path"),
        ('{"image": "a.png", "caption": "x", "captions": ["y"]}', "not both"),
        ('{"image": "a.png", "caption": 3}', "caption must be a string"),
        ("not json", "Expecting value"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, line, reason):
    p = tmp_path / "m.jsonl"
    p.write_text('{"image": "ok.png", "captions": ["fine"]}\n' + line + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert f"{p}:2:" in str(e.value) and reason in str(e.value)
    recs, report = read_manifest(p, strict=False)
    assert len(recs) == 1 and report.skipped[0][0] == 2


def test_config_overrides_and_unknown_keys(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        lr: float = 1e-3
        steps: int = 10

    @dataclass
    class Outer:
        name: str = "x"
        train: Inner = field(default_factory=Inner)

    y = tmp_path / "r.yaml"
    y.write_text("name: run\ntrain:\n  steps: 5\n")
    cfg = load_config(Outer, y, ["train.lr=2e-4"])
    assert cfg.name == "run" and cfg.train.steps == 5 and cfg.train.lr == 2e-4
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        load_config(Outer, None, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(Outer, None, ["train.steps=abc"])
    assert parse_overrides(["a.b=1", "c=true"]) == {"a": {"b": 1}, "c": True}
