"""How many CPU threads torch uses: chosen from the cores and how busy the machine is.

torch's default is one thread per core. On a machine whose cores are already busy (other jobs,
other users) its threads spin-wait for each other: on this project's busy 2-core machine a
default-recipe step took 115 s with 2 threads against 11 s with 1 (docs/performance.md).
`auto_threads` takes the cores this process may use (affinity, at most the physical cores), minus
the 1-minute load average already on them (rounded), at least 1: all cores on an idle machine, 1 on
a busy one. It decides once per process, so a later step of a command is not steered by this
process's own load.

Override, strongest first: the recipe key `num_threads=N` (training), `VLADVA_NUM_THREADS=N`,
`OMP_NUM_THREADS=N` (torch's own variable; vladva then leaves torch alone).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

ENV_VAR = "VLADVA_NUM_THREADS"


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs of /proc/cpuinfo: hyper-threads share a core, and torch's own
    default counts cores, not hyper-threads. None where /proc/cpuinfo does not say."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    cores, package = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return len(cores) or None


def usable_cores() -> int:
    """CPU cores this process may run on: its CPU affinity (e.g. a container's limit), at most the
    machine's physical cores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _physical_cores() or cpus))


def _env_threads(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number of threads") from None
    if n < 1:
        raise ValueError(f"{name}={value!r}: expected 1 or more threads")
    return n


@functools.cache
def auto_threads() -> tuple[int, str]:
    """`(threads, why)`: `VLADVA_NUM_THREADS`, else `OMP_NUM_THREADS`, else the idle cores
    (`usable_cores()` minus the 1-minute load average, rounded, at least 1)."""
    for name in (ENV_VAR, "OMP_NUM_THREADS"):
        n = _env_threads(name)
        if n is not None:
            return n, f"{name}={n}"
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, f"{cores} cores (load unknown)"
    n = max(1, min(cores, round(cores - load)))
    return n, f"{cores} cores, load {load:.1f}"


def apply_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads: `requested` when > 0, else `auto_threads()`. Returns the count."""
    import torch

    n = requested if requested > 0 else auto_threads()[0]
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def export_threads_env() -> None:
    """Before torch is imported (the CLI's start): put the automatic choice in `OMP_NUM_THREADS`,
    which torch reads when it loads, unless the user set it. Cheap: imports nothing."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    with contextlib.suppress(ValueError):  # a bad VLADVA_NUM_THREADS: `apply_threads` reports it
        os.environ["OMP_NUM_THREADS"] = str(auto_threads()[0])


__all__ = ["ENV_VAR", "apply_threads", "auto_threads", "export_threads_env", "usable_cores"]
