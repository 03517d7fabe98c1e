"""Safe loading: safetensors only, no pickled code, no remote code, clear errors for missing,
partial or foreign model folders and checkpoints, and a service bound to loopback by default.

The case tables are read by `scripts/make_reliability_doc.py` for docs/reliability.md.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

SRC = Path(__file__).resolve().parent.parent / "src" / "vladva"


class Case(NamedTuple):
    id: str
    what: str
    expect: str
    data: Any = None


# ---- what the source code may not do -------------------------------------------------------------

FORBIDDEN_CASES = [
    Case(
        "torch-load-unsafe",
        "`torch.load(` without `weights_only=True` anywhere in src/",
        "none: checkpoints' trainer state is read with weights_only=True",
        r"torch\.load\((?![^)]*weights_only=True)",
    ),
    Case(
        "pickle",
        "`pickle.load` / `pickle.loads` / `import pickle` in src/",
        "none",
        r"\bpickle\.loads?\(|^\s*import pickle",
    ),
    Case("numpy-pickle", "`allow_pickle=True` in src/", "none", r"allow_pickle\s*=\s*True"),
    Case(
        "remote-code",
        "`trust_remote_code=True` in src/",
        "none: model folders' own code is never run",
        r"trust_remote_code\s*=\s*True",
    ),
    Case(
        "yaml-unsafe",
        "`yaml.load(` / `yaml.unsafe_load(` in src/ (instead of yaml.safe_load)",
        "none",
        r"\byaml\.(unsafe_)?load\(",
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in FORBIDDEN_CASES])
def test_source_has_no_unsafe_loading(case):
    pattern = re.compile(case.data, re.MULTILINE)
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan really covers the package
    hits = [
        f"{f.relative_to(SRC.parent)}:{text[: m.start()].count(chr(10)) + 1}"
        for f in files
        for text in [f.read_text(encoding="utf-8")]
        for m in pattern.finditer(text)
    ]
    assert hits == [], f"{case.what}: {hits}"


def test_the_scan_would_catch_an_unsafe_call():
    """The patterns above match the unsafe spellings (so the scan cannot pass vacuously)."""
    samples = {
        "torch-load-unsafe": ["x = torch.load(p)", "torch.load(p, weights_only=False)"],
        "pickle": ["data = pickle.loads(b)", "import pickle"],
        "numpy-pickle": ["np.load(p, allow_pickle=True)"],
        "remote-code": ["AutoModel.from_pretrained(p, trust_remote_code=True)"],
        "yaml-unsafe": ["yaml.load(text)", "yaml.unsafe_load(text)"],
    }
    for case in FORBIDDEN_CASES:
        for sample in samples[case.id]:
            assert re.search(case.data, sample, re.MULTILINE), (case.id, sample)
    assert not re.search(FORBIDDEN_CASES[0].data, "torch.load(path, map_location='cpu', weights_only=True)")


# ---- tiny model and checkpoint -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random LLaVA and a saved VladVA adapter folder for it."""
    from vladva.model.vladva import VladVA
    from vladva.testing import build_tiny_llava

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loading")
    base = build_tiny_llava(root / "base", hidden=32, layers=1)
    model = VladVA.from_pretrained(base)
    model.prepare_for_training()
    ckpt = model.save_weights(root / "adapter", base_model=str(base))
    return base, ckpt


def test_saved_adapter_is_safetensors_only(tiny):
    """A saved adapter holds weights only as .safetensors (no .bin / .pt / .pkl)."""
    _, ckpt = tiny
    files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    assert "vladva_weights.safetensors" in files and "adapter/adapter_model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))], files


class _RunsCode:
    """Unpickling this runs `open(marker, "w")`: what a malicious pickled checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_trainer_state_is_refused_not_run(tmp_path):
    """A trainer_state.pt carrying a pickled call: resume refuses it (weights_only) and the call never runs."""
    from vladva.train.checkpoint import load_trainer_state

    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": _RunsCode(marker)}, tmp_path / "trainer_state.pt")
    with pytest.raises(ValueError, match=r"trainer_state\.pt: cannot load the trainer state \(UnpicklingError"):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_pickled_bin_weights_are_refused_not_run(tiny, tmp_path):
    """A model folder whose weights are a pickled pytorch_model.bin: refused by name, its code never runs."""
    from vladva.model.vladva import VladVA

    base, _ = tiny
    folder = tmp_path / "bin-model"
    shutil.copytree(base, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"payload": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(
        FileNotFoundError, match=rf"{folder}: no \*\.safetensors weights; vladva loads only safetensors"
    ):
        VladVA.from_pretrained(folder)
    assert not marker.exists()


# ---- foreign model folders -----------------------------------------------------------------------


def _bert_folder(folder: Path, _base: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)


def _remote_code_folder(folder: Path, _base: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil_lvlm",
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModelForImageTextToText": "modeling_evil.EvilModel",
                },
            }
        )
    )
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(f"open({str(folder / 'code-ran')!r}, 'w').write('ran')\n")


def _no_model_type(folder: Path, _base: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32}))


def _broken_config(folder: Path, _base: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llava",')


def _empty_folder(folder: Path, _base: Path) -> None:
    folder.mkdir(parents=True)


MODEL_FOLDER_CASES = [
    Case(
        "bert",
        "a BERT model folder (model_type 'bert')",
        "unsupported model_type 'bert': vladva supports llava, llava_next, qwen2_vl",
        _bert_folder,
    ),
    Case(
        "remote-code",
        "a folder whose config.json has auto_map to its own Python files (model_type 'evil_lvlm')",
        "unsupported model_type 'evil_lvlm'",
        _remote_code_folder,
    ),
    Case(
        "no-model-type",
        "a config.json without model_type",
        "no 'model_type' string; not a Hugging Face model config",
        _no_model_type,
    ),
    Case("broken-config", "a config.json that is not valid JSON", "not valid JSON", _broken_config),
    Case("not-a-model-folder", "an empty folder", "not a Hugging Face model folder (no config.json)", _empty_folder),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in MODEL_FOLDER_CASES])
def test_foreign_model_folders_are_refused_by_name(tiny, tmp_path, case):
    from vladva.model.vladva import VladVA

    folder = tmp_path / case.id
    case.data(folder, tiny[0])
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        VladVA.from_pretrained(folder)
    assert str(folder) in str(e.value) and case.expect in str(e.value), str(e.value)
    assert not (folder / "code-ran").exists()  # no file of the folder was imported


# ---- untrusted folders: code, paths outside, pickles ----------------------------------------------


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _plant_code(folder: Path, marker: Path) -> dict:
    """Python files in `folder` that would create `marker` if anything imported them; their auto_map."""
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForImageTextToText": "modeling_evil.EvilModel"}


def _auto_map_config(folder: Path, marker: Path) -> None:
    _edit_json(folder / "config.json", auto_map=_plant_code(folder, marker))


def _auto_map_tokenizer(folder: Path, marker: Path) -> None:
    _plant_code(folder, marker)
    _edit_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})


def _auto_mapping_adapter(folder: Path, marker: Path) -> None:
    _plant_code(folder, marker)
    _edit_json(
        folder / "adapter" / "adapter_config.json",
        auto_mapping={"base_model_class": "EvilModel", "parent_library": "modeling_evil"},
    )


def _megatron_adapter(folder: Path, marker: Path) -> None:
    _edit_json(
        folder / "adapter" / "adapter_config.json",
        megatron_config={"tensor_model_parallel_size": 1},
        megatron_core="modeling_evil",
    )


def _outside_weights(folder: Path, marker: Path, shard: str) -> None:
    """Move the weights out of the folder and name them in a shard index, as a sharded checkpoint would."""
    from safetensors.torch import load_file

    outside = marker.parent / "outside.safetensors"
    (folder / "model.safetensors").rename(outside)
    keys = load_file(outside).keys()
    (folder / "model.safetensors").write_bytes(b"")  # a decoy, so the folder still "has" safetensors
    name = str(outside) if shard == "absolute" else f"../{outside.name}" if shard == "dotdot" else shard
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": dict.fromkeys(keys, name)})
    )


def _pickled_adapter(folder: Path, marker: Path) -> None:
    (folder / "adapter" / "adapter_model.safetensors").unlink()
    torch.save({"payload": _RunsCode(marker)}, folder / "adapter" / "adapter_model.bin")


def _pickled_export(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").unlink()
    torch.save({"payload": _RunsCode(marker)}, folder / "pytorch_model.bin")


def _latest_elsewhere(folder: Path, marker: Path, how: str) -> None:
    """A run folder whose `latest` points at a (complete) checkpoint outside it."""
    ckpts = folder / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "latest").write_text((str(marker.parent / "elsewhere") if how == "absolute" else "../../elsewhere") + "\n")


# data: (which folder the case starts from: base, export or weights; the edit; the error fragment)
UNTRUSTED_CASES = [
    Case(
        "auto-map-config",
        "a LLaVA folder whose config.json has auto_map naming its own Python files",
        "config.json: 'auto_map' asks to run code shipped with the model (configuration_evil.EvilConfig, "
        "modeling_evil.EvilModel); "
        "vladva never runs a model folder's own code",
        ("base", _auto_map_config),
    ),
    Case(
        "auto-map-exported",
        "an exported (merged) VladVA folder whose config.json has auto_map",
        "config.json: 'auto_map' asks to run code shipped with the model",
        ("export", _auto_map_config),
    ),
    Case(
        "auto-map-tokenizer",
        "a tokenizer_config.json with auto_map to a tokenizer class in the folder",
        "tokenizer_config.json: 'auto_map' asks to run code shipped with the model",
        ("base", _auto_map_tokenizer),
    ),
    Case(
        "auto-mapping-adapter",
        "trained weights whose adapter/adapter_config.json has an auto_mapping to a class outside transformers",
        "adapter_config.json: 'auto_mapping' asks to run code shipped with the model",
        ("weights", _auto_mapping_adapter),
    ),
    Case(
        "megatron-adapter",
        "an adapter_config.json with megatron_config (PEFT would import the module megatron_core names)",
        "adapter_config.json: 'megatron_config' makes PEFT import the module 'modeling_evil'",
        ("weights", _megatron_adapter),
    ),
    Case(
        "shard-absolute-path",
        "model.safetensors.index.json naming an absolute path outside the folder (transformers would load it)",
        "model.safetensors.index.json: weight_map names '/",
        ("base", lambda f, m: _outside_weights(f, m, "absolute")),
    ),
    Case(
        "shard-dotdot",
        "a shard index naming ../outside.safetensors",
        "weight_map names '../outside.safetensors', outside",
        ("export", lambda f, m: _outside_weights(f, m, "dotdot")),
    ),
    Case(
        "shard-pickle",
        "a shard index naming pytorch_model-00001-of-00001.bin",
        "weight_map names 'pytorch_model-00001-of-00001.bin', not a .safetensors file; vladva never loads pickles",
        ("base", lambda f, m: _outside_weights(f, m, "pytorch_model-00001-of-00001.bin")),
    ),
    Case(
        "pickled-adapter",
        "trained weights whose LoRA file is a pickled adapter_model.bin carrying code",
        "adapter_model.bin: LoRA weights as a pickle; vladva loads only adapter_model.safetensors",
        ("weights", _pickled_adapter),
    ),
    Case(
        "pickled-export",
        "an exported folder whose weights are a pickled pytorch_model.bin carrying code",
        "no *.safetensors weights; vladva loads only safetensors",
        ("export", _pickled_export),
    ),
    Case(
        "latest-absolute",
        "a run folder whose checkpoints/latest names a checkpoint by absolute path elsewhere",
        "latest: names '/",
        ("run", lambda f, m: _latest_elsewhere(f, m, "absolute")),
    ),
    Case(
        "latest-dotdot",
        "a run folder whose checkpoints/latest is ../../elsewhere",
        "latest: names '../../elsewhere', not a checkpoint folder inside",
        ("run", lambda f, m: _latest_elsewhere(f, m, "dotdot")),
    ),
]


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """A merged (exported) folder of the tiny model with its trained weights."""
    from vladva.model.vladva import VladVA

    base, ckpt = tiny
    out = tmp_path_factory.mktemp("exported") / "merged"
    VladVA.from_pretrained(base, ckpt).merge(out)
    return out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in UNTRUSTED_CASES])
def test_untrusted_folders_are_refused_before_anything_runs(tiny, exported, tmp_path, case):
    """Each folder is refused with one error naming the file and what it asked for; no file of the
    folder is imported and no pickle is opened (the planted code would create a marker file)."""
    from vladva.model.vladva import VladVA

    base, ckpt = tiny
    start, edit = case.data
    marker = tmp_path / "code-ran"
    folder = tmp_path / case.id
    if start == "run":
        folder.mkdir()
        shutil.copytree(ckpt, tmp_path / "elsewhere")
    else:
        shutil.copytree({"base": base, "export": exported, "weights": ckpt}[start], folder)
    edit(folder, marker)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        if start in ("weights", "run"):
            VladVA.from_pretrained(base, folder)
        else:
            VladVA.from_pretrained(folder)
    assert case.expect in str(e.value), str(e.value)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_the_refusals_leave_normal_folders_alone(tiny, exported, tmp_path):
    """What the checks allow: trained weights (trainer_state.pt beside them included), an exported
    folder, a folder that also carries a pickled pytorch_model.bin beside its safetensors (never
    opened), and a sharded model whose index names its own shards."""
    from safetensors.torch import load_file, save_file

    from vladva.model.vladva import VladVA

    base, ckpt = tiny
    marker = tmp_path / "code-ran"
    weights = shutil.copytree(ckpt, tmp_path / "weights")
    torch.save({"step": 1}, weights / "trainer_state.pt")
    text = VladVA.from_pretrained(base, weights).encode_texts(["a red circle"])
    beside = shutil.copytree(exported, tmp_path / "beside")
    torch.save({"payload": _RunsCode(marker)}, beside / "pytorch_model.bin")
    assert torch.allclose(VladVA.from_pretrained(beside).encode_texts(["a red circle"]), text, atol=1e-5)
    sharded = shutil.copytree(base, tmp_path / "sharded")
    tensors = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    for i, part in enumerate((names[:half], names[half:]), start=1):
        save_file(
            {k: tensors[k] for k in part}, sharded / f"model-0000{i}-of-00002.safetensors", metadata={"format": "pt"}
        )
    weight_map = {k: f"model-0000{1 if k in names[:half] else 2}-of-00002.safetensors" for k in names}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    a, b = (VladVA.from_pretrained(f).encode_texts(["a red circle"]) for f in (base, sharded))
    assert torch.allclose(a, b, atol=1e-6)
    assert not marker.exists()


def test_cli_reports_a_foreign_model_in_one_line(tiny, tmp_path):
    """`vladva index build --model vladva:BERT_FOLDER`: exit 2, one `error:` line naming the model_type."""
    from typer.testing import CliRunner

    from vladva.cli import app

    folder = tmp_path / "bert"
    _bert_folder(folder, tiny[0])
    images = tmp_path / "images"
    images.mkdir()
    r = CliRunner().invoke(
        app, ["index", "build", "--model", f"vladva:{folder}", "--images", str(images), "--out", str(tmp_path / "ix")]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.startswith("error: ") and "unsupported model_type 'bert'" in r.stderr


# ---- missing or partial checkpoints --------------------------------------------------------------


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep is not None else len(data) // 2])


CHECKPOINT_CASES = [
    Case(
        "no-adapter-folder",
        "a checkpoint folder without its adapter/ folder",
        "incomplete vladva checkpoint, adapter/adapter_config.json is missing",
        lambda c: shutil.rmtree(c / "adapter"),
    ),
    Case(
        "no-adapter-weights",
        "adapter/adapter_model.safetensors deleted",
        "incomplete vladva checkpoint, adapter/adapter_model.safetensors is missing",
        lambda c: (c / "adapter" / "adapter_model.safetensors").unlink(),
    ),
    Case(
        "truncated-adapter",
        "adapter/adapter_model.safetensors cut in half",
        "adapter_model.safetensors: not a readable safetensors file",
        lambda c: _truncate(c / "adapter" / "adapter_model.safetensors"),
    ),
    Case(
        "truncated-tail",
        "vladva_weights.safetensors missing its last 8 bytes",
        "vladva_weights.safetensors: not a readable safetensors file",
        lambda c: _truncate(c / "vladva_weights.safetensors", len((c / "vladva_weights.safetensors").read_bytes()) - 8),
    ),
    Case(
        "empty-weights",
        "vladva_weights.safetensors is 0 bytes",
        "vladva_weights.safetensors: not a readable safetensors file",
        lambda c: _truncate(c / "vladva_weights.safetensors", 0),
    ),
    Case(
        "no-weights",
        "vladva_weights.safetensors deleted",
        "incomplete vladva checkpoint, vladva_weights.safetensors is missing",
        lambda c: (c / "vladva_weights.safetensors").unlink(),
    ),
    Case(
        "no-config",
        "vladva_config.json deleted",
        "not a vladva weights folder (no vladva_config.json",
        lambda c: (c / "vladva_config.json").unlink(),
    ),
    Case(
        "broken-config",
        "vladva_config.json cut in half",
        "vladva_config.json: not valid JSON",
        lambda c: _truncate(c / "vladva_config.json"),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CHECKPOINT_CASES])
def test_missing_or_partial_checkpoint_files_are_named(tiny, tmp_path, case):
    from vladva.model.vladva import VladVA

    base, ckpt = tiny
    broken = tmp_path / "ckpt"
    shutil.copytree(ckpt, broken)
    case.data(broken)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        VladVA.from_pretrained(base, broken)
    assert str(broken) in str(e.value) and case.expect in str(e.value), str(e.value)


def test_latest_pointer_to_a_missing_checkpoint_is_named(tiny, tmp_path):
    """A run folder whose `latest` names a checkpoint that is gone: the error names both."""
    from vladva.model.vladva import VladVA

    base, _ckpt = tiny
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "latest").write_text("step-000100\n")
    with pytest.raises(
        FileNotFoundError, match=r"checkpoints/latest points to .*step-000100, which is not a vladva checkpoint"
    ):
        VladVA.from_pretrained(base, tmp_path / "run")


def test_a_good_checkpoint_still_loads_and_embeds(tiny):
    """The checks above do not refuse a complete checkpoint: it loads and embeds to unit vectors."""
    from vladva.model.vladva import VladVA

    base, ckpt = tiny
    model = VladVA.from_pretrained(base, ckpt)
    emb = model.encode_texts(["a red circle"])
    assert emb.shape == (1, 32) and torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)


# ---- the service's defaults ----------------------------------------------------------------------


def test_serve_binds_loopback_and_has_limits_by_default():
    """`vladva serve` binds 127.0.0.1 unless --host says otherwise; bodies over 8 MiB and requests over
    60 s are refused by default (measured on a live server in test_reliability_load.py)."""
    from vladva.cli.serving import serve
    from vladva.serve.service import ServiceSettings

    params = inspect.signature(serve).parameters
    assert params["host"].default.default == "127.0.0.1"
    assert params["max_body_mb"].default.default == 8.0 and params["timeout_s"].default.default == 60.0
    s = ServiceSettings()
    assert (
        s.max_body_bytes == 8 * 1024 * 1024 and s.request_timeout_s == 60.0 and s.max_image_pixels <= 16 * 1024 * 1024
    )


def test_environment_has_no_pause_hook_set():
    """The kill-and-resume test hook is off unless a test sets it (a stray value would hang training)."""
    from vladva.storage import PAUSE_ENV

    assert PAUSE_ENV not in os.environ
