"""The embedded default base models, built on the synthetic world: a small LLaVA-architecture LVLM
(the model VladVA fine-tunes) and a CLIP-style dual encoder (the baseline).

`vladva base pretrain` runs `recipe.run_pretrain`; the shipped results live in `vladva.pretrained`
(docs/pretraining.md).
"""
