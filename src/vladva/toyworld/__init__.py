"""The synthetic shapes world and everything built on it, kept apart from the library users import.

- `scene`, `captions`: scenes of coloured shapes, their rendering, and captions checked against them;
- `shapes`, `splits`: `vladva data shapes`, the training manifests and every evaluation split;
- `base`: the recipes that pretrain the embedded default base LVLM and the CLIP-style baseline;
- `toy_embedder`: a colour-histogram embedder for serving tests and demos without a model.

Nothing outside `vladva.toyworld`, `vladva.testing`, `vladva.demo` and the CLI imports this package.
"""
