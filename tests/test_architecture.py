"""The package layering of docs/architecture.md: no import cycle between vladva modules, nothing
below the CLI imports it, and the user-facing library does not import training, evaluation or the
synthetic world. Imports inside `if TYPE_CHECKING:` blocks (annotations only) do not count."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "vladva").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Every `vladva...` name imported anywhere in the module, except under `if TYPE_CHECKING:`."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vladva"):
            names.extend([node.module] + [f"{node.module}.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names if a.name.startswith("vladva"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for imported in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = resolve(imported)
            if target and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def test_no_import_cycles():
    edges = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])


def test_layers_only_import_downwards():
    edges = _graph()
    forbidden = {
        # nothing below the command line imports it
        "": ("vladva.cli",),
        # the library users import stays free of training, evaluation, serving and the synthetic world
        "vladva.model": ("vladva.train", "vladva.eval", "vladva.serve", "vladva.toyworld", "vladva.demo"),
        "vladva.data": ("vladva.model", "vladva.train", "vladva.eval", "vladva.toyworld", "vladva.demo"),
        "vladva.train": ("vladva.serve", "vladva.toyworld", "vladva.demo", "vladva.export"),
        "vladva.eval": ("vladva.train", "vladva.serve", "vladva.toyworld", "vladva.demo"),
        "vladva.serve": ("vladva.train", "vladva.toyworld", "vladva.demo", "vladva.export"),
    }
    wrong = []
    for src, targets in edges.items():
        if src.startswith(("vladva.cli", "vladva.__main__")):
            continue
        for layer, banned in forbidden.items():
            if src.startswith(layer):
                wrong += [f"{src} -> {t}" for t in targets if t.startswith(banned)]
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(sorted(wrong))
