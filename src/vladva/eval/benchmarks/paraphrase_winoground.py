"""Winoground on the paraphrase split (`DATA/paraphrase/winoground/`): the Winoground reader and
scorer on caption pairs worded in words no training caption uses (the two captions of a pair
still share every word)."""

from __future__ import annotations

from vladva.eval.benchmarks import PathOption, register_benchmark
from vladva.eval.benchmarks.winoground import Winoground


class ParaphraseWinoground(Winoground):
    name = "paraphrase_winoground"
    folder = "paraphrase/winoground"
    order = 66
    clip_benchmark_names = ()  # not a CLIP_benchmark data set
    chart_panel = "Paraphrase Winoground (chance 25 / 25 / 16.7)"
    path = PathOption(
        "paraphrase_winoground", "--paraphrase-winoground", "The paraphrase split's Winoground folder (examples.jsonl)."
    )
    legend = ""  # "para" is explained once, by paraphrase_retrieval
    label = "para Wino"


register_benchmark(ParaphraseWinoground())
