"""CPU threads are chosen from the cores and the machine's load, and the user can fix them (issue 15,
item 10): on a busy 2-core machine 2 threads made a default-recipe step 10x slower than 1."""

from __future__ import annotations

import pytest

from vladva import threads


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    threads.auto_threads.cache_clear()
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    yield
    threads.auto_threads.cache_clear()


@pytest.mark.parametrize(
    "load,expected",
    [(0.0, 4), (0.4, 4), (1.6, 2), (2.9, 1), (3.5, 1), (16.0, 1)],
)
def test_idle_cores_minus_the_load(monkeypatch, load, expected):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    n, why = threads.auto_threads()
    assert n == expected and "4 cores" in why


def test_the_user_overrides_it(monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (16.0, 16.0, 16.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.auto_threads() == (3, "OMP_NUM_THREADS=3")
    threads.auto_threads.cache_clear()
    monkeypatch.setenv(threads.ENV_VAR, "2")  # vladva's own variable wins
    assert threads.auto_threads() == (2, "VLADVA_NUM_THREADS=2")
    threads.auto_threads.cache_clear()
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ValueError, match="VLADVA_NUM_THREADS='many': expected a whole number"):
        threads.auto_threads()


def test_decided_once_per_process(monkeypatch):
    """A later step of the same command (the demo's eval after its training) is not steered by the
    load this process itself made."""
    loads = iter([0.0, 8.0])
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (next(loads),) * 3)
    assert threads.auto_threads()[0] == 4 and threads.auto_threads()[0] == 4


def test_apply_and_export(monkeypatch):
    import torch

    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(0) == 1 and torch.get_num_threads() == 1
        assert threads.apply_threads(2) == 2 and torch.get_num_threads() == 2  # the recipe's num_threads=N
    finally:
        torch.set_num_threads(before)
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "")  # unset, and restored after the test
    threads.export_threads_env()  # the CLI's start: torch reads OMP_NUM_THREADS when it loads

    assert os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    threads.export_threads_env()
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the user's value is kept


def test_default_recipe_chooses_automatically():
    from vladva.cli.train import default_recipe
    from vladva.config import load_config
    from vladva.train.config import TrainConfig

    assert load_config(TrainConfig, default_recipe()).num_threads == 0
