"""The synthetic shapes world and everything built on it, kept apart from the library users import.

- `scene`, `captions`: scenes of coloured shapes, their rendering, and captions checked against them;
- `world`: what items are drawn from (`World`, `ShapesDataConfig`, the per-item random generator,
  scene sampling) and the true claims and short captions of a scene;
- `negatives`: SugarCrepe-style false captions (evaluation examples, training hard negatives);
- `shapes`: `vladva data shapes` (`generate_shapes_dataset`) and the training manifests;
- `splits`: every evaluation split, and `check_splits` (`shapes.check_dataset` is `vladva data check`);
- `paraphrase`, `paraphrase_splits`: the paraphrase split (`DATA/paraphrase/`), its claims worded
  in synonyms and sentence forms no training caption uses;
- `base`: the recipes that pretrain the embedded default base LVLM and the CLIP-style baseline;
- `toy_embedder`: a colour-histogram embedder for serving tests and demos without a model.

Nothing outside `vladva.toyworld`, `vladva.testing`, `vladva.demo` and the CLI imports this package.
"""
