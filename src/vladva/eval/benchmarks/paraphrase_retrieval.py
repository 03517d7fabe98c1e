"""Retrieval on the paraphrase split (`DATA/paraphrase/retrieval/`, written by `vladva data
shapes`): the retrieval benchmark's reader and scorer on identifying captions worded in synonyms
and sentence forms that no training caption uses (docs/data.md, "The paraphrase split")."""

from __future__ import annotations

from vladva.eval.benchmarks import Column, PathOption, metric, register_benchmark
from vladva.eval.benchmarks.retrieval import Retrieval


class ParaphraseRetrieval(Retrieval):
    name = "paraphrase_retrieval"
    folder = "paraphrase/retrieval"
    order = 62
    clip_benchmark_names = ()  # not a CLIP_benchmark data set
    chart_panel = "Paraphrase retrieval recall"
    path = PathOption(
        "paraphrase_retrieval", "--paraphrase-retrieval", "Karpathy JSON of the paraphrase split's retrieval."
    )
    extra_paths = ()  # images sit beside the JSON
    legend = "para = the paraphrase split (words no training caption uses)"
    detail_title = "Paraphrase retrieval (recall %, ties against the model)"

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [
            ("para T→I R@1", metric(self.name, "t2i_R@1")),
            ("para I→T R@1", metric(self.name, "i2t_R@1")),
        ]


register_benchmark(ParaphraseRetrieval())
