"""Linear probes: does a frozen feature linearly encode a scene attribute?

Logistic regression on standardised features, fit on train, scored on held-out data. Linear,
not MLP: an MLP probe on random features already reads single-object shape at 94% here, so it
would prove nothing.
"""

from __future__ import annotations

import torch

from vladva.eval.probes import linear_probe_accuracy  # the one linear probe, shared with the evaluation
from vladva.toyworld.base.data import SceneVocab
from vladva.toyworld.base.vision import unique_largest
from vladva.toyworld.scene import Scene


def scene_probe_targets(scenes: list[Scene], vocab: SceneVocab) -> dict[str, torch.Tensor]:
    """Probe targets per image: `largest_shape`, `largest_colour` (-1 where no object is strictly
    largest: such images are left out of those probes), `largest_size`, `count` `(n,)`;
    `colour_of_<shape>` (colour index, or len(colours) when absent) and `has_<colour>` (0/1) `(n,)`."""
    out: dict[str, list[int]] = {"largest_shape": [], "largest_colour": [], "largest_size": [], "count": []}
    for s in vocab.shapes:
        out[f"colour_of_{s}"] = []
    for c in vocab.colours:
        out[f"has_{c}"] = []
    for scene in scenes:
        big = unique_largest(scene)
        out["largest_shape"].append(vocab.shapes.index(big.shape) if big else -1)
        out["largest_colour"].append(vocab.colours.index(big.colour) if big else -1)
        out["largest_size"].append(vocab.sizes.index(scene.largest().size))
        out["count"].append(len(scene.objects))
        for s in vocab.shapes:
            found = sorted(scene.find(shape=s), key=lambda o: -o.radius)
            out[f"colour_of_{s}"].append(vocab.colours.index(found[0].colour) if found else len(vocab.colours))
        for c in vocab.colours:
            out[f"has_{c}"].append(int(bool(scene.find(colour=c))))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def probe_features(
    train_x: torch.Tensor, train_scenes: list[Scene], test_x: torch.Tensor, test_scenes: list[Scene], vocab: SceneVocab
) -> dict[str, float]:
    """Accuracy (%) of a linear probe per target, plus the means `colour_of_shape` (binding: the
    colour of each shape, or absent) and `has_colour` over their per-shape / per-colour probes."""
    tr, te = scene_probe_targets(train_scenes, vocab), scene_probe_targets(test_scenes, vocab)
    acc = {}
    for k in tr:
        a, b = tr[k] >= 0, te[k] >= 0
        acc[k] = 100 * linear_probe_accuracy(train_x[a], tr[k][a], test_x[b], te[k][b])
    out = {k: round(v, 1) for k, v in acc.items() if not k.startswith(("colour_of_", "has_"))}
    out["colour_of_shape"] = round(sum(acc[f"colour_of_{s}"] for s in vocab.shapes) / len(vocab.shapes), 1)
    out["has_colour"] = round(sum(acc[f"has_{c}"] for c in vocab.colours) / len(vocab.colours), 1)
    for s in vocab.shapes:
        out[f"colour_of_{s}"] = round(acc[f"colour_of_{s}"], 1)
    return out
