"""Writing safetensors files with ordinary permissions.

safetensors (0.8) creates its files with mode 0600, readable only by their owner, unlike every
other file a command writes (0644 under the usual umask 022). A shared model folder, an export
copied to a web server or an embeddings file read by a colleague then fails with "permission
denied". Everything vladva writes goes through `save_safetensors`, and folders that libraries
write (`save_pretrained`) through `normal_file_modes`.
"""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_file_modes(path: Path | str) -> None:
    """Give `path` (a file, or every `*.safetensors` file under a folder) the mode a plain `open`
    would: 0666 minus the process umask (0644 under umask 022)."""
    path = Path(path)
    files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
    mode = 0o666 & ~_umask()
    for f in files:
        if f.is_file():
            os.chmod(f, mode)


def save_safetensors(tensors: dict, path: Path | str, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file` with the usual file mode (`normal_file_modes`)."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    normal_file_modes(path)
    return path
