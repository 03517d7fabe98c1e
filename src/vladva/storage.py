"""Writing files so that a crash or a full disk never leaves a half-written state.

Every file vladva produces (checkpoints, exports, indexes, reports, caches) is written under a
temporary name, flushed to disk (fsync), and renamed over its final name; a folder is fsynced
after a rename so the rename itself is durable. `kill -9` at any instant therefore leaves either
the old file or the new one.

A full disk shows up differently in each writer (OSError ENOSPC from Python, `SafetensorError
... StorageFull` from safetensors, `RuntimeError ... file write failed` from torch.save and
FAISS). `is_disk_full` recognises them all; `writing(what, where, intact)` turns them into a
`DiskFullError`, a `UserError` the CLI prints as one line, saying what was being written and
what is still intact.

`pause_for_tests` is the hook the crash tests use to stop a process at an exact point of a write
(`VLADVA_TEST_PAUSE_AT=POINT:N`) and `kill -9` it there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vladva.errors import UserError

PAUSE_ENV = "VLADVA_TEST_PAUSE_AT"
# Markers of a full disk in the messages of writers that do not raise OSError with an errno.
_FULL_MARKERS = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")
# Writers that only say "write failed" (torch.save, FAISS) are taken for a full disk when the
# file system has less than this left.
_NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(UserError):
    """No space left on the device while writing; the message says what is still intact."""


def is_disk_full(error: BaseException, where: Path | str | None = None) -> bool:
    """Whether `error` is (or wraps) a full disk or quota; `where` is checked for free space when
    the writer's message is vague."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if any(m in str(e).lower() for m in _FULL_MARKERS):
            return True
    if where is not None and "write" in str(error).lower():
        return free_bytes(where) < _NEARLY_FULL_BYTES
    return False


def free_bytes(where: Path | str) -> int:
    """Bytes free for this user on the file system holding `where` (or its nearest existing parent)."""
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


@contextlib.contextmanager
def writing(what: str, where: Path | str, intact: str) -> Iterator[None]:
    """Turn a full disk inside the block into `DiskFullError("no space left on device writing
    {what} ({where}); {intact}")`; other errors pass unchanged."""
    try:
        yield
    except Exception as e:  # an inner writer's DiskFullError is restated: the outermost knows what is intact
        if isinstance(e, DiskFullError) or is_disk_full(e, where):
            raise DiskFullError(
                f"no space left on device writing {what} ({where}, {free_bytes(where):,} bytes free); {intact}"
            ) from e
        raise


def fsync_dir(folder: Path | str) -> None:
    """Make renames and new entries in `folder` durable."""
    fsync_file(folder)


def fsync_file(path: Path | str) -> None:
    """Flush a written file's data to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path | str) -> None:
    """fsync every file and folder under `root`, then `root` itself."""
    root = Path(root)
    for path in sorted(root.rglob("*")) + [root]:
        fsync_file(path)


def temporary_name(path: Path | str) -> Path:
    """A hidden sibling of `path` to write to before renaming: `.NAME.PID.tmp`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path | str, write: Callable[[Path], object], durable: bool = True) -> Path:
    """`write(tmp)` (a function that writes a whole file at the path it is given), then fsync and
    rename `tmp` over `path`. The temporary file is removed if anything fails, so `path` is either
    its old self or the new file. `durable=False` skips the fsyncs (caches)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with writing(str(path.name), path.parent, f"the previous {path.name}, if any, is unchanged"):
            write(tmp)
            if durable:
                fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str, durable: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)


def pause_for_tests(root: Path | str, point: str, step: int) -> None:
    """Sleep until killed when `VLADVA_TEST_PAUSE_AT` is `point:step`, after writing
    `root/PAUSED-point`; otherwise do nothing. Crash tests use it to `kill -9` at an exact point."""
    if os.environ.get(PAUSE_ENV) == f"{point}:{step}":
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / f"PAUSED-{point}").write_text(str(step), encoding="utf-8")
        while True:
            time.sleep(1)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
