"""The binding diagnostic: where a model loses which colour goes with which shape.

Data: `DATA/binding/` from `vladva data shapes` (`vladva.toyworld.binding`): two-object scenes,
each beside the same scene with the two objects' colours swapped, and captions of both in the
training captions' own forms. Two measurements, for each tower:

- **Swap sensitivity**: the mean cosine distance between an item and its swap, as a percentage
  of the mean distance between an item and a random other item (the data names one per item).
  0 means the swap is invisible (a bag of words scores 0 on captions); a model that binds moves.
- **Colour-of-shape probes**: for each shape, a linear probe (`vladva.eval.probes`) reads "the
  colour of the <shape>" from every image and caption (originals and swaps) of an item holding
  that shape; fitted on the first 60 % of the items, scored on the rest. Every item comes with
  both bindings of the same words, so a bag of words gets at most 50 %: the bag-of-words probe
  of the captions is reported as that control, beside chance (100 / number of colours).

Both are measured at the final embedding of any model and, for a model that exposes its stages
(`hidden_stages`, `vladva.embedder.StagedEmbedder`: VladVA's vision tower, projector and language
model layers; the CLIP-style baseline's encoder layers), at every stage, so the table and the
chart `binding_stages.png` show where along a tower the binding goes missing. Stage features are
recomputed on every run (the embedding cache holds final embeddings only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vladva.eval.benchmarks import Benchmark, Column, DetailTable, PathOption, dig, metric, register_benchmark
from vladva.eval.loaders import BenchmarkFormatError, ImageRef, existing_image, required_text
from vladva.eval.scoring import subsample

ITEMS_FILE = "items.jsonl"
PROBE_TRAIN_FRACTION = 0.6  # the first 60 % of the (sub)sampled items train the probes
FINAL = "embedding"  # the stage name of the model's own embedding
TOWERS = ("image", "text")
FIGURE = "binding_stages.png"
SIDE = ".mean"  # suffix of a stage's side reading (see vladva.embedder.StagedEmbedder)


@dataclass
class BindingItem:
    """An image and its colour swap, shape -> colour in each, `(form, caption, swap caption)`
    triples, and the id of the random other item that normalises swap distances."""

    id: int
    image: ImageRef
    swap_image: ImageRef
    colours: dict[str, str]
    swap_colours: dict[str, str]
    captions: list[tuple[str, str, str]]
    other: int


def load_binding(folder: Path) -> list[BindingItem]:
    """`folder/items.jsonl`, one item per line: `id`, `image` and `swap_image` (relative to
    `folder`), `colours` and `swap_colours` (the same two shapes, colours exchanged), `captions`
    (objects with `caption`, `swap_caption` and optionally `form`) and `other` (another item's id)."""
    folder = Path(folder)
    path = folder / ITEMS_FILE
    if not path.is_file():
        raise BenchmarkFormatError(f"{folder}: no {ITEMS_FILE} (write one with `vladva data shapes`)")
    items: list[BindingItem] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(e, dict):
            raise BenchmarkFormatError(f"{where}: each line must be a JSON object")
        if not isinstance(e.get("id"), int) or not isinstance(e.get("other"), int):
            raise BenchmarkFormatError(f"{where}: 'id' and 'other' must be integers")
        colours, swapped = e.get("colours"), e.get("swap_colours")
        if not (isinstance(colours, dict) and isinstance(swapped, dict) and len(colours) == 2):
            raise BenchmarkFormatError(f"{where}: 'colours' and 'swap_colours' must map two shapes to colours")
        a, b = colours
        if swapped != {a: colours[b], b: colours[a]} or colours[a] == colours[b]:
            raise BenchmarkFormatError(f"{where}: 'swap_colours' must be 'colours' with its two colours exchanged")
        caps = e.get("captions")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, dict) for c in caps):
            raise BenchmarkFormatError(f"{where}: 'captions' must be a non-empty list of objects")
        captions = [
            (
                str(c.get("form", "")),
                required_text(c, "caption", f"{where} captions[{k}]"),
                required_text(c, "swap_caption", f"{where} captions[{k}]"),
            )
            for k, c in enumerate(caps)
        ]
        image = ImageRef(existing_image(folder / required_text(e, "image", where), where))
        swap_image = ImageRef(existing_image(folder / required_text(e, "swap_image", where), where))
        items.append(BindingItem(e["id"], image, swap_image, colours, swapped, captions, e["other"]))
    ids = [it.id for it in items]
    if len(items) < 2 or len(set(ids)) != len(ids):
        raise BenchmarkFormatError(f"{path}: needs at least two items with distinct ids")
    known = set(ids)
    for it in items:
        if it.other not in known or it.other == it.id:
            raise BenchmarkFormatError(f"{path}: item {it.id}: 'other' must be the id of another item")
    return items


# ----------------------------------------------------------------------------- layout of one tower


@dataclass
class TowerSet:
    """What one tower encodes for the diagnostic and how its rows are used. `inputs`: distinct
    images or captions. Probe examples (parallel lists): `rows` into `inputs`, `groups` (the
    shape asked about), `labels` (colour index), `train`. `triples`: `(item, swap, other)` rows
    for swap sensitivity, with the caption `forms` of each."""

    inputs: list = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    train: list[bool] = field(default_factory=list)
    triples: list[tuple[int, int, int]] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    _index: dict = field(default_factory=dict, repr=False)

    def row(self, x) -> int:
        if x not in self._index:
            self._index[x] = len(self.inputs)
            self.inputs.append(x)
        return self._index[x]


def tower_set(
    items: list[BindingItem],
    chosen: list[int],
    train: set[int],
    classes: dict[str, int],
    views: Callable[[BindingItem], list[tuple[object, object, str]]],
) -> TowerSet:
    """The `TowerSet` of the `chosen` item positions; `views(item)` gives `(input, swapped input,
    form)` per view (one image, or each caption). View k of an item is paired with view k (modulo
    their number) of its `other` item."""
    position = {it.id: n for n, it in enumerate(items)}
    out = TowerSet()
    for i in chosen:
        item = items[i]
        theirs = views(items[position[item.other]])
        for k, (x, swapped, form) in enumerate(views(item)):
            rx, rs = out.row(x), out.row(swapped)
            out.triples.append((rx, rs, out.row(theirs[k % len(theirs)][0])))
            out.forms.append(form)
            for r, colours in ((rx, item.colours), (rs, item.swap_colours)):
                for shape, colour in colours.items():
                    out.rows.append(r)
                    out.groups.append(shape)
                    out.labels.append(classes[colour])
                    out.train.append(i in train)
    return out


def image_views(item: BindingItem) -> list[tuple[object, object, str]]:
    return [(item.image, item.swap_image, "image")]


def caption_views(item: BindingItem) -> list[tuple[object, object, str]]:
    return [(caption, swapped, form) for form, caption, swapped in item.captions]


def bag_of_words(texts: list[str]):
    """`(n, vocabulary)` word counts of `texts` (lower-cased words): the captions' order-free control."""
    import torch

    tokens = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
    vocab = {w: k for k, w in enumerate(sorted({w for ts in tokens for w in ts}))}
    out = torch.zeros(len(texts), max(1, len(vocab)))
    for n, ts in enumerate(tokens):
        for w in ts:
            out[n, vocab[w]] += 1
    return out


# ----------------------------------------------------------------------------- the benchmark


class Binding(Benchmark):
    name = "binding"
    order = 70
    path = PathOption(
        "binding", "--binding", "Binding diagnostic folder (items.jsonl + images/, from `vladva data shapes`)."
    )
    legend = (
        "bind = binding diagnostic (swap: how far swapping the two objects' colours moves the embedding, "
        "% of the distance between random items, a bag of words 0; probe: held-out accuracy of the colour "
        "of a named shape, chance 12.5, a bag of words 50)"
    )

    def load(self, path, cfg) -> list[BindingItem]:
        return load_binding(path)

    def score(self, enc, data: list[BindingItem], cfg) -> tuple[dict, dict]:
        from vladva.eval.probes import grouped_probe_accuracy, swap_sensitivity

        items = data
        chosen = subsample(len(items), cfg.limit, cfg.seed)
        n_train = round(PROBE_TRAIN_FRACTION * len(chosen))
        train = set(chosen[:n_train])
        classes = {c: k for k, c in enumerate(sorted({c for it in items for c in it.colours.values()}))}
        sets = {
            "image": tower_set(items, chosen, train, classes, image_views),
            "text": tower_set(items, chosen, train, classes, caption_views),
        }

        def measure(features, ts: TowerSet) -> dict:
            probe = grouped_probe_accuracy(features, ts.rows, ts.groups, ts.labels, ts.train)
            return {"probe": round(probe, 2), "swap": round(swap_sensitivity(features, ts.triples), 2)}

        stages, final = {}, {}
        for tower, ts in sets.items():
            tables = self._stage_tables(enc, tower, ts.inputs, cfg.batch_size)
            stages[tower] = [{"stage": name} | measure(f, ts) for name, f in tables.items()]
            final[tower] = tables[FINAL]
        text = sets["text"]
        by_form = {}
        for form in sorted(set(text.forms)):
            triples = [t for t, f in zip(text.triples, text.forms) if f == form]
            by_form[form] = round(swap_sensitivity(final["text"], triples), 2)
        metrics = {
            "swap": {"image": stages["image"][-1]["swap"], "text": stages["text"][-1]["swap"], "text_by_form": by_form},
            "probe": {
                "image": stages["image"][-1]["probe"],
                "text": stages["text"][-1]["probe"],
                "chance": round(100.0 / len(classes), 2),
            },
            "bag_of_words": measure(bag_of_words(text.inputs), text),
            "stages": stages,
        }
        counts = {
            "items": len(chosen),
            "captions": len(text.triples),
            "probe_train_items": n_train,
            "probe_held_out_items": len(chosen) - n_train,
        }
        return metrics, counts

    @staticmethod
    def _stage_tables(enc, tower: str, inputs: list, batch_size: int) -> dict:
        """Stage name -> `(len(inputs), dim)` features: the model's `hidden_stages` if it has them,
        ending in its embedding `FINAL` (from the same pass when `hidden_stages` gives it, else
        through the embedding cache)."""
        tables = {}
        stages = getattr(enc.embedder, "hidden_stages", None)
        if callable(stages):
            if tower == "image":
                tables = stages(images=[ref.load() for ref in inputs], batch_size=batch_size)
            else:
                tables = stages(texts=inputs, batch_size=batch_size)
        final = tables.pop(FINAL, None)
        if final is None:
            final = enc.images(inputs, "binding images") if tower == "image" else enc.texts(inputs, "binding captions")
        return tables | {FINAL: final}

    # ---- report

    def summary_columns(self, models: list[dict]) -> list[Column]:
        return [
            ("bind swap img", metric(self.name, "swap", "image")),
            ("bind swap txt", metric(self.name, "swap", "text")),
            ("bind probe img", metric(self.name, "probe", "image")),
            ("bind probe txt", metric(self.name, "probe", "text")),
        ]

    def detail_tables(self, models: list[dict]) -> list[DetailTable]:
        res = self.results(models)
        if not res:
            return []
        rows = []
        for name, r in res:
            for tower in TOWERS:
                rows += [[name, tower, s["stage"], s["probe"], s["swap"]] for s in dig(r, "stages", tower) or []]
            bow = r.get("bag_of_words") or {}
            rows.append([name, "text", "bag of words (control)", bow.get("probe"), bow.get("swap")])
        chance = dig(res[0][1], "probe", "chance")
        tables = [
            DetailTable(
                "Binding diagnostic per stage (probe: held-out accuracy % of the colour of a named shape, "
                f"chance {chance}; swap: distance a colour swap moves an item, % of the distance between "
                f"random items; `{SIDE}`: mean over positions where the model pools another position)",
                ["model", "tower", "stage", "probe", "swap"],
                rows,
            )
        ]
        forms = sorted({f for _, r in res for f in dig(r, "swap", "text_by_form") or {}})
        if forms:
            tables.append(
                DetailTable(
                    "Binding: caption swap sensitivity by caption form (% of the distance between random captions)",
                    ["model"] + forms,
                    [[name] + [dig(r, "swap", "text_by_form", f) for f in forms] for name, r in res],
                )
            )
        return tables

    def figures(self, models: list[dict], out_dir: Path) -> list[tuple[str, str]]:
        """`binding_stages.png`: probe accuracy along each tower (x: 0 = first stage, 1 = the
        embedding), one line per model, dashed for the mean-over-positions side readings."""
        res = [(name, r) for name, r in self.results(models) if r.get("stages")]
        if not res:
            return []
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and in tests
        import matplotlib.pyplot as plt

        palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, dpi=100)
        for ax, tower in zip(axes, TOWERS):
            for m, (name, r) in enumerate(res):
                stages = dig(r, "stages", tower) or []
                main = [s for s in stages if not s["stage"].endswith(SIDE)]
                if not main:
                    continue
                depth = {s["stage"]: (k / (len(main) - 1) if len(main) > 1 else 1.0) for k, s in enumerate(main)}
                colour = palette[m % len(palette)]
                ax.plot(list(depth.values()), [s["probe"] for s in main], marker="o", color=colour, label=name)
                side = [s for s in stages if s["stage"].endswith(SIDE) and s["stage"][: -len(SIDE)] in depth]
                if side:
                    x = [depth[s["stage"][: -len(SIDE)]] for s in side]
                    ax.plot(
                        x, [s["probe"] for s in side], linestyle="--", marker=".", color=colour, label=f"{name} (mean)"
                    )
                for s in main:
                    ax.annotate(
                        s["stage"],
                        (depth[s["stage"]], s["probe"]),
                        fontsize=6,
                        color=colour,
                        rotation=30,
                        xytext=(2, 3),
                        textcoords="offset points",
                    )
            ax.axhline(dig(res[0][1], "probe", "chance") or 0, color="grey", linestyle=":", label="chance")
            if tower == "text" and dig(res[0][1], "bag_of_words", "probe") is not None:
                ax.axhline(res[0][1]["bag_of_words"]["probe"], color="black", linestyle=":", label="bag of words")
            ax.set_title(f"{tower} tower")
            ax.set_xlabel("stage (0 = first, 1 = embedding)")
            ax.set_ylim(0, 105)
        axes[0].set_ylabel("colour of a named shape: held-out probe accuracy (%)")
        axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle("Where binding is lost: linear probes along each tower")
        fig.tight_layout()
        out_dir = Path(out_dir)
        fig.savefig(out_dir / FIGURE)
        plt.close(fig)
        return [("binding probe accuracy by stage", FIGURE)]


register_benchmark(Binding())
