"""SugarCrepe on the paraphrase split (`DATA/paraphrase/sugarcrepe/`): the SugarCrepe reader and
scorer on replace and swap negatives worded in words no training caption uses."""

from __future__ import annotations

from vladva.eval.benchmarks import PathOption, register_benchmark
from vladva.eval.benchmarks.sugarcrepe import SugarCrepe
from vladva.eval.benchmarks.sugarcrepe_pp import CATEGORIES  # the replace and swap categories


class ParaphraseSugarCrepe(SugarCrepe):
    name = "paraphrase_sugarcrepe"
    folder = "paraphrase/sugarcrepe"
    order = 64
    clip_benchmark_names = ()  # not a CLIP_benchmark data set
    path = PathOption(
        "paraphrase_sugarcrepe", "--paraphrase-sugarcrepe", "Folder of the paraphrase split's SugarCrepe files."
    )
    extra_paths = ()  # images in its images/ folder
    legend = ""  # "para" is explained once, by paraphrase_retrieval
    label = "para"
    categories = CATEGORIES


register_benchmark(ParaphraseSugarCrepe())
