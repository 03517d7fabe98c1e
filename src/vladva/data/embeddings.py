"""The embeddings file `vladva embed` writes, and reading it back.

- `FILE.safetensors`: tensor `embeddings` `(n, dim)` float32, and string metadata: `items` (a JSON
  list of the n item names, row order) plus whatever the writer adds (`model`, `kind`).
- `FILE.npy`: the `(n, dim)` array, and `FILE.items.txt` beside it, one item name per line in row
  order (newlines inside a name become spaces).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from vladva.errors import UserError

if TYPE_CHECKING:
    import torch

EMBEDDINGS_SUFFIXES = (".safetensors", ".npy")


def check_embeddings_path(out: Path | str) -> Path:
    """`out` as a Path, if it names one of the two formats; a `UserError` naming it otherwise."""
    out = Path(out)
    if out.suffix not in EMBEDDINGS_SUFFIXES:
        raise UserError(f"{out}: must end in .safetensors or .npy")
    return out


def write_embeddings(out: Path | str, embeddings: torch.Tensor, items: list[str], meta: dict[str, str]) -> None:
    """Write `embeddings` `(len(items), dim)` and the item names to `out` (format by its suffix);
    `meta` (str -> str) goes into the safetensors metadata and is not kept by `.npy`."""
    out = check_embeddings_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from vladva.data.files import save_safetensors

        save_safetensors({"embeddings": embeddings.contiguous()}, out, {"items": json.dumps(items), **meta})
    else:
        import numpy as np

        np.save(out, embeddings.numpy())
        out.with_suffix(".items.txt").write_text("".join(i.replace("\n", " ") + "\n" for i in items), encoding="utf-8")


def read_embeddings(path: Path | str) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """`(embeddings (n, dim), item names, metadata)` of a file `write_embeddings` wrote (metadata
    without `items`; empty for `.npy`)."""
    path = check_embeddings_path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            table = f.get_tensor("embeddings")
        return table, json.loads(meta.pop("items", "[]")), meta
    import numpy as np
    import torch

    table = torch.from_numpy(np.load(path))
    items = path.with_suffix(".items.txt").read_text(encoding="utf-8").splitlines()
    return table, items, {}
