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
