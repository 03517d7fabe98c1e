"""What training cost: one record per stage, written as `compute.json` beside what it produced.

Every training loop (VladVA fine-tuning, the base-model and baseline pretraining stages) fills a
`StageCompute`: optimizer steps, what the model saw (image-caption pairs for a contrastive loss,
long captions for the next-token loss, other training sequences, text tokens), wall seconds on
which device and how many CPU threads. Reports sum the stages of a model's folders
(`vladva.eval.models.read_train_compute`), so a comparison can be stated in pairs seen, tokens
and device time rather than in seconds across different devices.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

COMPUTE_FILE = "compute.json"


@dataclass
class StageCompute:
    """What one stage cost; `seconds` is the wall time of its training loop on `device`."""

    stage: str
    steps: int = 0
    # Training sequences of any kind (images, captions, instructions) the stage consumed.
    examples: int = 0
    # Image-caption pairs in contrastive batches (each image with its caption for the step).
    pairs: int = 0
    # Long captions trained: next-token targets (and contrastive texts with data.contrastive_captions).
    long_captions: int = 0
    # Real (unpadded) tokens through the text side: the language model's sequences (an LVLM's image
    # placeholder positions included), or a CLIP-style text tower's tokens; 0 for an image-only stage.
    tokens: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    device_name: str = ""
    threads: int = 1
    final_loss: float | None = None
    stopped_by_clock: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["device_seconds"] = round(self.seconds * (self.threads if self.device == "cpu" else 1), 1)
        d["seconds"] = round(self.seconds, 1)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> StageCompute:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def describe_device(device: torch.device | str) -> str:
    """`"NVIDIA H100 ..."` for a GPU; the CPU's name and torch's thread count otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def write_compute(path: Path | str, stages: list[StageCompute]) -> None:
    """`compute.json`: per stage steps, pairs, tokens, seconds; the total is what the folder cost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(s.seconds for s in stages)
    data = {"stages": [s.to_dict() for s in stages], "total_seconds": round(total, 1)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_compute(path: Path | str) -> list[StageCompute]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [StageCompute.from_dict(s) for s in data["stages"]]
